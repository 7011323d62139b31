"""Config validation in one place, before any work: each problem is one line naming the setting and what is allowed."""

import math

from omegaconf import DictConfig, ListConfig

from music.data.sources import DATASETS, NUM_CLASSES
from music.errors import ConfigError

CLASS_IDS = f"class ids are integers in 0..{NUM_CLASSES - 1}"


def _plain(value):
    return list(map(_plain, value)) if isinstance(value, (list, ListConfig)) else value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_classes(setting: str, classes) -> None:
    if not isinstance(classes, (list, ListConfig)) or not classes:
        raise ConfigError(setting, _plain(classes), f"a non-empty list of classes ({CLASS_IDS})")
    for c in classes:
        if not _is_int(c) or not 0 <= c < NUM_CLASSES:
            raise ConfigError(setting, _plain(classes), CLASS_IDS)
    if len(set(classes)) != len(classes):
        raise ConfigError(setting, _plain(classes), "each class at most once")


def _check_fraction(setting: str, value, *, closed_right: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value <= 1 if closed_right else 0 < value < 1)
    if not ok:
        raise ConfigError(setting, value, "a number in (0, 1]" if closed_right else "a number in (0, 1)")


def _check_positive_int(setting: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(setting, value, "an integer ≥ 1")


def validate(cfg: DictConfig, strategies) -> None:
    """Raise ConfigError on the first invalid setting."""
    if cfg.strategy not in strategies:
        raise ConfigError("strategy", cfg.strategy, f"one of {', '.join(strategies)}")
    if cfg.data.name not in DATASETS:
        raise ConfigError("data.name", cfg.data.name, f"one of {', '.join(DATASETS)}")
    tasks = cfg.tasks
    if not isinstance(tasks, (list, ListConfig)) or not tasks:
        raise ConfigError("tasks", _plain(tasks), "a non-empty list of tasks, each a list of classes, e.g. [[0],[1]] or [[0,1],[2,3]]")
    seen = []
    for i, task in enumerate(tasks):
        _check_classes(f"tasks[{i}]", task)
        if sorted(task) in seen:
            raise ConfigError(f"tasks[{i}]", _plain(task), "each task once (it repeats an earlier task)")
        seen.append(sorted(task))
    _check_classes("data.pretrain.classes", cfg.data.pretrain.classes)
    fraction, num_samples = cfg.data.pretrain.fraction, cfg.data.pretrain.num_samples
    if (fraction is None) == (num_samples is None):
        raise ConfigError("data.pretrain.num_samples", num_samples, "exactly one of data.pretrain.fraction and data.pretrain.num_samples may be set (the other null)")
    if num_samples is None:
        _check_fraction("data.pretrain.fraction", fraction, closed_right=True)
    else:
        _check_positive_int("data.pretrain.num_samples", num_samples)
    _check_fraction("data.val_fraction", cfg.data.val_fraction, closed_right=False)
    _check_positive_int("data.batch_size", cfg.data.batch_size)
    _check_positive_int("data.eval_batch_size", cfg.data.eval_batch_size)
    for stage in ("pretrain", "finetune"):
        _check_positive_int(f"{stage}.epochs", cfg[stage].epochs)
    lambdas = cfg.merge.lambdas
    if not isinstance(lambdas, (list, ListConfig)) or not lambdas:
        raise ConfigError("merge.lambdas", _plain(lambdas), "a non-empty list of finite numbers")
    for lam in lambdas:
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam):
            raise ConfigError("merge.lambdas", _plain(lambdas), "a non-empty list of finite numbers")
