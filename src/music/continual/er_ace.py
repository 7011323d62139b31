"""ER-ACE (Caccia et al., ICLR 2022, "New Insights on Reducing Abrupt Representation Change in Online Continual
Learning"): experience replay with an asymmetric cross-entropy — from the second stage on, the incoming batch's loss
is computed over its own classes and the classes not seen yet only (the old classes' logits are masked out, so new
data does not push their representations around), while the memory batch gets the plain cross-entropy over all.

As the authors' code in Mammoth (aimagelab/mammoth, models/er_ace.py, read at HEAD): the mask keeps the batch's
present classes and every class from the largest seen so far upwards (`mask[:, seen.max():] = 1`), masked logits
are set to −1e9; every step offers the batch to a reservoir over all examples (images with labels), and the replay
term starts at the second stage (task_free=False), on a memory batch of `minibatch_size` (null: the training
batch's size).

The classifier (`classifier`): `linear` (the default) keeps the network's linear head, as Mammoth's ER-ACE did when it
came in (2022, X-DER's code); `cosine` scores as Mammoth's HEAD does by default (`use_custom_classifier`, added in
December 2024 as "the custom classifier used in the original work", its class CustomLinear): logits
s·⟨x/(‖x‖+ε), w_c/(‖w_c‖+ε)⟩ of the features x and each class's weight row w_c, s = 10, ε = 1e-5, no bias. Here the
head stays an nn.Linear (a CosineHead subclass: the same parameters and state-dict keys, task vectors and merging read
it as before; its bias is kept but unused, so it never changes); the method swaps it into every network a stage trains
and is scored with (the `network` hook). Mammoth starts that head from a fresh random init; here it starts from θ0's
head rows (from scratch, pretrain=none, the same nn.Linear init).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.continual.buffer import StreamMemory
from music.settings import Positive

MASKED = -1e9
COSINE_SCALE = 10.0  # Mammoth's CustomLinear.scale_factor: every logit lies in (−10, 10)
COSINE_EPS = 1e-5  # added to both norms, as Mammoth's (a zero feature vector scores 0, not NaN)


def cosine_logits(features: Tensor, weight: Tensor, scale: float = COSINE_SCALE) -> Tensor:
    """scale · cos(features, each weight row): both sides divided by their L2 norm (+ε), then the dot products."""
    features = features / (features.norm(dim=1, keepdim=True) + COSINE_EPS)
    return scale * features @ (weight / (weight.norm(dim=1, keepdim=True) + COSINE_EPS)).T


class CosineHead(nn.Linear):
    """A head that scores with `cosine_logits` of its weight (the bias, kept for the state dict's keys, is unused)."""

    def forward(self, x: Tensor) -> Tensor:
        return cosine_logits(x, self.weight)

    @classmethod
    def like(cls, head: nn.Linear) -> "CosineHead":
        """A CosineHead with `head`'s parameters (the same tensors' values, device and dtype)."""
        where = {"device": head.weight.device, "dtype": head.weight.dtype}
        # skip_init: no random init to overwrite (the global generator is left as it was)
        made = nn.utils.skip_init(cls, head.in_features, head.out_features, bias=head.bias is not None, **where)
        made.load_state_dict(head.state_dict())
        return made


def asymmetric_logits(logits: Tensor, present: Tensor, largest_seen: int) -> Tensor:
    """`logits` with every class masked to −1e9 but the batch's `present` classes and those ≥ `largest_seen`."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[present] = True
    keep[largest_seen:] = True
    return logits.masked_fill(~keep, MASKED)


class ERACE(StreamMemory):
    """ER-ACE: keeps up to `memory_size` training images with their labels."""

    memory = "images with labels"

    def __init__(
        self,
        memory_size: Positive = 500,
        minibatch_size: Positive | None = None,
        classifier: Literal["linear", "cosine"] = "linear",
    ):
        super().__init__(memory_size)
        self.minibatch_size, self.stage, self.seen = minibatch_size, 0, torch.zeros(0, dtype=torch.long)
        self.classifier = classifier

    def network(self, net: nn.Module) -> nn.Module:
        if self.classifier == "cosine" and not isinstance(net.head, CosineHead):
            net.head = CosineHead.like(net.head)
        return net

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
