"""Experience replay with a reservoir memory (Chaudhry et al., 2019, "On Tiny Episodic Memories in Continual
Learning"; reservoir sampling: Vitter, 1985, algorithm R).

The memory is a uniform sample of at most `memory_size` of every training image seen so far, with its label, updated
after each stage with the stage's images; each training batch gets as many remembered samples appended as it has.
With `balanced`, the memory is split equally over the classes seen so far (the remainder to the smallest class ids)
and each class keeps its own reservoir, as Avalanche's `ClassBalancedBuffer(adaptive_size=True)`.

Defaults and details, compared with Avalanche's `ReplayPlugin(mem_size=200)` (avalanche/training/plugins/replay.py,
storage_policy.py, read at HEAD): mem_size is 500 here (the budget A-GEM gets too); Avalanche's default storage
policy is experience-balanced, the plain reservoir here is Chaudhry et al.'s; Avalanche's replay loader appends a
memory batch of the training batch's size (batch_size_mem = train_mb_size), as `batch` does. The memory samples of a
batch are drawn without replacement (with, when the memory holds fewer than the batch) with a generator seeded in
end_stage from the run's generator, so training is reproducible and nothing depends on batches seen before.
"""

from typing import Annotated

import torch
from torch import Tensor

from music.continual import ContinualMethod


def reservoir(kept: Tensor, count_seen: int, new_count: int, capacity: int, generator: torch.Generator) -> Tensor:
    """Algorithm R over a stream: `kept` holds, slot by slot, the stream positions in the reservoir after `count_seen`
    items; returns the slots after `new_count` more items (positions count_seen … count_seen+new_count−1).

    While a slot is free the next item fills it; then item t (0-based) draws j uniform in {0, …, t} and replaces slot
    j when j < capacity. Every item ends up kept with probability capacity/seen. A slot keeps its index while its
    item stays, so data stored alongside `kept` can be updated slot by slot."""
    assert len(kept) <= capacity, "shrink a reservoir with a uniform subset (shrink), not by dropping slots"
    total = count_seen + new_count
    slots = torch.full((min(len(kept) + new_count, capacity),), -1, dtype=torch.long)
    slots[: len(kept)] = kept
    t = torch.arange(count_seen, total, dtype=torch.long)
    j = (torch.rand(new_count, generator=generator, dtype=torch.float64) * (t + 1)).floor().long()
    free = len(kept) + torch.arange(new_count)  # the slot the k-th new item fills while some are free
    j = torch.where(free < capacity, free, j)
    hit = j < capacity
    # later items overwrite earlier ones: per slot, the largest position that landed there
    return slots.scatter_reduce(0, j[hit], t[hit], reduce="amax")


def shrink(kept: Tensor, capacity: int, generator: torch.Generator) -> Tensor:
    """A uniform random subset of `capacity` of the reservoir's slots (a uniform sample of a uniform sample)."""
    if len(kept) <= capacity:
        return kept
    return kept[torch.randperm(len(kept), generator=generator)[:capacity].sort().values]


def shares(capacity: int, groups: int) -> list[int]:
    """capacity split over `groups` as equally as possible, the remainder to the first groups (Avalanche's rule)."""
    return [capacity // groups + (1 if i < capacity % groups else 0) for i in range(groups)]


def draw(count: int, available: int, generator: torch.Generator) -> Tensor:
    """`count` indices into `available` items: without replacement when there are enough, with otherwise."""
    if count <= available:
        return torch.randperm(available, generator=generator)[:count]
    return torch.randint(available, (count,), generator=generator)


class Replay(ContinualMethod):
    """Experience replay: keeps up to `memory_size` training images with their labels."""

    memory = "images with labels"

    def __init__(self, memory_size: Annotated[int, "[1, inf)"] = 500, balanced: bool = False):
        self.memory_size, self.balanced = int(memory_size), bool(balanced)
        self._reset()

    def _reset(self) -> None:
        # per group (one, or one per class when balanced): stream positions of its slots, their images and labels,
        # and how many of the group's images were seen
        self.groups: dict[int, tuple[Tensor, Tensor, Tensor, int]] = {}
        # shaped by the first stage's images
        self.images, self.labels = torch.zeros(0), torch.zeros(0, dtype=torch.long)
        self.sampler = torch.Generator().manual_seed(self.seed)  # reseeded by end_stage before it draws

    def begin_stage(self, stage: int, net) -> None:
        if stage == 0:  # a new sequence: an empty memory
            self._reset()

    def batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if len(self.images) == 0:
            return x, y
        idx = draw(len(x), len(self.images), self.sampler)
        return torch.cat([x, self.images[idx].to(x.device, x.dtype)]), torch.cat(
            [y, self.labels[idx].to(y.device, y.dtype)]
        )

    def end_stage(self, stage: int, net, images: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        images, labels = images.detach().cpu(), labels.detach().cpu().long()
        if self.balanced:
            incoming = {int(c): labels == c for c in labels.unique()}
        else:
            incoming = {0: torch.ones(len(labels), dtype=torch.bool)}
        names = sorted(set(self.groups) | set(incoming))
        for g, capacity in zip(names, shares(self.memory_size, len(names))):
            empty = (torch.zeros(0, dtype=torch.long), images[:0], labels[:0], 0)
            positions, kept_images, kept_labels, seen = self.groups.get(g, empty)
            rows = shrink(torch.arange(len(positions)), capacity, generator)
            positions, kept_images, kept_labels = positions[rows], kept_images[rows], kept_labels[rows]
            mask = incoming.get(g, torch.zeros(len(labels), dtype=torch.bool))
            new_images, new_labels = images[mask], labels[mask]
            slots = reservoir(positions, seen, len(new_images), capacity, generator)
            # a slot still holding an old item holds it at the same index; a new item is row (position − seen)
            source = torch.where(slots >= seen, len(positions) + slots - seen, torch.arange(len(slots)))
            both_images, both_labels = torch.cat([kept_images, new_images]), torch.cat([kept_labels, new_labels])
            self.groups[g] = (slots, both_images[source], both_labels[source], seen + len(new_images))
        self.images = torch.cat([self.groups[g][1] for g in names])
        self.labels = torch.cat([self.groups[g][2] for g in names])
        self.sampler = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    def kept(self) -> int:
        return len(self.images)
