"""Online EWC (Schwarz et al., 2018, "Progress & Compress", §2.4 — the online form of Kirkpatrick et al., 2017).

After each stage the diagonal Fisher F_i of the stage's model is estimated on `num_samples` of its training images and
folded into a running importance F ← decay·F + F_i; the anchor θ* becomes the stage's parameters. While later stages
train, the loss gets strength/2 · Σ F (θ − θ*)² over the network's parameters.

Defaults and details, compared with Avalanche's `EWCPlugin(ewc_lambda, mode="online", decay_factor)`
(avalanche/training/plugins/ewc.py, read at HEAD):
- Avalanche adds ewc_lambda · Σ F (θ − θ*)² (no ½) with F the squared mini-batch gradient of the *empirical* loss
  (the true labels), averaged over batches. Here the penalty keeps the paper's ½ (so `strength` = 2 · ewc_lambda) and
  F is the per-sample true Fisher of `music.models.statistics.diagonal_fisher`: y is drawn from the model's own
  predictive distribution, one squared per-sample gradient per image, averaged over the images.
- Avalanche requires an explicit decay_factor in online mode; decay=1.0 here sums the stages' Fishers (γ = 1 in
  Schwarz et al.; lower it to forget old importances).
- The Fisher is estimated on a random subset of `num_samples` training images (all when fewer), drawn with the run's
  generator, rather than on the whole stage as Avalanche does: the per-sample gradients cost one backward each.
"""

import math
from typing import Annotated

import torch
from torch import Tensor, nn

from music.continual import ContinualMethod
from music.models.statistics import diagonal_fisher


def ewc_penalty(
    params: dict[str, Tensor], anchors: dict[str, Tensor], fishers: dict[str, Tensor], strength: float
) -> Tensor:
    """strength/2 · Σ_k Σ F_k (θ_k − θ*_k)² over the names in `fishers` (every one must be in params and anchors)."""
    total = sum((fishers[k] * (params[k] - anchors[k]).square()).sum() for k in fishers)
    return 0.5 * strength * torch.as_tensor(total)


def accumulate(old: dict[str, Tensor] | None, new: dict[str, Tensor], decay: float) -> dict[str, Tensor]:
    """Online EWC's importance: decay·old + new (just `new` when there is no old one)."""
    if old is None:
        return {k: v.clone() for k, v in new.items()}
    return {k: decay * old[k] + new[k] for k in new}


def seeded_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded from `generator` (sampling on an accelerator needs one there)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class EWC(ContinualMethod):
    """Online EWC: keeps the anchor θ* and the accumulated diagonal Fisher F (2 values per parameter)."""

    memory = "a model"

    def __init__(
        self,
        strength: Annotated[float, "[0, inf)"],
        decay: Annotated[float, "[0, 1]"] = 1.0,
        num_samples: Annotated[int, "[1, inf)"] = 256,
    ):
        self.strength, self.decay, self.num_samples = float(strength), float(decay), int(num_samples)
        self.anchors: dict[str, Tensor] | None = None
        self.fishers: dict[str, Tensor] | None = None

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        if stage == 0:  # a new sequence: nothing from an earlier one counts
            self.anchors = self.fishers = None

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        if self.fishers is None:
            return 0.0
        params = dict(net.named_parameters())
        device = next(iter(params.values())).device
        if next(iter(self.fishers.values())).device != device:  # Lightning moved the net after end_stage
            self.anchors = {k: v.to(device) for k, v in self.anchors.items()}
            self.fishers = {k: v.to(device) for k, v in self.fishers.items()}
        return ewc_penalty(params, self.anchors, self.fishers, self.strength)

    def end_stage(self, stage: int, net: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        params = dict(net.named_parameters())
        names = list(params)
        device = next(iter(params.values())).device
        chosen = torch.randperm(len(images), generator=generator)[: self.num_samples]
        was_training = net.training
        flat = diagonal_fisher(net, images[chosen].to(device), names, seeded_generator(generator, device))
        net.train(was_training)
        sizes = [params[k].numel() for k in names]
        fisher = {k: f.view_as(params[k]).detach() for k, f in zip(names, flat.split(sizes))}
        self.fishers = accumulate(self.fishers, fisher, self.decay)
        self.anchors = {k: v.detach().clone() for k, v in params.items()}

    def kept(self) -> int:
        if self.fishers is None:
            return 0
        return sum(math.prod(v.shape) for v in self.fishers.values()) + sum(
            math.prod(v.shape) for v in self.anchors.values()
        )
