"""The LightningModule: a network from config, optimizer/scheduler partials, accuracy overall, per class and per task."""

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from music.errors import Diverged
from music.evaluation.metrics import accuracy_metrics, restrict
from music.models.optimizer_state import load as load_optimizer_state

if TYPE_CHECKING:
    from music.continual import ContinualMethod


class Classifier(L.LightningModule):
    """Trains `net` with cross-entropy; logs `<stage>/train/loss` and `<stage>/{val,test}/acc*` from a confusion matrix."""

    # finetune.active_classes=seen: the classes the training loss covers (a bool per class; None: all of them)
    active: torch.Tensor | None = None

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        tasks: list[list[int]] = (),
        *,
        num_classes: int,
        stage: str = "train",
        allowed: torch.Tensor | None = None,
        continual: "ContinualMethod | None" = None,
        optimizer_state: dict | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        channels_last: bool = False,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        scheduler_interval: str = "epoch",
    ):
        super().__init__()
        # modules and partials stay out of hparams: checkpoints must load with torch.load(weights_only=True)
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "allowed", "continual", "optimizer_state", "augment", "normalize"],
            logger=False,
        )
        self.continual = continual  # a continual-learning method's hooks (music.continual), or None
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # where the optimizer starts (a previous stage's, music.models.optimizer_state)
        self.optimizer_state = optimizer_state
        self.augment = augment  # training batches only (music.data.augment); evaluation never augments
        self.channels_last = channels_last  # batches in NHWC memory order, as the net's weights (model.channels_last)
        self.scheduler_interval = scheduler_interval  # the scheduler steps per "epoch" or per optimizer "step"
        self.normalize = normalize  # uint8 batches (music.data.store) → the network's input, on the device
        self.tasks = [list(t) for t in tasks]
        self.stage = stage
        # the head protocol (see evaluation.allowed_classes): which classes a sample of each class is scored over
        # (None when every class is allowed everywhere: the shared head needs no masking)
        self.register_buffer("allowed", None if allowed is None or bool(allowed.all()) else allowed, persistent=False)
        self.confusion = nn.ModuleDict({split: MulticlassConfusionMatrix(num_classes) for split in ("val", "test")})

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if x.dtype == torch.uint8:  # stored pixels: standardised here, on the device, after a 4× smaller transfer
            x = self.normalize(x)
        return x, y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def _scored(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`logits` over the classes each sample is scored over under the head protocol."""
        return restrict(logits, None if self.allowed is None else self.allowed[y])

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.continual is not None:
            x, y = self.continual.batch(x, y)  # a replayed memory batch joins before augmentation: augmented with it
        seen = x if self.augment is None else self.augment(x)
        logits = self(seen)
        scored = self._scored(logits, y)
        if self.active is not None:  # the classes of the tasks seen so far only (van de Ven's "active classes")
            scored = scored.masked_fill(~self.active.to(scored.device), float("-inf"))
        loss = (self.continual.task_loss if self.continual is not None else F.cross_entropy)(scored, y)
        if self.continual is not None:
            loss = loss + self.continual.penalty(self.net, seen, y, logits, raw=x)
        # summed here and logged once per epoch: a self.log call per step costs ~15% of an MLP epoch
        self.train_loss_sum += loss.detach() * len(y)
        self.train_samples += len(y)
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.continual is not None:
            self.continual.before_optimizer_step(self.net)

    def on_train_epoch_start(self):
        self.train_loss_sum, self.train_samples = torch.zeros((), device=self.device), 0

    def on_train_epoch_end(self):
        # checked once per epoch (one device sync), not per step: a diverged stage stops at its epoch's end
        if not torch.isfinite(self.train_loss_sum):
            raise Diverged(
                f"training {self.stage} stopped: its loss became {float(self.train_loss_sum):g} in epoch {self.current_epoch + 1}"
            )
        self.log(f"{self.stage}/train/loss", self.train_loss_sum / max(1, self.train_samples))

    def _eval_step(self, split: str, batch) -> None:
        x, y = batch
        self.confusion[split].update(self._scored(self(x), y).argmax(dim=1), y)

    def _eval_epoch_end(self, split: str) -> None:
        metrics = accuracy_metrics(self.confusion[split].compute(), self.tasks)
        self.confusion[split].reset()
        self.log_dict({f"{self.stage}/{split}/{k}": v for k, v in metrics.items() if v is not None})

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.optimizer_state:
            load_optimizer_state(optimizer, self.optimizer_state)
        if self.scheduler_factory is None:
            return optimizer
        length = {}  # a per-step schedule that spans the stage: its number of optimizer steps, known only here
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            given = getattr(self.scheduler_factory, "keywords", {}).get("total_steps")
            length = {"total_steps": given or int(self.trainer.estimated_stepping_batches)}
        scheduler = self.scheduler_factory(optimizer=optimizer, **length)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
