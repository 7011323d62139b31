"""What every strategy works with: the data, the cache, the loggers, and the few verbs they share
(train a stage, get θ0 or a task's fine-tune from the cache, predict, turn predictions into metrics)."""

import hashlib
import logging
import time
import warnings
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from music.cache import ArtifactCache
from music.config import build_network, instantiate_checked
from music.data import TaskData, dataset_spec
from music.data.split import SPLIT_VERSION
from music.errors import Diverged
from music.evaluation import accuracy_metrics, allowed_classes, confusion_matrix, dense_stem, predict, predict_along
from music.merging import TaskVector
from music.models import LinearizedNet, plain_state
from music.models.checkpoint import load_weights
from music.models.networks import batchnorm_layers, recompute_batchnorm
from music.models.optimizer_state import flatten as flatten_optimizer_state
from music.tracking import CONSOLE

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from music.models.classifier import Classifier

log = logging.getLogger(__name__)

Predictions = dict[str, torch.Tensor]  # split ("val", "test") -> predicted class per image


def run_device(cfg: DictConfig) -> torch.device:
    """Where the run's data lives and its models are evaluated: the GPU the Trainer trains on (trainer.accelerator auto,
    gpu or cuda with one visible; the gpu_pool launcher makes its claimed GPU the only visible one), else the CPU."""
    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return torch.device("cuda") if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def stage_seed(seed: int, stage: str) -> int:
    """A seed per (run seed, stage): a stage trains the same whether or not earlier stages came from the cache."""
    return int(hashlib.sha256(f"{seed}/{stage}".encode()).hexdigest()[:8], 16)


def seed_everything(seed: int) -> None:
    """Lightning's seed_everything. Lightning is imported only when something trains: importing it takes seconds
    (torchmetrics, torchvision and scipy come with it), which a run whose models all come from the cache should not pay."""
    import lightning as L

    quiet_lightning()
    L.seed_everything(seed, verbose=False)


def target_stop(monitor: str, target: float, epochs: int):
    """Lightning's EarlyStopping that ends training once `monitor` (checked after every epoch's validation) reaches
    `target`, and never earlier for lack of improvement (patience: all the epochs)."""
    from lightning.pytorch.callbacks import EarlyStopping

    return EarlyStopping(
        monitor=monitor, mode="max", stopping_threshold=target, patience=epochs, check_on_train_epoch_end=False
    )


def quiet_lightning() -> None:
    """Lightning's own log, as the run's log shows it: warnings only (its banners and tips, once per Trainer, would
    drown the run's lines), through the run's handlers alone (Lightning adds a console handler of its own, which
    printed every line twice)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.handlers.clear()
        logger.propagate = True
    # the training loss is logged once per epoch (Classifier), so a short epoch's logging interval does not matter
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    # on a Slurm host (a login node, or a job submitit started) each job is one process by design, not an srun step
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _as_call(node) -> str:
    """A Hydra node as the call it makes, for messages: `torch.optim.SGD(lr=0.1, momentum=0.9)`; other values as is."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return str(_plain(node))
    arguments = {k: v for k, v in _plain(node).items() if not k.startswith("_")}
    return f"{node._target_}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def data_material(cfg: DictConfig, fingerprint: str) -> dict:
    """What every trained artifact depends on: the dataset (its name and a fingerprint of its contents), the
    split, the batches, the trainer settings that change results, and the seed."""
    spec = dataset_spec(cfg.data.name)
    return {
        "split_version": SPLIT_VERSION,
        "dataset": cfg.data.name,
        "fingerprint": fingerprint,
        "normalization": [list(spec.mean), list(spec.std)],
        "seed": cfg.seed,
        "val_fraction": cfg.data.val_fraction,
        "pretrain_split": _plain(cfg.data.pretrain),
        "batch_size": cfg.data.batch_size,
        "trainer": {k: _plain(cfg.trainer.get(k)) for k in TRAINER_KEYS},
        # callbacks can change training (SWA, …); progress bars cannot
        "callbacks": {
            k: _plain(v)
            for k, v in (cfg.get("callbacks") or {}).items()
            if v and not str(v.get("_target_", "")).endswith("ProgressBar")
        },
    }


def theta0_material(cfg: DictConfig, fingerprint: str) -> dict:
    """Exactly the settings that determine θ0 (its cache key): a given checkpoint's content, or how it is trained.
    θ0 is trained class-incrementally (one head over every class) whatever the head protocol of the fine-tunes."""
    if cfg.pretrain.get("checkpoint"):
        source = {"checkpoint_sha256": file_digest(cfg.pretrain.checkpoint)}
    else:
        source = {"pretrain": _plain(cfg.pretrain)}
    return data_material(cfg, fingerprint) | {"model": _plain(cfg.model.net)} | source


def training_material(cfg: DictConfig, theta0: dict, data: dict) -> dict:
    """Exactly the settings that determine a model fine-tuned from θ0 (its cache key): θ0's (`theta0`, its
    theta0_material), the shared budget, the head protocol, and `data` (which classes, grouped how, in which order)."""
    # optimizer_state concerns sequential stages alone: they name it in `data` when they carry it
    finetune = {k: v for k, v in _plain(cfg.finetune).items() if k != "optimizer_state"}
    return {"theta0": theta0, "finetune": finetune, "head": cfg.model.get("head", "shared"), "data": data}


class Experiment:
    def __init__(self, cfg: DictConfig, data: TaskData, cache: ArtifactCache, loggers: list["Logger"]):
        self.cfg, self.data, self.cache, self.loggers = cfg, data, cache, loggers
        self.tasks: list[list[int]] = [list(t) for t in cfg.tasks]
        self.split = data.split
        self.head = cfg.model.get("head", "shared")
        self.num_classes = data.spec.classes
        self.allowed = allowed_classes(self.tasks, self.head, self.num_classes)
        self._finetuned: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}
        self.device = run_device(cfg)
        data.to(self.device)  # once for the run: training batches, evaluations and λ searches read the images there
        # wall times in seconds, kept out of metrics.json (which must be identical across same-seed runs)
        self.timings: dict[str, float] = {}
        val = self.split.val
        self.eval_sets = {
            "val": (data.train_images[val.to(self.device)], data.train_labels[val.to(self.device)].cpu()),
            "test": (data.test_images, data.test_labels.cpu()),
        }

    # ---- networks ----
    def new_net(self) -> nn.Module:
        return build_network(self.cfg)

    def load_net(self, state: dict[str, torch.Tensor]) -> nn.Module:
        net = self.new_net()
        net.load_state_dict(state)
        return net

    def model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """A model with parameters θ = `state`: the network itself, or its linearization around θ0 when
        `finetune.linearized` (tangent-space fine-tuning: fine-tunes and merges live in θ0's tangent space)."""
        if not self.cfg.finetune.get("linearized", False):
            return self.load_net(state)
        model = LinearizedNet(self.load_net(self.theta0))
        model.net.load_state_dict(state)
        return model

    def fit(
        self,
        net: nn.Module,
        train_idx: torch.Tensor,
        stage: str,
        hparams: DictConfig,
        protocol: bool = True,
        extra_callbacks=(),
        continual=None,
        optimizer_state: dict | None = None,
    ) -> "Classifier":
        """Train `net` in place on the training images at `train_idx`, validating on all held-out data; under the
        head protocol (per-task heads score each sample over its task's classes) unless `protocol` is False. The
        optimizer starts from `optimizer_state` when given (a previous stage's). Returns the trained module, its net
        on the CPU. A loss that becomes NaN or infinite stops the run: Diverged, naming the settings that feed it."""
        from music.models.classifier import Classifier  # with Lightning: see seed_everything

        seed = stage_seed(self.cfg.seed, stage)
        seed_everything(seed)
        module = Classifier(
            net,
            optimizer=instantiate(hparams.optimizer),
            scheduler=instantiate(hparams.scheduler) if hparams.get("scheduler") else None,
            tasks=self.tasks,
            num_classes=self.num_classes,
            stage=stage,
            allowed=self.allowed if protocol else None,
            continual=continual,
            optimizer_state=optimizer_state,
        )
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = self.callbacks() + list(extra_callbacks)
        bar = any(
            isinstance(c, ProgressBar) for c in callbacks
        )  # none configured: no bar (not Lightning's default one)
        trainer = instantiate_checked(
            "trainer",
            self.cfg.trainer,
            max_epochs=hparams.epochs,
            logger=self.loggers or False,
            callbacks=callbacks,
            enable_progress_bar=bar,
        )
        # with a progress bar the bar is the console's line for this stage; the log file always gets this one
        log.info(
            "training %s on %d images for %d epoch(s)", stage, len(train_idx), hparams.epochs, extra={CONSOLE: not bar}
        )
        start = time.perf_counter()
        try:
            trainer.fit(module, self.data.loader(train_idx, shuffle=True, seed=seed), self.data.loader(self.split.val))
        except Diverged as error:
            group = "pretrain" if stage == "pretrain" else "finetune"
            fed = {
                f"{group}.optimizer": hparams.optimizer,
                f"{group}.scheduler": hparams.get("scheduler"),
                "data.batch_size": self.cfg.data.batch_size,
            }
            fed |= {"continual": self.cfg.continual} if continual is not None else {}
            raise Diverged(
                f"{error}; the settings that feed it: {', '.join(f'{k}={_as_call(v)}' for k, v in fed.items())}"
            ) from None
        self.timings[f"fit/{stage}"] = time.perf_counter() - start
        module.net.cpu()
        return module

    def callbacks(self) -> list:
        """The configured Lightning callbacks (a fresh set per Trainer), without progress bars when they are off."""
        from lightning.pytorch.callbacks import ProgressBar

        made = [
            instantiate_checked(f"callbacks.{name}", node)
            for name, node in (self.cfg.get("callbacks") or {}).items()
            if node and "_target_" in node
        ]
        return [c for c in made if self.cfg.trainer.enable_progress_bar or not isinstance(c, ProgressBar)]

    @cached_property
    def theta0(self) -> dict[str, torch.Tensor]:
        """θ0's parameters: a given checkpoint, or trained on the pretrain split (cached on disk, loaded once per run)."""
        if self.cfg.pretrain.get("checkpoint"):
            return load_weights(self.cfg.pretrain.checkpoint, self.new_net())

        def build():
            seed_everything(stage_seed(self.cfg.seed, "pretrain/init"))
            if not self.cfg.pretrain.train:  # pretrain=none: the class-incremental protocol from scratch
                return self.new_net().state_dict()
            target = self.cfg.pretrain.get("target_val_acc")
            stop = [] if target is None else [target_stop("pretrain/val/acc", target, self.cfg.pretrain.epochs)]
            net = self.fit(
                self.new_net(),
                self.split.pretrain_train,
                "pretrain",
                self.cfg.pretrain,
                protocol=False,
                extra_callbacks=stop,
            ).net
            if stop and stop[0].stopping_reason.name == "STOPPING_THRESHOLD":
                log.info(
                    "θ0 reached the target validation accuracy %g after %d epoch(s)", target, stop[0].stopped_epoch + 1
                )
            elif stop:
                log.warning(
                    "θ0 trained all %d epochs without reaching the target validation accuracy %g",
                    self.cfg.pretrain.epochs,
                    target,
                )
            return net.state_dict()

        return self.cache.get_or_build("theta0", self.theta0_material, build, label="θ0")

    @cached_property
    def theta0_material(self) -> dict:
        """θ0's cache material, computed once per run (a given checkpoint is hashed once, not per fine-tune)."""
        return theta0_material(self.cfg, self.data.fingerprint)

    def with_task_heads(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with each task's rows of the head taken from that task's fine-tune (per-task heads: merging
        leaves every task its own head)."""
        state = dict(state)
        for name in ("head.weight", "head.bias"):
            rows = state[name].clone()
            for task in self.tasks:
                rows[task] = self.finetuned(task)[name][task]
            state[name] = rows
        return state

    def trained(
        self,
        name: str,
        data: dict,
        start: dict[str, torch.Tensor],
        train_idx: torch.Tensor,
        stage: str,
        continual=None,
        optimizer_state: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """`start` fine-tuned on the images at `train_idx` with the shared budget (finetune.*), from the cache
        when the same `data` (its description: classes, order, continual method) was trained from θ0 before. With
        `optimizer_state` (a previous stage's; {} at the first stage) the optimizer starts from it, and the entry also
        holds the state it ended with (music.models.optimizer_state.split tells them apart)."""

        def build():
            module = self.fit(
                self.model(start),
                train_idx,
                stage,
                self.cfg.finetune,
                continual=continual,
                optimizer_state=optimizer_state,
            )
            carried = (
                {} if optimizer_state is None else flatten_optimizer_state(module.trainer.optimizers[0].state_dict())
            )
            return plain_state(module.net) | carried

        return self.cache.get_or_build(
            name, training_material(self.cfg, self.theta0_material, data), build, label=stage
        )

    def finetuned(self, task: list[int]) -> dict[str, torch.Tensor]:
        """θ0 fine-tuned on the classes of `task` alone (cached on disk, loaded once per run; independent of
        the other tasks)."""
        key = tuple(sorted(task))
        if key not in self._finetuned:
            stage = "individual/task_" + "_".join(map(str, key))
            self._finetuned[key] = self.trained(
                "finetune", {"task": list(key)}, self.theta0, self.split.train_of(task), stage
            )
        return self._finetuned[key]

    def task_val_images(self) -> list[torch.Tensor]:
        """Each task's held-out validation images (alignment's KL and AdaMerging read them; never their labels)."""
        return [self.data.train_images[self.split.task_val(i).to(self.device)].cpu() for i in range(len(self.tasks))]

    def task_masks(self) -> list[torch.Tensor]:
        """Per task, the classes its images are scored over (every class of a task shares its row: known from the
        task id)."""
        return [self.allowed[task[0]] for task in self.tasks]

    def unlabeled_images(self, task: list[int], count: int, purpose: str) -> torch.Tensor:
        """`count` of a task's training images drawn at random (seeded by run seed, purpose and task): what
        alignment and merge statistics see of a task — images, never labels."""
        pool = self.split.train_of(task)
        generator = torch.Generator().manual_seed(stage_seed(self.cfg.seed, f"{purpose}/" + "_".join(map(str, task))))
        # on the CPU, where merge statistics and alignment compute
        return self.data.train_images[
            pool[torch.randperm(len(pool), generator=generator)[:count]].to(self.device)
        ].cpu()

    # ---- evaluation: one batched pass per split over resident tensors ----
    def predictions(self, net: nn.Module) -> Predictions:
        net.to(self.device)
        batch = self.cfg.data.eval_batch_size
        return {
            split: predict(net, images, batch, self.allowed[labels])
            for split, (images, labels) in self.eval_sets.items()
        }

    @cached_property
    def theta0_predictions(self) -> Predictions:
        """θ0's predictions, once per run: the pretrain strategy's, `individual`'s fallback, every run's θ0 figures."""
        return self.predictions(self.load_net(self.theta0))

    def routed(self, default: Predictions, per_task: list[Predictions]) -> Predictions:
        """Each image of a task's classes as that task's predictions say (its task id known at test), every other
        image as `default` says."""
        out = {split: preds.clone() for split, preds in default.items()}
        for task, preds in zip(self.tasks, per_task):
            for split, (_, labels) in self.eval_sets.items():
                mine = torch.isin(labels, torch.tensor(task))
                out[split][mine] = preds[split][mine]
        return out

    # ---- merged models ----
    @cached_property
    def merge_keys(self) -> list[str]:
        """What task vectors cover: the network's parameters and, under merge.batchnorm=merge, BatchNorm's running
        statistics; integer buffers (num_batches_tracked) never. What they do not cover stays θ0's."""
        net = self.new_net()
        keys = [name for name, _ in net.named_parameters()]
        if self.cfg.merge.batchnorm == "merge":
            keys += [name for name, b in net.named_buffers() if b.is_floating_point()]
        return keys

    @cached_property
    def recomputes_batchnorm(self) -> bool:
        """Whether merged models get their BatchNorm statistics re-estimated (merge.batchnorm=recompute, a network with
        BatchNorm, not linearized): the merge then reads unlabeled task images."""
        linearized = self.cfg.finetune.get("linearized", False)
        return self.cfg.merge.batchnorm == "recompute" and bool(batchnorm_layers(self.new_net())) and not linearized

    def batchnorm_images_of(self, tasks: list[list[int]]) -> torch.Tensor:
        """The unlabeled images a merged model's BatchNorm statistics are re-estimated on: merge.num_samples training
        images of each of `tasks`, on the run's device."""
        return torch.cat([self.unlabeled_images(task, self.cfg.merge.num_samples, "batchnorm") for task in tasks]).to(
            self.device
        )

    @cached_property
    def batchnorm_images(self) -> torch.Tensor:
        return self.batchnorm_images_of(self.tasks)

    def merged_model(
        self, state: dict[str, torch.Tensor], theta0: dict[str, torch.Tensor], images: torch.Tensor | None = None
    ) -> nn.Module:
        """The model θ = `state` a merge made. Under merge.batchnorm=recompute its BatchNorm running statistics are
        re-estimated on unlabeled task images (`images`, default every task's: batchnorm_images), unless its parameters
        are θ0's (λ = 0 is θ0 exactly); a tangent model normalises with θ0's statistics by construction. Under
        merge.batchnorm=merge a running variance the merge drove below 0 is clamped to 0."""
        model = self.model(state).to(self.device)
        if self.recomputes_batchnorm:
            if any(not torch.equal(state[name], theta0[name]) for name, _ in model.named_parameters()):
                recompute_batchnorm(
                    model, self.batchnorm_images if images is None else images, self.cfg.data.eval_batch_size
                )
        elif self.cfg.merge.batchnorm == "merge":
            for layer in batchnorm_layers(model):
                if layer.running_var is not None:  # None: a layer that tracks no statistics
                    layer.running_var.clamp_(min=0)
        return model

    def predictions_along(
        self,
        theta0: dict[str, torch.Tensor],
        direction: TaskVector,
        lambdas: list[float],
        batchnorm_images: torch.Tensor | None = None,
    ) -> list[Predictions]:
        """Predictions of the models θ0 + λ·direction for each λ: what a λ search evaluates (sharing the dense first
        layer's work across λ where the network has one; see predict_along)."""
        models = [self.merged_model(direction.apply_to(theta0, lam), theta0, batchnorm_images) for lam in lambdas]
        if dense_stem(models[0]) is None:  # e.g. a CNN, or a linearized network
            return [self.predictions(model) for model in models]
        base, batch = self.model(theta0).to(self.device), self.cfg.data.eval_batch_size
        along = {
            split: predict_along(base, models, lambdas, direction.deltas, images, batch, self.allowed[labels])
            for split, (images, labels) in self.eval_sets.items()
        }
        return [{split: preds[i] for split, preds in along.items()} for i in range(len(lambdas))]

    def metrics(self, preds: Predictions, tasks: list[list[int]] | None = None) -> dict[str, float | None]:
        """`<split>/acc…` figures of predictions, per task of `tasks` (default: the configured tasks)."""
        out = {}
        for split, (_, labels) in self.eval_sets.items():
            confusion = confusion_matrix(preds[split], labels, self.num_classes)
            out |= {f"{split}/{k}": v for k, v in accuracy_metrics(confusion, tasks or self.tasks).items()}
        return out

    def evaluate(self, net: nn.Module) -> dict[str, float | None]:
        return self.metrics(self.predictions(net))

    # ---- tracking ----
    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key=key, columns=columns, data=rows)
