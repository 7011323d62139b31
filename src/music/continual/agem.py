"""Averaged Gradient Episodic Memory, A-GEM (Chaudhry et al., 2019, "Efficient Lifelong Learning with A-GEM").

Before each optimizer step, the reference gradient g_ref of the cross-entropy on `sample_size` remembered samples is
computed at the current parameters; when the batch's gradient g points against it (g·g_ref < 0), g is projected
onto the half-space where it does not: g ← g − (g·g_ref / g_ref·g_ref) g_ref.

Memory, following Avalanche's `AGEMPlugin(patterns_per_experience, sample_size)` (avalanche/training/plugins/agem.py,
read at HEAD): one group of patterns per stage, a uniform random subset of the stage's training images; the
reference batch is drawn balanced over the groups, sample_size // groups from each (Avalanche's
GroupBalancedInfiniteDataLoader). One change: `memory_size` is the total budget, split equally over the stages seen
so far (each old group shrinks to a uniform subset of itself, Avalanche's ExperienceBalancedBuffer rule), so A-GEM
keeps as many images as Replay(memory_size) does, instead of Avalanche's patterns_per_experience per stage. The
reference batch is drawn with a generator seeded in end_stage from the run's generator (Avalanche: a shuffled
infinite loader), and its gradient comes from torch.autograd.grad, leaving the parameters' .grad alone (Avalanche
runs a backward pass and zeroes the gradients before the batch's own backward).

`memory: mammoth` is the memory of the DER paper's A-GEM (aimagelab/mammoth, models/agem.py as first published, 2020):
after each stage a uniform random subset of memory_size // (number of tasks) of its training images (before
augmentation) joins the memory, which no stage shrinks, and the reference batch is `sample_size` images drawn
uniformly without replacement from all of it (Mammoth's minibatch_size; its best args: 32), augmented as a training
batch. Mammoth's HEAD stores the first training batch of the stage instead (its samples_per_task is left unused); the
2020 code is the paper's. Avalanche sets no defaults:
sample_size = 256 is the authors' MNIST value (EPS_MEM_BATCH_SIZE in facebookresearch/agem, with training batches of
10), memory_size = 500 is Replay's budget. The reference loss is the cross-entropy over all the network's outputs (a
per-task head's masking is the LightningModule's, not seen here).

Cost: each step after the first stage runs a second forward and backward pass on sample_size samples, twice the
training batch of 128 here, so A-GEM does about 3× the arithmetic of a plain step on those stages (`make bench`'s
`continual.vs_sequential.agem`, about 2× sequential's training time on the class-incremental preset).
"""

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.continual import ContinualMethod
from music.continual.replay import draw, shares


def project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM's projection of the flat gradient g: g itself when g·g_ref ≥ 0, else g − (g·g_ref / g_ref·g_ref) g_ref,
    whose dot product with g_ref is 0."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref)) * g_ref


class AGEM(ContinualMethod):
    """A-GEM: keeps up to `memory_size` training images with their labels, in one group per stage."""

    memory = "images with labels"

    def __init__(
        self,
        memory_size: Annotated[int, "[1, inf)"] = 500,
        sample_size: Annotated[int, "[1, inf)"] = 256,
        memory: Literal["stage_balanced", "mammoth"] = "stage_balanced",
    ):
        self.memory_size, self.sample_size, self.mode = int(memory_size), int(sample_size), memory
        self._reset()

    def _reset(self) -> None:
        self.groups: list[tuple[Tensor, Tensor]] = []  # per stage: images, labels (a uniformly random order)
        self.sampler = torch.Generator().manual_seed(self.seed)  # reseeded by end_stage before it draws

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        if stage == 0:  # a new sequence: an empty memory
            self._reset()

    def reference_batch(self) -> tuple[Tensor, Tensor]:
        """sample_size // groups remembered samples from each group (at least one from each); with Mammoth's
        memory, sample_size drawn from all of it."""
        if self.mode == "mammoth":
            images, labels = (torch.cat(part) for part in zip(*self.groups))
            chosen = draw(min(self.sample_size, len(labels)), len(labels), self.sampler)
            return images[chosen], labels[chosen]
        per_group = max(1, self.sample_size // len(self.groups))
        picks = [
            (images[i], labels[i])
            for images, labels in self.groups
            for i in [draw(min(per_group, len(images)), len(images), self.sampler)]
        ]
        return torch.cat([p[0] for p in picks]), torch.cat([p[1] for p in picks])

    def before_optimizer_step(self, net: nn.Module) -> None:
        if self.kept() == 0:
            return
        params = [p for p in net.parameters() if p.requires_grad]
        device = params[0].device
        x, y = self.reference_batch()
        with torch.enable_grad():
            loss = F.cross_entropy(net(self.augment(x.to(device, params[0].dtype))), y.to(device))
            ref = torch.autograd.grad(loss, params, allow_unused=True)
        g_ref = torch.cat([(r if r is not None else torch.zeros_like(p)).reshape(-1) for r, p in zip(ref, params)])
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        projected = project(g, g_ref.detach())
        if projected is g:
            return
        with torch.no_grad():
            for p, new in zip(params, projected.split([p.numel() for p in params])):
                if p.grad is not None:
                    p.grad.copy_(new.view_as(p))

    def end_stage(self, stage: int, net: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        images, labels = images.detach().cpu(), labels.detach().cpu().long()
        if self.mode == "mammoth":  # a fixed share per configured task, kept whole
            sizes = [len(lb) for _, lb in self.groups] + [self.memory_size // max(1, len(self.tasks))]
        else:
            sizes = shares(self.memory_size, len(self.groups) + 1)
        order = torch.randperm(len(images), generator=generator)[: sizes[-1]]
        # a prefix of a uniformly random subset in random order is a uniformly random subset
        self.groups = [(im[:n], lb[:n]) for (im, lb), n in zip(self.groups, sizes)] + [(images[order], labels[order])]
        self.sampler = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    def kept(self) -> int:
        return sum(len(labels) for _, labels in self.groups)
