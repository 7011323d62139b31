"""Config validation in one place, before any work: each problem is one line naming the setting and what is allowed."""

import math
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from music.data.sources import dataset_spec
from music.data.split import Split
from music.errors import ConfigError, DataError
from music.evaluation import HEADS
from music.instantiation import build_network, instantiate_checked
from music.models.checkpoint import load_weights
from music.settings import check, check_declared, check_grid, is_int, shown

ALIGN_METHODS = ("none", "ft_classifier", "procrustes")
ALIGN_SAMPLING = ("balanced", "random")
BATCHNORM = ("recompute", "merge")  # merge.batchnorm
OPTIMIZER_STATES = ("fresh", "carry")  # finetune.optimizer_state

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit


def _check_classes(setting: str, classes, num_classes: int, dataset: str) -> None:
    """A non-empty list of distinct class ids of the dataset (its declaration says how many it has)."""
    ids = f"class ids are integers in 0..{num_classes - 1} ({dataset} has {num_classes} classes)"
    if not isinstance(classes, (list, ListConfig)) or not classes:
        raise ConfigError(setting, shown(classes), f"a non-empty list of classes ({ids})")
    for c in classes:
        if not is_int(c) or not 0 <= c < num_classes:
            raise ConfigError(setting, shown(classes), ids)
    if len(set(classes)) != len(classes):
        raise ConfigError(setting, shown(classes), "each class at most once")


def _check_fraction(setting: str, value, *, closed_right: bool) -> None:
    check(setting, value, "(0, 1]" if closed_right else "(0, 1)")


def _check_positive_int(setting: str, value) -> None:
    if not is_int(value) or value < 1:
        raise ConfigError(setting, value, "an integer ≥ 1")


def _check_merge(cfg: DictConfig) -> None:
    from music.merging.methods import DARE_BASES, METHODS, knob_interval, knob_names

    merge = cfg.merge
    if merge.method not in METHODS:
        raise ConfigError("merge.method", merge.method, f"one of {', '.join(METHODS)}")
    method = METHODS[merge.method]
    if merge.method == "dare" and merge.get("base") not in DARE_BASES:
        raise ConfigError(
            "merge.base",
            merge.get("base"),
            f"one of {', '.join(DARE_BASES)} (what DARE's dropped vectors are merged with)",
        )
    for name in knob_names(merge.method, merge.get("base")):
        check_grid(f"merge.{name}", merge.get(name), knob_interval(merge.method, merge.get("base"), name))
    for name, declaration in method.options.items():
        check(f"merge.{name}", merge.get(name), declaration)
    _check_positive_int("merge.num_samples", merge.num_samples)
    if cfg.finetune.get("linearized", False) and method.statistics is not None:
        raise ConfigError(
            "merge.method",
            merge.method,
            "a method without statistics of the network with finetune.linearized=true "
            "(they describe the network, not its linearization)",
        )
    if method.task_id and cfg.align.method != "none":
        raise ConfigError(
            "align",
            cfg.align.method,
            f"none with merge.method={merge.method}: it keeps one model per task (task id at test), "
            "there is no single merged head to align",
        )


def _check_align(cfg: DictConfig) -> None:
    align = cfg.align
    if align.method not in ALIGN_METHODS:
        raise ConfigError("align.method", align.method, f"one of {', '.join(ALIGN_METHODS)}")
    if align.method == "none":
        return
    if cfg.strategy != "merge":
        raise ConfigError(
            "align",
            align.method,
            "none unless the experiment merges task vectors (average, task_arithmetic, ties, dare, fisher, regmean)",
        )
    if cfg.finetune.get("linearized", False):
        raise ConfigError(
            "align",
            align.method,
            "none with finetune.linearized=true (a linearized model has no separate head to align)",
        )
    _check_positive_int("align.shots_per_class", align.shots_per_class)
    if align.get("sampling") not in ALIGN_SAMPLING:
        raise ConfigError(
            "align.sampling",
            align.get("sampling"),
            f"one of {', '.join(ALIGN_SAMPLING)} (k images of each class, or k·c from the task's pool)",
        )
    if align.method == "ft_classifier":
        if not isinstance(align.lr, (int, float)) or isinstance(align.lr, bool) or not align.lr > 0:
            raise ConfigError("align.lr", align.lr, "a number > 0")
        _check_positive_int("align.epochs", align.epochs)
        _check_positive_int("align.batch_size", align.batch_size)
    if align.method == "procrustes" and align.subspace_dim is not None:
        _check_positive_int("align.subspace_dim", align.subspace_dim)


def validate_with_data(cfg: DictConfig, split: Split) -> None:
    """The checks that need the data's size, run as soon as it is loaded (before any training)."""
    if cfg.align.method != "none":
        if cfg.align.sampling == "balanced":
            most = min(len(split.train_of([c])) for task in cfg.tasks for c in task)
        else:
            most = min(len(split.train_of(task)) // len(task) for task in cfg.tasks)
        if cfg.align.shots_per_class > most:
            raise ConfigError(
                "align.shots_per_class",
                cfg.align.shots_per_class,
                f"at most {most} (a task's training images per class)",
            )


def _check_checkpoint(checkpoint, net: torch.nn.Module) -> None:
    """`pretrain.checkpoint`: null, or a file that loads into the configured network (read once here, before any work)."""
    if checkpoint is None:
        return
    allowed = f"null (train θ0) or a .safetensors or Lightning .ckpt file of the configured {type(net).__name__}"
    if not (isinstance(checkpoint, str) and Path(checkpoint).is_file()):
        raise ConfigError("pretrain.checkpoint", checkpoint, f"{allowed}: no such file")
    try:
        load_weights(checkpoint, net)
    except DataError as e:
        raise ConfigError(
            "pretrain.checkpoint", checkpoint, f"{allowed}: {str(e).removeprefix(f'{checkpoint}: ')}"
        ) from None


def _probe_parameters() -> list[torch.Tensor]:
    return [torch.zeros(1, requires_grad=True)]


def _check_optimization(stage: str, hparams: DictConfig) -> None:
    """Build the stage's optimizer and scheduler as training will, on a probe parameter: torch's own argument checks
    (lr ≥ 0, betas in [0, 1), unknown arguments, …) then stop the run before any work."""
    optimizer = instantiate_checked(
        f"{stage}.optimizer", hparams.optimizer, lambda factory: factory(params=_probe_parameters())
    )
    if hparams.get("scheduler"):
        instantiate_checked(f"{stage}.scheduler", hparams.scheduler, lambda factory: factory(optimizer=optimizer))


def validate(cfg: DictConfig, strategies) -> None:
    """Raise ConfigError on the first invalid setting."""
    if cfg.strategy not in strategies:
        raise ConfigError("strategy", cfg.strategy, f"one of {', '.join(strategies)}")
    if not is_int(cfg.seed) or not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError("seed", shown(cfg.seed), f"an integer in 0..{MAX_SEED}")
    for key in ("tasks", "seed"):
        if key in cfg.data:
            raise ConfigError(
                f"data.{key}",
                shown(cfg.data[key]),
                f"not set in the data group: the root setting `{key}` is the one the split and the strategies use "
                f"(write {key}=...)",
            )
    for key in ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time"):
        if cfg.trainer.get(key) not in (None, -1):
            raise ConfigError(
                f"trainer.{key}",
                shown(cfg.trainer[key]),
                "null; a stage trains for pretrain.epochs (θ0) or finetune.epochs (every fine-tune): "
                "one budget every strategy shares",
            )
    classes = dataset_spec(cfg.data.name).classes  # an unknown name: one line listing the datasets
    tasks = cfg.tasks
    if not isinstance(tasks, (list, ListConfig)) or not tasks:
        raise ConfigError(
            "tasks", shown(tasks), "a non-empty list of tasks, each a list of classes, e.g. [[0],[1]] or [[0,1],[2,3]]"
        )
    seen = []
    for i, task in enumerate(tasks):
        _check_classes(f"tasks[{i}]", task, classes, cfg.data.name)
        if sorted(task) in seen:
            raise ConfigError(f"tasks[{i}]", shown(task), "each task once (it repeats an earlier task)")
        seen.append(sorted(task))
    head = cfg.model.get("head", "shared")
    if head not in HEADS:
        raise ConfigError("model.head", head, f"one of {', '.join(HEADS)}")
    if head == "per_task":
        for i, task in enumerate(tasks):
            if len(task) < 2:
                raise ConfigError(
                    f"tasks[{i}]",
                    shown(task),
                    "with model.head=per_task every task needs ≥ 2 classes (a one-class head is always right); "
                    "use model.head=shared",
                )
        if len({c for task in tasks for c in task}) != sum(len(task) for task in tasks):
            raise ConfigError(
                "tasks",
                shown(tasks),
                "with model.head=per_task tasks must not share classes (each class has one task's head)",
            )
        if cfg.strategy == "negation":
            raise ConfigError(
                "model.head", head, "shared with experiment=negation (forgetting a class is judged over all classes)"
            )
    _check_align(cfg)
    check_declared("model.net", cfg.model.net)
    net = build_network(
        cfg
    )  # built once before any data loads: the architecture's own checks (ViT's patch size, …) first
    if cfg.data.pretrain.classes is not None:  # null: every class of the dataset
        _check_classes("data.pretrain.classes", cfg.data.pretrain.classes, classes, cfg.data.name)
    fraction, num_samples = cfg.data.pretrain.fraction, cfg.data.pretrain.num_samples
    if (fraction is None) == (num_samples is None):
        raise ConfigError(
            "data.pretrain.num_samples",
            num_samples,
            "exactly one of data.pretrain.fraction and data.pretrain.num_samples may be set (the other null)",
        )
    if num_samples is None:
        _check_fraction("data.pretrain.fraction", fraction, closed_right=True)
    elif cfg.pretrain.train or num_samples != 0:  # pretrain=none gives θ0 no images
        _check_positive_int("data.pretrain.num_samples", num_samples)
    if not isinstance(cfg.pretrain.train, bool):
        raise ConfigError(
            "pretrain.train",
            cfg.pretrain.train,
            "true (θ0 trained on the pretrain split) or false (a random initialisation; pretrain=none)",
        )
    _check_fraction("data.val_fraction", cfg.data.val_fraction, closed_right=False)
    _check_positive_int("data.batch_size", cfg.data.batch_size)
    _check_positive_int("data.eval_batch_size", cfg.data.eval_batch_size)
    _check_checkpoint(cfg.pretrain.get("checkpoint"), net)
    for stage in ("pretrain", "finetune"):
        _check_positive_int(f"{stage}.epochs", cfg[stage].epochs)
        _check_optimization(stage, cfg[stage])
    if cfg.finetune.get("optimizer_state") not in OPTIMIZER_STATES:
        raise ConfigError(
            "finetune.optimizer_state",
            cfg.finetune.get("optimizer_state"),
            "fresh (each sequential stage starts a new optimizer) or carry (from the previous stage's optimizer state)",
        )
    continual = cfg.get("continual")
    if continual and "_target_" in continual:  # built as training will build it: its own argument checks first
        check_declared("continual", continual)
        instantiate_checked("continual", continual)
    target = cfg.pretrain.get("target_val_acc")
    if target is not None:
        _check_fraction("pretrain.target_val_acc", target, closed_right=True)
    if cfg.strategy == "merge":
        _check_merge(cfg)
    if cfg.strategy == "negation":
        _check_classes("negation.target", cfg.negation.target, classes, cfg.data.name)
        _check_fraction("negation.control_floor", cfg.negation.control_floor, closed_right=True)
    if cfg.merge.get("batchnorm") not in BATCHNORM:
        raise ConfigError(
            "merge.batchnorm",
            cfg.merge.get("batchnorm"),
            f"one of {', '.join(BATCHNORM)} (what a merge does with BatchNorm's running statistics)",
        )
    lambdas = cfg.merge.lambdas
    if not isinstance(lambdas, (list, ListConfig)) or not lambdas:
        raise ConfigError("merge.lambdas", shown(lambdas), "a non-empty list of finite numbers")
    for lam in lambdas:
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam):
            raise ConfigError("merge.lambdas", shown(lambdas), "a non-empty list of finite numbers")
