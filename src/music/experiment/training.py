"""Training a stage: Lightning's Trainer assembled from the config (callbacks, loggers, progress bar), the one
LightningModule, a seed per stage, wall time per stage, and a diverged loss turned into one line."""

import logging
import time
import warnings

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from music.console import CONSOLE
from music.data.augment import training_augment
from music.errors import Diverged
from music.experiment.context import Context, stage_seed
from music.instantiation import instantiate_checked
from music.models.linearized import LinearizedNet

log = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    """Lightning's seed_everything. Lightning is imported only when something trains: importing it takes seconds
    (torchmetrics, torchvision and scipy come with it), which a run whose models all come from the cache should not
    pay."""
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


def as_call(node) -> str:
    """A Hydra node as the call it makes, for messages: `torch.optim.SGD(lr=0.1, momentum=0.9)`; other values as is."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(plain, dict) or "_target_" not in plain:
        return str(plain)
    arguments = {k: v for k, v in plain.items() if not k.startswith("_")}
    return f"{plain['_target_']}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


class Training:
    def __init__(self, ctx: Context):
        self.ctx = ctx

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
        active: torch.Tensor | None = None,
    ):
        """Train `net` in place on the training images at `train_idx`, validating on all held-out data; under the
        head protocol (per-task heads score each sample over its task's classes) unless `protocol` is False. The
        optimizer starts from `optimizer_state` when given (a previous stage's). Returns the trained Classifier, its
        net on the CPU. A loss that becomes NaN or infinite stops the run: Diverged, naming the settings that feed it."""
        from lightning.pytorch.callbacks import ProgressBar

        from music.models.classifier import Classifier  # with Lightning: see seed_everything

        ctx = self.ctx
        seed = stage_seed(ctx.cfg.seed, stage)
        seed_everything(seed)
        augment = training_augment(ctx.cfg.augment, ctx.data.spec, stage_seed(ctx.cfg.seed, f"{stage}/augment"))
        if continual is not None and augment is not None:
            continual.augment = augment
        # finetune.train: the parts a fine-tune trains (θ0 trains all of them); a linearized model's own network only,
        # never its expansion point
        trains = "all" if stage == "pretrain" else ctx.cfg.finetune.get("train", "all")
        own = net.net if isinstance(net, LinearizedNet) else net
        for name, parameter in own.named_parameters():
            parameter.requires_grad_(trains == "all" or name.startswith(f"{trains}."))
        if trains == "head":  # a linear probe: the frozen features' BatchNorm statistics (and dropout) stay θ0's too
            own.features.eval()  # Lightning keeps each submodule's mode through fit
        channels_last = bool(ctx.cfg.model.get("channels_last", False))
        if channels_last:  # conv nets on a GPU: NHWC kernels (the weights here, the batches in Classifier)
            net = net.to(memory_format=torch.channels_last)
        module = Classifier(
            net,
            optimizer=instantiate(hparams.optimizer),
            scheduler=instantiate(hparams.scheduler) if hparams.get("scheduler") else None,
            tasks=ctx.tasks,
            num_classes=ctx.num_classes,
            stage=stage,
            allowed=ctx.allowed if protocol else None,
            continual=continual,
            optimizer_state=optimizer_state,
            augment=augment,
            channels_last=channels_last,
            normalize=ctx.data.normalize,
            scheduler_interval=hparams.get("scheduler_interval", "epoch"),
        )
        module.active = active  # the classes the loss covers (finetune.active_classes=seen), None: every class
        callbacks = self.callbacks() + list(extra_callbacks)
        bar = any(isinstance(c, ProgressBar) for c in callbacks)  # none configured: no bar (not Lightning's default)
        trainer = instantiate_checked(
            "trainer",
            ctx.cfg.trainer,
            max_epochs=hparams.epochs,
            logger=ctx.loggers or False,
            callbacks=callbacks,
            enable_progress_bar=bar,
        )
        # with a progress bar the bar is the console's line for this stage; the log file always gets this one
        log.info(
            "training %s on %d images for %d epoch(s)", stage, len(train_idx), hparams.epochs, extra={CONSOLE: not bar}
        )
        start = time.perf_counter()
        try:
            trainer.fit(module, ctx.data.loader(train_idx, shuffle=True, seed=seed), ctx.data.loader(ctx.split.val))
        except Diverged as error:
            group = "pretrain" if stage == "pretrain" else "finetune"
            fed = {
                f"{group}.optimizer": hparams.optimizer,
                f"{group}.scheduler": hparams.get("scheduler"),
                "data.batch_size": ctx.cfg.data.batch_size,
            }
            fed |= {"continual": ctx.cfg.continual} if continual is not None else {}
            settings = ", ".join(f"{k}={as_call(v)}" for k, v in fed.items())
            raise Diverged(f"{error}; the settings that feed it: {settings}") from None
        ctx.timings[f"fit/{stage}"] = time.perf_counter() - start
        module.net.cpu()
        return module

    def callbacks(self) -> list:
        """The configured Lightning callbacks (a fresh set per Trainer), without progress bars when they are off."""
        from lightning.pytorch.callbacks import ProgressBar

        cfg = self.ctx.cfg
        made = [
            instantiate_checked(f"callbacks.{name}", node)
            for name, node in (cfg.get("callbacks") or {}).items()
            if node and "_target_" in node
        ]
        return [c for c in made if cfg.trainer.enable_progress_bar or not isinstance(c, ProgressBar)]
