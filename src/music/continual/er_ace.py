"""ER-ACE (Caccia et al., ICLR 2022, "New Insights on Reducing Abrupt Representation Change in Online Continual
Learning"): experience replay with an asymmetric cross-entropy — from the second stage on, the incoming batch's loss
is computed over its own classes and the classes not seen yet only (the old classes' logits are masked out, so new
data does not push their representations around), while the memory batch gets the plain cross-entropy over all.

As the authors' code in Mammoth (aimagelab/mammoth, models/er_ace.py, read at HEAD): the mask keeps the batch's
present classes and every class from the largest seen so far upwards (`mask[:, seen.max():] = 1`), masked logits
are set to −1e9; every step offers the batch to a reservoir over all examples (images with labels), and the replay
term starts at the second stage (task_free=False), on a memory batch of `minibatch_size` (null: the training
batch's size). Mammoth's ER-ACE also swaps the network's head for a cosine classifier by default
(use_custom_classifier); here the network keeps the project's linear head (its contract), a stated difference.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.continual.buffer import StreamMemory
from music.settings import Positive

MASKED = -1e9


def asymmetric_logits(logits: Tensor, present: Tensor, largest_seen: int) -> Tensor:
    """`logits` with every class masked to −1e9 but the batch's `present` classes and those ≥ `largest_seen`."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[present] = True
    keep[largest_seen:] = True
    return logits.masked_fill(~keep, MASKED)


class ERACE(StreamMemory):
    """ER-ACE: keeps up to `memory_size` training images with their labels."""

    memory = "images with labels"

    def __init__(self, memory_size: Positive = 500, minibatch_size: Positive | None = None):
        super().__init__(memory_size)
        self.minibatch_size, self.stage, self.seen = minibatch_size, 0, torch.zeros(0, dtype=torch.long)

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        super().begin_stage(stage, net)
        self.stage = stage
        if stage == 0:  # a new sequence: nothing seen
            self.seen = torch.zeros(0, dtype=torch.long)

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        present = y.unique()
        self.seen = torch.cat([self.seen, present.cpu()]).unique()
        if self.stage > 0:
            logits = asymmetric_logits(logits, present, int(self.seen.max()))
        return F.cross_entropy(logits, y)

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        loss = 0.0
        if self.stage > 0 and len(self.buffer):
            drawn = self.buffer.draw(self.minibatch_size or len(x), x.device, self.augment)
            loss = F.cross_entropy(net(drawn["images"]), drawn["labels"])
        self.buffer.add(images=x if raw is None else raw, labels=y)  # kept as they were, augmented when drawn
        return loss

    def state(self) -> dict[str, Tensor]:
        return super().state() | {"seen_classes": self.seen}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.seen = state["seen_classes"].clone()
        super().load_state({k: v for k, v in state.items() if k != "seen_classes"})
