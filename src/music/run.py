"""One job: validate the config, load the data, run the strategy, write metrics.json, close the loggers."""

import logging
import os
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from music.atomic import unwritable
from music.cache import ArtifactCache, cache_key
from music.config import validate, validate_with_data
from music.data import TaskData
from music.data.resolve import DataPlan, resolve
from music.errors import ConfigError, MusicError, traceback_wanted, unset_line
from music.experiment import Run
from music.launching import claim_device
from music.settings import check_declared
from music.strategies import STRATEGIES
from music.tracking import (
    close_loggers,
    instantiate_loggers,
    keep_wandb_in,
    scalars,
    start_loggers,
    summary_lines,
    write_metrics,
)

log = logging.getLogger(__name__)


def own_overrides() -> list[str]:
    """The run's overrides ("key=value") beyond those that only place or repeat it (hydra.job.config.override_dirname's
    exclude_keys: seed, experiment, data folder, logger, …). The report tells runs of one experiment apart by those
    that differ between them (k, a λ grid, …)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hydra = HydraConfig.get()
    excluded = set(hydra.job.config.override_dirname.exclude_keys)
    return [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") not in excluded]


def load_data(cfg: DictConfig, plan: DataPlan | None = None) -> TaskData:
    """The data group's TaskData for the resolved plan (None: resolved here), split for the root `tasks` and `seed`
    (their one source); its pixels' disk cache beside the artifacts' (cache.dir)."""
    plan = plan or resolve(cfg)
    cache_dir = cfg.cache.dir if cfg.cache.enabled else None
    factory = instantiate(cfg.data, _partial_=True, _convert_="all")  # the plan is a value, not config to merge
    data = factory(tasks=plan.tasks, seed=cfg.seed, plan=plan, cache_dir=cache_dir)
    data.setup()
    return data


def check_writable(cfg: DictConfig) -> None:
    """The run folder and the cache can be created and written: found out before any work, not after θ0 trained."""
    folders = {"hydra.run.dir": cfg.paths.output_dir} | ({"cache.dir": cfg.cache.dir} if cfg.cache.enabled else {})
    for setting, folder in folders.items():
        why = unwritable(folder)
        if why:
            raise ConfigError(setting, str(folder), f"a folder this process can create and write ({why})")


def theta0_figures(run: Run) -> dict:
    """θ0's accuracy in this run (same split and seed): every report can show where the methods started from."""
    cfg, material = run.ctx.cfg, run.artifacts.theta0_material
    theta0 = run.evaluation.metrics(run.evaluation.theta0_predictions)
    source = "checkpoint" if cfg.pretrain.get("checkpoint") else "trained" if cfg.pretrain.train else "random"
    return {f"theta0/{split}/acc": theta0[f"{split}/acc"] for split in ("val", "test")} | {
        "theta0/test/acc_task_mean": theta0["test/acc_task_mean"],  # a pretrained backbone's zero-shot figure
        "theta0/target_val_acc": cfg.pretrain.get("target_val_acc"),
        "theta0/source": source,
        "theta0/key": cache_key(material),  # which θ0 exactly (seed included)
        # θ0's setting: the same for every seed, so the report gives each setting one row over its seeds
        "theta0/setting": cache_key({k: v for k, v in material.items() if k != "seed"}),
    }


def run(cfg: DictConfig) -> dict:
    """Run the job `cfg` describes and return its metrics (also written to <output_dir>/metrics.json)."""
    # the data group's settings first: the resolver reads them (an image folder's tree is listed there, after a bad
    # test fraction or image size is refused by its own line)
    check_declared("data", cfg.data)
    plan = resolve(cfg)  # the dataset as a typed value; tasks that name datasets: their composite
    validate(cfg, STRATEGIES, plan)
    output_dir = Path(cfg.paths.output_dir)
    check_writable(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg, plan)
    validate_with_data(cfg, data.split)
    keep_wandb_in(output_dir)
    loggers = instantiate_loggers(cfg.get("logger"))
    failed = True
    try:
        start_loggers(loggers, OmegaConf.to_container(cfg, resolve=True))
        parts = Run.open(cfg, data, ArtifactCache(cfg.cache.dir, cfg.cache.enabled), loggers)
        metrics = {
            "experiment": cfg.experiment_name,
            "strategy": cfg.strategy,
            "overrides": own_overrides(),
            "seed": cfg.seed,
            "dataset": data.name,
            "dataset_title": data.spec.name,
            "tasks": parts.ctx.tasks,
            **({"tasks_given": OmegaConf.to_container(cfg.tasks_given)} if "tasks_given" in cfg else {}),
            "head": parts.ctx.head,
            "optimizer_state": cfg.finetune.optimizer_state,
        }
        if cfg.get("reference"):  # the paper's figures travel with the run: the report prints them beside ours
            metrics["reference"] = OmegaConf.to_container(cfg.reference, resolve=True)
        metrics |= STRATEGIES[cfg.strategy](parts)
        metrics |= theta0_figures(parts)
        write_metrics(output_dir / "metrics.json", metrics)
        write_metrics(output_dir / "timings.json", {f"{k}_s": v for k, v in parts.ctx.timings.items()})
        for logger in loggers:
            logger.log_metrics(
                {f"final/{k}": v for k, v in scalars(metrics).items()}
                | {f"time/{k}_s": v for k, v in parts.ctx.timings.items()}
            )
        failed = False
    finally:
        close_loggers(loggers, failed)
    for line in summary_lines(metrics, output_dir):  # last, after the loggers' own closing words
        log.info(line)
    return metrics


def claim_pool_device(cfg: DictConfig) -> None:
    """Under `hydra/launcher=gpu_pool`, take this worker's GPU (or CPU share) before anything touches CUDA."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    if HydraConfig.get().runtime.choices.get("hydra/launcher") == "gpu_pool":
        device = claim_device(Path(cfg.paths.log_dir) / "gpu_locks")
        log.info(
            "gpu_pool worker %d runs on %s", os.getpid(), device or "the devices it was given (n_jobs set by hand)"
        )


def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns `optimized_metric` for sweepers; user errors become one line and exit status 2."""
    claim_pool_device(cfg)
    try:
        metrics = run(cfg)
    # a `???` left unset surfaces in the job too: caught here, or Hydra prints a line of its own before the error's
    except (MusicError, MissingMandatoryValue, InterpolationToMissingValueError) as e:
        if traceback_wanted():
            raise
        print(f"error: {e if isinstance(e, MusicError) else unset_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    return metrics.get(cfg.optimized_metric)
