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

if TYPE_CHECKING:  # a run with logger=none never imports Lightning
    from lightning.pytorch.loggers import Logger


def keep_wandb_in(run_dir: Path) -> None:
    """Every file W&B writes (runs, artifacts cache, staging, settings) goes under this folder."""
    root = Path(run_dir) / "wandb"
    os.environ["WANDB_DIR"] = str(run_dir)
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
        os.environ[var] = str(root / sub)


def instantiate_loggers(cfg: DictConfig | None) -> list["Logger"]:
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node and "_target_" in node]


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
