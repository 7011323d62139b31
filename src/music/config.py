"""Config validation before any work: each problem is one line naming the setting and what is allowed.

Each group's own settings are declared with their types and intervals beside the code that reads them — a dataclass
for a group read as values (AlignSettings, MergeSettings, …), the constructor's signature for one built from
`_target_` (data, networks, continual methods), the method table for a merge method's knobs — and checked here by
`music.settings`; what types cannot say (rules across groups, the dataset's classes) is spelled out below."""

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
from omegaconf import DictConfig, ListConfig

from music.align.step import AlignSettings
from music.data.augment import AugmentSettings
from music.data.refs import known_names
from music.data.resolve import DataPlan, resolve
from music.data.split import Split
from music.errors import ConfigError, DataError
from music.evaluation import HEADS
from music.experiment.artifacts import FinetuneSettings, PretrainSettings
from music.instantiation import build_network, instantiate_checked
from music.merging.methods import DARE_BASES, METHODS, knob_interval, knob_names
from music.merging.negation import NegationSettings
from music.merging.strategy import Finite, MergeSettings
from music.models.checkpoint import load_weights
from music.reference import check_reference
from music.settings import (
    HYDRA_KEYS,
    Positive,
    check,
    check_declared,
    check_grid,
    check_group,
    check_known,
    declared_settings,
    is_int,
    shown,
)

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit
TRAINER_BUDGET = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time")
# the keys of groups read as plain values without a dataclass of their own: who reads them
MODEL_KEYS = ("net", "head", "channels_last")  # net: build_network; head: evaluation; channels_last: Training
PRETRAIN_SPLIT_KEYS = ("classes", "data", "fraction", "num_samples")  # data.pretrain: TaskData's θ0 split
CACHE_KEYS = ("enabled", "dir")  # run.py's ArtifactCache
STAGE_KEYS = ("optimizer", "scheduler")  # pretrain's and finetune's, checked by building them (_check_optimization)


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


def _check_tasks(cfg: DictConfig, classes: int) -> None:
    """`tasks`: a non-empty list of distinct tasks of the dataset's classes; per-task heads need disjoint tasks of ≥ 2."""
    tasks, head = cfg.tasks, cfg.model.get("head", "shared")
    if not isinstance(tasks, (list, ListConfig)) or not tasks:
        example = "e.g. [[0],[1]] or [[0,1],[2,3]]"
        raise ConfigError("tasks", shown(tasks), f"a non-empty list of tasks, each a list of classes, {example}")
    seen = []
    for i, task in enumerate(tasks):
        _check_classes(f"tasks[{i}]", task, classes, cfg.data.name)
        if sorted(task) in seen:
            raise ConfigError(f"tasks[{i}]", shown(task), "each task once (it repeats an earlier task)")
        seen.append(sorted(task))
    if head not in HEADS:
        raise ConfigError("model.head", head, f"one of {', '.join(HEADS)}")
    if head != "per_task":
        return
    for i, task in enumerate(tasks):
        if len(task) < 2:
            why = "with model.head=per_task every task needs ≥ 2 classes (a one-class head is always right)"
            raise ConfigError(f"tasks[{i}]", shown(task), f"{why}; use model.head=shared")
    if len({c for task in tasks for c in task}) != sum(len(task) for task in tasks):
        why = "with model.head=per_task tasks must not share classes (each class has one task's head)"
        raise ConfigError("tasks", shown(tasks), why)
    if cfg.strategy == "negation":
        why = "shared with experiment=negation (forgetting a class is judged over all classes)"
        raise ConfigError("model.head", head, why)


def _merge_keys(merge: DictConfig) -> list[str]:
    """The merge group's keys beyond MergeSettings: the method's name, and its knobs and options (DARE's under either
    base, which its config carries both of)."""
    method = METHODS.get(merge.get("method"))
    if method is None:
        return ["method"]  # the name is refused by _check_merge
    knobs = [knob for base in DARE_BASES for knob in knob_names("dare", base)] if merge.method == "dare" else []
    return ["method", *knob_names(merge.method, merge.get("base")), *knobs, *method.options] + (
        ["base"] if merge.method == "dare" else []
    )


def _check_merge(cfg: DictConfig) -> None:
    merge = cfg.merge
    if merge.method not in METHODS:
        raise ConfigError("merge.method", merge.method, f"one of {', '.join(METHODS)}")
    method = METHODS[merge.method]
    if merge.method == "dare" and merge.get("base") not in DARE_BASES:
        allowed = f"one of {', '.join(DARE_BASES)} (what DARE's dropped vectors are merged with)"
        raise ConfigError("merge.base", merge.get("base"), allowed)
    for name in knob_names(merge.method, merge.get("base")):
        interval = knob_interval(merge.method, merge.get("base"), name)
        check_grid(f"merge.{name}", merge.get(name), Annotated[float, interval])
    for name, declared in method.options.items():
        check(f"merge.{name}", merge.get(name), declared)
    if cfg.finetune.get("linearized", False) and method.statistics is not None:
        why = "(they describe the network, not its linearization)"
        allowed = f"a method without statistics of the network with finetune.linearized=true {why}"
        raise ConfigError("merge.method", merge.method, allowed)
    if method.task_id and cfg.align.method != "none":
        why = "it keeps one model per task (task id at test), there is no single merged head to align"
        raise ConfigError("align", cfg.align.method, f"none with merge.method={merge.method}: {why}")


def _check_align(cfg: DictConfig) -> None:
    check_group("align", cfg.align, AlignSettings)
    if cfg.align.method == "none":
        return
    if cfg.strategy != "merge":
        allowed = (
            "none unless the experiment merges task vectors (average, task_arithmetic, ties, dare, fisher, regmean)"
        )
        raise ConfigError("align", cfg.align.method, allowed)
    if cfg.finetune.get("linearized", False):
        allowed = "none with finetune.linearized=true (a linearized model has no separate head to align)"
        raise ConfigError("align", cfg.align.method, allowed)


def _check_pretrain_split(cfg: DictConfig, classes: int) -> None:
    """θ0's share of the training set: its classes, and exactly one of a fraction or a count of images."""
    split = cfg.data.pretrain
    if split.classes is not None:  # null: every class of the dataset
        _check_classes("data.pretrain.classes", split.classes, classes, cfg.data.name)
    if (split.fraction is None) == (split.num_samples is None):
        allowed = "exactly one of data.pretrain.fraction and data.pretrain.num_samples may be set (the other null)"
        raise ConfigError("data.pretrain.num_samples", split.num_samples, allowed)
    if split.num_samples is None:
        check("data.pretrain.fraction", split.fraction, Annotated[float, "(0, 1]"])
    elif cfg.pretrain.train or split.num_samples != 0:  # pretrain=none gives θ0 no images
        check("data.pretrain.num_samples", split.num_samples, Positive)


def _check_val_fraction(cfg: DictConfig) -> None:
    """`data.val_fraction=0` (nothing held out, as Mammoth) only where nothing is picked on validation."""
    if cfg.data.val_fraction != 0:
        return
    searches = [
        (cfg.strategy in ("merge", "negation"), f"experiment={cfg.get('experiment_name', cfg.strategy)}"),
        (cfg.align.method != "none", f"align={cfg.align.method}"),
        (cfg.pretrain.get("target_val_acc") is not None, "pretrain.target_val_acc"),
    ]
    for searched, named in searches:
        if searched:
            why = "it picks λ or a knob on the held-out validation images, 0 holds none out"
            raise ConfigError("data.val_fraction", 0, f"in (0, 1) with {named}: {why}")


def validate_with_data(cfg: DictConfig, split: Split) -> None:
    """The checks that need the data's size, run as soon as it is loaded (before any training)."""
    if cfg.align.method != "none":
        if cfg.align.sampling == "balanced":
            most = min(len(split.train_of([c])) for task in cfg.tasks for c in task)
        else:
            most = min(len(split.train_of(task)) // len(task) for task in cfg.tasks)
        if cfg.align.shots_per_class > most:
            allowed = f"at most {most} (a task's training images per class)"
            raise ConfigError("align.shots_per_class", cfg.align.shots_per_class, allowed)


def _check_checkpoint(checkpoint, net: torch.nn.Module) -> None:
    """`pretrain.checkpoint`: null, or a file that loads into the configured network (tried here, before any work;
    Artifacts.theta0 reads it again when θ0 is needed)."""
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


LIGHTNING_TRAINERS = ("lightning.pytorch.Trainer", "lightning.Trainer", "lightning.pytorch.trainer.trainer.Trainer")


def trainer_arguments(target: str) -> list[str]:
    """The arguments the trainer group's target takes. Lightning's Trainer: read from its source file, not imported —
    importing Lightning takes seconds, which a run whose models all come from the cache never pays."""
    import ast
    import importlib.util

    if target not in LIGHTNING_TRAINERS or "lightning" in sys.modules:
        return list(declared_settings(target))
    spec = importlib.util.find_spec("lightning")  # a top-level package: located, not imported
    source = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py"
    tree = ast.parse(source.read_text())
    found = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    init = next(n for n in found.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return [a.arg for a in (*init.args.args[1:], *init.args.kwonlyargs)]


def _check_optimization(stage: str, hparams: DictConfig) -> None:
    """Build the stage's optimizer and scheduler as training will, on a probe parameter: torch's own argument checks
    (lr ≥ 0, betas in [0, 1), unknown arguments, …) then stop the run before any work."""
    probe = [torch.zeros(1, requires_grad=True)]
    optimizer = instantiate_checked(f"{stage}.optimizer", hparams.optimizer, lambda factory: factory(params=probe))
    if hparams.get("scheduler"):
        check_declared(f"{stage}.scheduler", hparams.scheduler)  # a schedule's own declared intervals (WarmupCosine)
        instantiate_checked(f"{stage}.scheduler", hparams.scheduler, lambda factory: factory(optimizer=optimizer))


def validate(cfg: DictConfig, strategies, plan: DataPlan | None = None) -> None:
    """Raise ConfigError on the first invalid setting."""
    if cfg.strategy not in strategies:
        raise ConfigError("strategy", cfg.strategy, f"one of {', '.join(strategies)}")
    if not is_int(cfg.seed) or not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError("seed", shown(cfg.seed), f"an integer in 0..{MAX_SEED}")
    check_reference(cfg.get("reference"))  # a preset's published figures (music.reference)
    for key in ("tasks", "seed"):
        if key in cfg.data:
            why = f"the root setting `{key}` is the one the split and the strategies use (write {key}=...)"
            raise ConfigError(f"data.{key}", shown(cfg.data[key]), f"not set in the data group: {why}")
    for key in TRAINER_BUDGET:
        if cfg.trainer.get(key) not in (None, -1):
            instead = f"set pretrain.epochs (θ0) or finetune.epochs (every fine-tune) instead, trainer.{key} stays null"
            why = "one budget every strategy shares"
            raise ConfigError(f"trainer.{key}", shown(cfg.trainer[key]), f"{instead}: {why}")
    trainer = trainer_arguments(str(cfg.trainer.get("_target_")))
    if trainer:  # Lightning's Trainer would refuse an unknown argument only when the first stage starts
        check_known("trainer", cfg.trainer, [*trainer, *HYDRA_KEYS])
    check_known("cache", cfg.cache, CACHE_KEYS)
    check_declared("data", cfg.data)  # first: they spell the dataset's name (an image folder's size, …)
    declared = declared_settings(str(cfg.data.get("_target_")))
    if declared:  # an unimportable target: instantiation names it
        check_known("data", cfg.data, [*declared, *HYDRA_KEYS])
    check_known("data.pretrain", cfg.data.get("pretrain") or {}, PRETRAIN_SPLIT_KEYS)
    plan = plan or resolve(cfg)  # the dataset as a typed value (an unknown name: one line listing the datasets)
    classes = plan.spec.classes
    _check_val_fraction(cfg)
    _check_tasks(cfg, classes)
    _check_align(cfg)
    check_known("model", cfg.model, MODEL_KEYS)
    check("model.channels_last", cfg.model.get("channels_last", False), bool)
    check_declared("model.net", cfg.model.net)
    spec = plan.spec
    if spec.mean is None:  # measured from the images when they are stored: the architecture's checks never read them
        spec = replace(spec, mean=(0.0,) * spec.shape[0], std=(1.0,) * spec.shape[0])
    net = build_network(
        cfg, spec
    )  # built once before any data loads: the architecture's own checks (ViT's patch size, …)
    check_group("pretrain", cfg.pretrain, PretrainSettings, also=STAGE_KEYS)
    _check_pretrain_split(cfg, classes)
    check_group("finetune", cfg.finetune, FinetuneSettings, also=STAGE_KEYS)
    for name, epochs in (cfg.finetune.get("epochs_per_dataset") or {}).items():
        if name not in known_names():
            raise ConfigError(
                "finetune.epochs_per_dataset", name, f"keys among the datasets: {', '.join(known_names())}"
            )
        check(f"finetune.epochs_per_dataset.{name}", epochs, Positive)
    check_group("augment", cfg.augment, AugmentSettings)
    _check_checkpoint(cfg.pretrain.get("checkpoint"), net)
    for stage in ("pretrain", "finetune"):
        _check_optimization(stage, cfg[stage])
    continual = cfg.get("continual")
    if continual and "_target_" in continual:  # built as training will build it: its own argument checks first
        check_declared("continual", continual)
        instantiate_checked("continual", continual)
    check_grid("merge.lambdas", cfg.merge.lambdas, Finite)  # non-empty, which a type does not say
    check_group("merge", cfg.merge, MergeSettings, also=_merge_keys(cfg.merge))
    if cfg.strategy == "merge":
        _check_merge(cfg)
    if cfg.strategy == "negation":
        check_group("negation", cfg.negation, NegationSettings)
        _check_classes("negation.target", cfg.negation.target, classes, cfg.data.name)
