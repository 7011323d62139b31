"""The run's trained artifacts, each cached under exactly the config that determines it: θ0, the per-task fine-tunes
and the sequential stages (under a continual method). Also the networks they are loaded into."""

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from music.cache import ArtifactCache, cache_key
from music.continual import ContinualMethod
from music.data.augment import AugmentSettings
from music.data.split import SPLIT_VERSION
from music.experiment.context import Context, stage_seed
from music.experiment.training import Training, seed_everything, target_stop
from music.instantiation import build_network, instantiate_checked
from music.models import LinearizedNet, plain_state
from music.models import optimizer_state as optimizer_states
from music.models.checkpoint import load_weights
from music.settings import Positive, declared_settings

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
METHOD_PREFIX = "continual/"  # a continual method's state in a stage's cache entry
# Trainer settings that change what training produces (logging, progress bars and the like do not)
TRAINER_KEYS = (
    "precision",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "deterministic",
    "limit_train_batches",
    "limit_val_batches",
    "check_val_every_n_epoch",
)


@dataclass(frozen=True)
class PretrainSettings:
    """configs/pretrain/*.yaml: how θ0 is made (music.settings; its optimizer is checked by building it)."""

    train: bool = True  # false: a random initialisation seeded by the run (pretrain=none)
    epochs: Positive = 3
    target_val_acc: Annotated[float, "(0, 1]"] | None = None  # stop once validation accuracy reaches it
    checkpoint: str | None = None  # a file of the configured network (checked by loading it)


@dataclass(frozen=True)
class FinetuneSettings:
    """`finetune` in train.yaml: the budget every fine-tune shares (music.settings)."""

    epochs: Positive = 1
    linearized: bool = False  # fine-tune in θ0's tangent space
    # between sequential stages: a new optimizer, or the last one's
    optimizer_state: Literal["fresh", "carry"] = "fresh"
    train: Literal["all", "features", "head"] = "all"  # which parameters a fine-tune trains (the others stay θ0's)
    # sequential stages' loss over every class (all) or the classes of the tasks seen so far (seen: van de Ven's
    # "active classes", GT-RIPL's valid_out_dim)
    active_classes: Literal["all", "seen"] = "all"
    # the papers' per-dataset budgets: {dataset: epochs} for tasks drawn from that dataset (e.g. sweep=eight_tasks);
    # a dataset it does not name trains `epochs`
    epochs_per_dataset: dict | None = None
    scheduler_interval: Literal["epoch", "step"] = "epoch"  # when finetune.scheduler steps (step: warmup + cosine)


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_material(cfg: DictConfig, fingerprint: str, data=None) -> dict:
    """What every trained artifact depends on: the dataset (its key and a fingerprint of its contents, the resolution
    its pixels were stored at), the split, the batches, the trainer settings that change results, and the seed.
    `data`: the run's TaskData (its plan and declaration); None: resolved from `cfg`."""
    if data is None:
        from music.data.resolve import resolve

        plan = resolve(cfg.copy())
        source, spec, pixels = plan.source, plan.spec, plan.pixels
    else:
        source, spec, pixels = data.plan.source, data.spec, data.plan.pixels
    resized = [pixels.of(part) for part in getattr(source, "parts", (source,))]
    callbacks = (cfg.get("callbacks") or {}).items()
    return {
        "split_version": SPLIT_VERSION,
        "dataset": source.key(),
        "fingerprint": fingerprint,
        "normalization": [list(spec.mean or ()), list(spec.std or ())],
        # the resolution images were stored at (arrays as decoded: none, today's keys unchanged)
        **({"pixels": [r and r.material() for r in resized]} if any(resized) else {}),
        # a network built from the dataset's declaration (CLIP's zero-shot head) depends on its names and prompts too
        **(
            {"class_prompts": cache_key({"prompts": spec.class_prompts()})}
            if "dataset" in declared_settings(str(cfg.model.net.get("_target_")))
            else {}
        ),
        "seed": cfg.seed,
        "val_fraction": cfg.data.val_fraction,
        # data.pretrain.data is spelled by the dataset's name (its composite's first part): unset, keys stay as they were
        "pretrain_split": {k: v for k, v in _plain(cfg.data.pretrain).items() if k != "data"},
        "batch_size": cfg.data.batch_size,
        "trainer": {k: _plain(cfg.trainer.get(k)) for k in TRAINER_KEYS},
        # on only: today's runs (no augmentation) keep their keys
        **({"augment": _plain(cfg.augment)} if AugmentSettings(**cfg.augment).active else {}),
        **({"channels_last": True} if cfg.model.get("channels_last", False) else {}),  # other rounding: its own key
        # callbacks can change training (SWA, …); progress bars cannot
        "callbacks": {
            k: _plain(v) for k, v in callbacks if v and not str(v.get("_target_", "")).endswith("ProgressBar")
        },
    }


def theta0_material(cfg: DictConfig, fingerprint: str, data=None) -> dict:
    """Exactly the settings that determine θ0 (its cache key): a given checkpoint's content, or how it is trained.
    θ0 is trained class-incrementally (one head over every class) whatever the head protocol of the fine-tunes."""
    if cfg.pretrain.get("checkpoint"):
        source = {"checkpoint_sha256": file_digest(cfg.pretrain.checkpoint)}
    else:
        source = {"pretrain": _plain(cfg.pretrain)}
    return data_material(cfg, fingerprint, data) | {"model": _plain(cfg.model.net)} | source


def training_material(cfg: DictConfig, theta0: dict, data: dict, finetune: DictConfig | None = None) -> dict:
    """Exactly the settings that determine a model fine-tuned from θ0 (its cache key): θ0's (`theta0`, its
    theta0_material), the budget (`finetune`, default cfg.finetune: its epochs already the task's own), the head
    protocol, and `data` (which classes, grouped how, in which order)."""
    # optimizer_state concerns sequential stages alone: they name it in `data` when they carry it
    finetune = {k: v for k, v in _plain(finetune or cfg.finetune).items() if k != "optimizer_state"}
    finetune.pop("epochs_per_dataset", None)  # the stage's own epochs are in `epochs`
    if finetune.get("scheduler_interval") == "epoch":  # the default: today's fine-tunes keep their keys
        del finetune["scheduler_interval"]
    if finetune.get("train") == "all":  # the default: today's fine-tunes keep their keys
        del finetune["train"]
    if finetune.get("active_classes") == "all":  # likewise
        del finetune["active_classes"]
    return {"theta0": theta0, "finetune": finetune, "head": cfg.model.get("head", "shared"), "data": data}


class Artifacts:
    def __init__(self, ctx: Context, training: Training, cache: ArtifactCache):
        self.ctx, self.training, self.cache = ctx, training, cache
        self._finetuned: dict[tuple[int, ...], State] = {}

    # ---- networks ----
    def new_net(self) -> nn.Module:
        return build_network(self.ctx.cfg, self.ctx.data.spec)

    def load_net(self, state: State) -> nn.Module:
        net = self.new_net()
        net.load_state_dict(state)
        return net

    def model(self, state: State, method: ContinualMethod | None = None) -> nn.Module:
        """A model with parameters θ = `state`: the network itself, or its linearization around θ0 when
        `finetune.linearized` (tangent-space fine-tuning: fine-tunes and merges live in θ0's tangent space); under a
        continual `method`, the network as it computes (its `network` hook: ER-ACE's cosine head)."""
        adapt = method.network if method is not None else (lambda net: net)
        if not self.ctx.cfg.finetune.get("linearized", False):
            return adapt(self.load_net(state))
        model = LinearizedNet(adapt(self.load_net(self.theta0)))
        model.net.load_state_dict(state)
        return model

    # ---- θ0 ----
    @cached_property
    def theta0(self) -> State:
        """θ0's parameters: a given checkpoint, or trained on the pretrain split (cached on disk, loaded once per run)."""
        cfg = self.ctx.cfg
        if cfg.pretrain.get("checkpoint"):
            return load_weights(cfg.pretrain.checkpoint, self.new_net())

        def build():
            seed_everything(stage_seed(cfg.seed, "pretrain/init"))
            if not cfg.pretrain.train:  # pretrain=none: the class-incremental protocol from scratch
                return self.new_net().state_dict()
            target = cfg.pretrain.get("target_val_acc")
            stop = [] if target is None else [target_stop("pretrain/val/acc", target, cfg.pretrain.epochs)]
            pretrain_train = self.ctx.split.pretrain_train
            net = self.training.fit(self.new_net(), pretrain_train, "pretrain", cfg.pretrain, False, stop).net
            if stop and stop[0].stopping_reason.name == "STOPPING_THRESHOLD":
                log.info(
                    "θ0 reached the target validation accuracy %g after %d epoch(s)", target, stop[0].stopped_epoch + 1
                )
            elif stop:
                epochs = cfg.pretrain.epochs
                log.warning(
                    "θ0 trained all %d epochs without reaching the target validation accuracy %g", epochs, target
                )
            return net.state_dict()

        return self.cache.get_or_build("theta0", self.theta0_material, build, label="θ0")

    @cached_property
    def theta0_material(self) -> dict:
        """θ0's cache material, computed once per run (a given checkpoint is hashed once, not per fine-tune)."""
        return theta0_material(self.ctx.cfg, self.ctx.data.fingerprint, self.ctx.data)

    # ---- fine-tunes ----
    def trained(
        self,
        name: str,
        data: dict,
        start: State,
        train_idx: torch.Tensor,
        stage: str,
        continual=None,
        optimizer_state: dict | None = None,
        active: torch.Tensor | None = None,
        task: list[int] | None = None,
    ) -> State:
        """`start` fine-tuned on the images at `train_idx` with the shared budget (finetune.*), from the cache
        when the same `data` (its description: classes, order, continual method) was trained from θ0 before. With
        `optimizer_state` (a previous stage's; {} at the first stage) the optimizer starts from it, and the entry also
        holds the state it ended with (music.models.optimizer_state.split tells them apart). A continual method's
        `state` (what only training sees) is kept in the entry too and handed back to it, cached or not."""
        finetune = self.budget(task)

        def build():
            module = self.training.fit(
                self.model(start, continual),
                train_idx,
                stage,
                finetune,
                continual=continual,
                optimizer_state=optimizer_state,
                active=active,
            )
            optimizer = module.trainer.optimizers[0].state_dict()
            carried = optimizer_states.flatten(optimizer) if optimizer_state is not None else {}
            method = {f"{METHOD_PREFIX}{k}": v for k, v in continual.state().items()} if continual is not None else {}
            return plain_state(module.net) | carried | method

        material = training_material(self.ctx.cfg, self.theta0_material, data, finetune)
        entry = self.cache.get_or_build(name, material, build, label=stage)
        method = {k.removeprefix(METHOD_PREFIX): v for k, v in entry.items() if k.startswith(METHOD_PREFIX)}
        if method:
            continual.load_state(method)
        return {k: v for k, v in entry.items() if not k.startswith(METHOD_PREFIX)}

    def budget(self, task: list[int] | None) -> DictConfig:
        """finetune.* with the epochs of the dataset `task` is drawn from (finetune.epochs_per_dataset), if it names
        it; a fine-tune over several datasets (merged) or none named: finetune.epochs."""
        finetune = self.ctx.cfg.finetune
        per_dataset = finetune.get("epochs_per_dataset") or {}
        dataset = self.ctx.data.plan.dataset_of(task) if task is not None else None
        if dataset not in per_dataset:
            return finetune
        budget = finetune.copy()
        budget.epochs = per_dataset[dataset]
        return budget

    def finetuned(self, task: list[int]) -> State:
        """θ0 fine-tuned on the classes of `task` alone (cached on disk, loaded once per run; independent of
        the other tasks)."""
        key = tuple(sorted(task))
        if key not in self._finetuned:
            stage = "individual/task_" + "_".join(map(str, key))
            train = self.ctx.split.train_of(task)
            self._finetuned[key] = self.trained(
                "finetune", {"task": list(key)}, self.theta0, train, stage, task=list(key)
            )
        return self._finetuned[key]

    def with_task_heads(self, state: State) -> State:
        """`state` with each task's rows of the head taken from that task's fine-tune (per-task heads: merging
        leaves every task its own head)."""
        state = dict(state)
        for name in ("head.weight", "head.bias"):
            rows = state[name].clone()
            for task in self.ctx.tasks:
                rows[task] = self.finetuned(task)[name][task]
            state[name] = rows
        return state

    # ---- sequential stages ----
    def continual_method(self) -> ContinualMethod | None:
        """The configured continual-learning method (`continual=<name>`), or None for plain fine-tuning."""
        node = self.ctx.cfg.get("continual")
        if not (node and "_target_" in node):
            return None
        method = instantiate_checked("continual", node)
        method.seed, method.tasks = int(self.ctx.cfg.seed), self.ctx.tasks  # its memory's draws follow the run's seed
        return method

    def sequential_states(self, method: ContinualMethod | None) -> list[State]:
        """θ_1 … θ_T: θ0 fine-tuned on task 1, then 2, … in config order, under the continual method's hooks.

        Each stage is cached under the ordered tasks so far (and the method), so a longer sequence reuses its prefix; a
        cached stage still runs the method's begin_stage and end_stage, which rebuild its state. Each stage's optimizer
        starts fresh (finetune.optimizer_state=fresh, as Mammoth) or from the previous stage's state (carry, as
        Avalanche); with carry a stage's cache entry keeps its optimizer's state too."""
        ctx = self.ctx
        state, states = self.theta0, []
        continual = {"continual": OmegaConf.to_container(ctx.cfg.continual, resolve=True)} if method else {}
        if continual and continual["continual"].get("classifier") == "linear":  # the default: ER-ACE keeps its keys
            del continual["continual"]["classifier"]
        carry = ctx.cfg.finetune.optimizer_state == "carry"
        optimizer = {} if carry else None  # the state the next stage's optimizer starts from
        for i in range(len(ctx.tasks)):
            prefix = (
                {"tasks": [sorted(t) for t in ctx.tasks[: i + 1]]}
                | continual
                | ({"optimizer_state": "carry"} if carry else {})
            )
            if method:
                method.begin_stage(i, self.model(state, method).to(ctx.device))
            seen = ctx.split.task_train(i)
            active = None
            if ctx.cfg.finetune.get("active_classes", "all") == "seen":
                active = torch.zeros(ctx.num_classes, dtype=torch.bool)
                active[[c for task in ctx.tasks[: i + 1] for c in task]] = True
            stage = f"sequential/stage_{i}"
            state = self.trained("sequential", prefix, state, seen, stage, method, optimizer, active, ctx.tasks[i])
            if carry:
                state, optimizer = optimizer_states.split(state)
            if method:
                images, labels = ctx.data.images(seen), ctx.data.train_labels[seen.to(ctx.device)]
                method.end_stage(
                    i, self.model(state, method).to(ctx.device), images, labels, ctx.seeded(f"continual/stage_{i}")
                )
            states.append(state)
        return states
