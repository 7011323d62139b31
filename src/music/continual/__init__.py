"""Continual-learning methods: ways of training task after task that fight forgetting, each one file and one config.

A method is a `ContinualMethod`: the hooks the one LightningModule (models/classifier.py) and the sequential
strategy call, the way Avalanche's plugins work, without their weight. A hook it does not need stays the no-op
below. Methods are built from `configs/continual/<name>.yaml` (Hydra `_target_`); a method declares its settings with
their types and intervals in its constructor's signature (`Annotated[float, "(0, inf)"]`, music.settings), checked
before any work.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# what a method keeps between stages: the report's label
MEMORY = ("nothing", "a model", "images with labels", "images with logits", "images with labels and logits")


class ContinualMethod:
    """The hooks, in the order they run: `network` on every network a stage is built into (trained, handed to the
    hooks, scored); `begin_stage` before stage i trains; per training batch `batch` (may add
    samples) and `penalty` (an extra loss term); `before_optimizer_step` (may change the gradients); `end_stage`
    after stage i trained (state kept for the next stages). A stage that comes from the cache is not trained, but its
    hooks `begin_stage` and `end_stage` still run: state is rebuilt by `end_stage`, or — what only training sees, such
    as DER's logits recorded at each step — exported by `state` into the stage's cache entry and handed back by
    `load_state` (after a trained stage too, so both paths continue from the same state)."""

    memory = "nothing"
    # the training batches' augmentation (music.data.augment), set by training: a memory batch drawn for a loss term
    # is augmented as the batch is (Mammoth augments its draws); the identity when nothing augments
    augment: Callable[[Tensor], Tensor] = staticmethod(lambda x: x)
    # set by the sequential strategy before stage 0: the run's seed (a memory's draws are seeded by it, so seeds differ
    # and a run repeats itself) and the configured tasks (A-GEM's per-task share, the classes seen so far)
    seed: int = 0
    tasks: list[list[int]] = []

    def network(self, net: nn.Module) -> nn.Module:
        """The network a stage trains and is scored with, from `net` as built from a state: `net` itself, unless the
        method computes differently with the same parameters (ER-ACE's cosine classifier swaps the head's forward)."""
        return net

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        """Stage `stage` is about to train `net` (the previous stage's model, or θ0)."""

    def batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The training batch the loss sees (replay appends remembered samples)."""
        return x, y

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The loss of the training batch, its logits already restricted to the classes each sample is scored over
        (the head protocol): cross-entropy, which ER-ACE masks to the batch's own classes."""
        return F.cross_entropy(logits, y)

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        """An extra term added to the batch's loss (EWC's quadratic penalty, LwF's distillation); `x` is the batch the
        network saw (augmented), `logits` its outputs, `raw` the batch before augmentation (what a memory keeps)."""
        return 0.0

    def before_optimizer_step(self, net: nn.Module) -> None:
        """The gradients of `net` are computed; the optimizer steps next (A-GEM projects them here)."""

    def end_stage(self, stage: int, net: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        """Stage `stage` ended with `net`, trained on (images, labels): keep what later stages need."""

    def state(self) -> dict[str, Tensor]:
        """What training left that `end_stage` cannot rebuild from the stage's data (stored in the stage's cache entry)."""
        return {}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Continue from `state` (what `state` exported at the end of this stage's training)."""

    def kept(self) -> int:
        """How much it keeps between stages: images, parameters or 0 (metrics.json's `continual/kept`)."""
        return 0
