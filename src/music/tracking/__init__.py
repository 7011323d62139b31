"""Loggers from config, W&B kept inside the run folder and always closed, and the run's metrics.json."""

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.utils import instantiate
from omegaconf import DictConfig

from music.atomic import atomic_path
from music.errors import ConfigError, first_line

if TYPE_CHECKING:  # a run with logger=none never imports Lightning
    from lightning.pytorch.loggers import Logger


def summary_lines(metrics: dict, output_dir: Path) -> list[str]:
    """The end-of-run summary: the run, its headline figures (test/acc; forgetting; λ; alignment; θ0), where the files are."""
    tasks = metrics.get("tasks") or []
    lines = [
        f"{metrics['experiment']} · {metrics['dataset']} · {len(tasks)} task{'s' * (len(tasks) != 1)} · seed {metrics['seed']}"
    ]
    figures = [f"test/acc {metrics['test/acc']:.4f}"]
    if metrics.get("val/acc") is not None:  # null with data.val_fraction=0: nothing held out
        figures.append(f"val/acc {metrics['val/acc']:.4f}")
    if metrics.get("theta0/test/acc") is not None and metrics.get("strategy") != "pretrain":
        figures.append(f"θ0 test/acc {metrics['theta0/test/acc']:.4f}")
    lines.append("  " + " · ".join(figures))
    extra = []
    if metrics.get("forgetting") is not None:
        extra.append(f"forgetting {metrics['forgetting']:.4f} · bwt {metrics['bwt']:.4f}")
    if "lambda" in metrics:
        collapsed = " (= θ0: the merge collapsed to θ0)" if metrics.get("merge/collapsed_to_theta0") else ""
        extra.append(f"λ {metrics['lambda']:g} picked on validation{collapsed}")
    if metrics.get("test/acc_before_align") is not None:
        extra.append(
            f"alignment {metrics['align/method']}: test/acc {metrics['test/acc_before_align']:.4f} → {metrics['test/acc']:.4f}"
        )
    if metrics.get("theta0/target_val_acc") is not None:
        extra.append(f"θ0 val/acc {metrics['theta0/val/acc']:.4f} for a target of {metrics['theta0/target_val_acc']:g}")
    lines += [f"  {line}" for line in extra]
    lines.append(f"  → {output_dir / 'metrics.json'}")
    wandb_runs = sorted((output_dir / "wandb").glob("offline-run-*"))
    if wandb_runs:
        lines.append(f"  W&B offline run: upload it with `wandb sync {wandb_runs[-1]}`")
    return lines


def keep_wandb_in(run_dir: Path) -> None:
    """Every file W&B writes (runs, artifacts cache, staging, settings) goes under this folder."""
    root = Path(run_dir) / "wandb"
    os.environ["WANDB_DIR"] = str(run_dir)
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
        os.environ[var] = str(root / sub)


def instantiate_loggers(cfg: DictConfig | None) -> list["Logger"]:
    if not cfg:
        return []
    nodes = [node for node in cfg.values() if node and "_target_" in node]
    for node in nodes:
        if node._target_.endswith("WandbLogger") and node.get("settings"):
            import wandb

            # W&B's settings from the start of its session: Lightning's logger passes an argument W&B warns about
            # (`anonymous`) before wandb.init would read them
            wandb.setup(settings=instantiate(node.settings))
    return [instantiate(node) for node in nodes]


def start_loggers(loggers: list["Logger"], hyperparams: dict) -> None:
    """Log the run's config, which starts each logger's run; W&B refusing to start one (online without an API key,
    or without a network) is one line naming the setting and what to do."""
    for logger in loggers:
        try:
            logger.log_hyperparams(hyperparams)
        except Exception as error:
            wandb = sys.modules.get("wandb")
            if wandb is None or not isinstance(error, wandb.errors.Error):
                raise
            said = first_line(str(error), type(error).__name__)
            # the mode W&B was given
            mode = getattr(logger, "_wandb_init", {}).get("mode") or os.environ.get("WANDB_MODE", "online")
            raise ConfigError(
                "logger.wandb.mode",
                mode,
                f"offline, or online once W&B can start a run (it said: {said}): run "
                "`wandb login` (or set WANDB_API_KEY) where W&B's server is reachable, or log offline with "
                "WANDB_MODE=offline and upload later with `wandb sync`",
            ) from None


def close_loggers(loggers: list["Logger"], failed: bool) -> None:
    """Finish every logger, W&B included even when the job failed, so multirun jobs don't bleed into each other."""
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_metrics(path: Path, metrics: dict) -> None:
    """metrics.json (NaN written as null), whole or absent."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")


def scalars(metrics: dict) -> dict[str, float]:
    """The numeric entries of metrics (what loggers can chart)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
