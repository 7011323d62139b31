"""One job: validate the config, load the data, run the strategy, write metrics.json, close the loggers."""

import logging
import os
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from music.cache import ArtifactCache
from music.config import validate, validate_with_data
from music.errors import MusicError
from music.experiment import Experiment
from music.launching import claim_device, register_resolvers
from music.strategies import STRATEGIES
from music.tracking import close_loggers, instantiate_loggers, keep_wandb_in, scalars, write_metrics

log = logging.getLogger(__name__)
# One Trainer per stage: Lightning's banners ("GPU available", tips) would drown the run's own log.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
register_resolvers()  # also when run() is called without train.py (tests, notebooks)


def variant() -> str:
    """The run's own overrides beyond experiment, seed and where things are (Hydra's override_dirname): runs of
    one experiment that differ in a knob (k, a λ grid, …) are different rows of a report."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""


def run(cfg: DictConfig) -> dict:
    """Run the job `cfg` describes and return its metrics (also written to <output_dir>/metrics.json)."""
    validate(cfg, STRATEGIES)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = instantiate(cfg.data, _convert_="all")
    data.setup()
    validate_with_data(cfg, data.split)
    keep_wandb_in(output_dir)
    loggers = instantiate_loggers(cfg.get("logger"))
    failed = True
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        exp = Experiment(cfg, data, ArtifactCache(cfg.cache.dir, cfg.cache.enabled), loggers)
        metrics = {"experiment": cfg.experiment_name, "variant": variant(), "seed": cfg.seed, "dataset": cfg.data.name, "tasks": exp.tasks, "head": exp.head}
        metrics |= STRATEGIES[cfg.strategy](exp)
        write_metrics(output_dir / "metrics.json", metrics)
        write_metrics(output_dir / "timings.json", {f"{k}_s": v for k, v in exp.timings.items()})
        for logger in loggers:
            logger.log_metrics({f"final/{k}": v for k, v in scalars(metrics).items()} | {f"time/{k}_s": v for k, v in exp.timings.items()})
        log.info("%s: test/acc %.4f, val/acc %.4f -> %s", cfg.experiment_name, metrics["test/acc"], metrics["val/acc"], output_dir / "metrics.json")
        failed = False
    finally:
        close_loggers(loggers, failed)
    return metrics


def claim_pool_device(cfg: DictConfig) -> None:
    """Under `hydra/launcher=gpu_pool`, take this worker's GPU (or CPU share) before anything touches CUDA."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    if HydraConfig.get().runtime.choices.get("hydra/launcher") == "gpu_pool":
        device = claim_device(Path(cfg.paths.log_dir) / "gpu_locks")
        log.info("gpu_pool worker %d runs on %s", os.getpid(), device or "the devices it was given (n_jobs set by hand)")


def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns `optimized_metric` for sweepers; user errors become one line and exit status 2."""
    claim_pool_device(cfg)
    try:
        metrics = run(cfg)
    except MusicError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return metrics.get(cfg.optimized_metric)
