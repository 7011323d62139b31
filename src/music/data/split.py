"""The seeded split of a training set into validation, θ0's pretrain data and per-task data.

Every class is split on its own, with a generator seeded by (seed, class): first `val_fraction` of its images
are held out for validation (so validation is class-balanced like the test set, whatever θ0 and the tasks
take), then the rest is divided between θ0's pretrain data and the tasks' data. A task's data therefore
depends only on its own classes: reordering or adding tasks never changes (nor invalidates cached fine-tunes
of) the others.
"""

from dataclasses import dataclass

import torch

SPLIT_VERSION = 2  # part of every cache key: bump when the same settings start to mean a different split


@dataclass(frozen=True)
class ClassSplit:
    """Indices into the training set for one class."""

    val: torch.Tensor
    pretrain_train: torch.Tensor
    task_train: torch.Tensor


@dataclass(frozen=True)
class Split:
    classes: dict[int, ClassSplit]
    tasks: list[list[int]]
    pretrain_classes: list[int]

    def _gather(self, field: str, classes) -> torch.Tensor:
        parts = [getattr(self.classes[c], field) for c in classes]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    @property
    def pretrain_train(self) -> torch.Tensor:
        return self._gather("pretrain_train", self.pretrain_classes)

    @property
    def pretrain_val(self) -> torch.Tensor:
        return self._gather("val", self.pretrain_classes)

    def train_of(self, classes: list[int]) -> torch.Tensor:
        """Task training data of these classes (whether or not they form a configured task)."""
        return self._gather("task_train", classes)

    def task_train(self, i: int) -> torch.Tensor:
        return self.train_of(self.tasks[i])

    def task_val(self, i: int) -> torch.Tensor:
        return self._gather("val", self.tasks[i])

    @property
    def task_classes(self) -> list[int]:
        return sorted({c for task in self.tasks for c in task})

    @property
    def union_train(self) -> torch.Tensor:
        """The training data of all tasks together (what `merged` fine-tunes on)."""
        return self._gather("task_train", self.task_classes)

    @property
    def val(self) -> torch.Tensor:
        """Every class's held-out images: what λ and other knobs are picked on (the test set is only reported)."""
        return self._gather("val", sorted(self.classes))


def class_generator(seed: int, label: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + label)


def pretrain_counts(
    class_sizes: dict[int, int], classes: list[int], fraction: float | None, num_samples: int | None
) -> dict[int, int]:
    """How many of each class's (non-validation) images go to θ0: a fraction of every pretrain class, or
    num_samples spread evenly over the pretrain classes."""
    if num_samples is not None:
        base, extra = divmod(num_samples, len(classes))
        wanted = {c: base + (i < extra) for i, c in enumerate(sorted(classes))}
    else:
        wanted = {c: int(fraction * class_sizes[c]) for c in classes}
    return {c: min(wanted.get(c, 0), n) for c, n in class_sizes.items()}


def make_split(
    labels: torch.Tensor,
    tasks: list[list[int]],
    seed: int,
    pretrain_classes: list[int],
    pretrain_fraction: float | None = 0.5,
    pretrain_num_samples: int | None = None,
    val_fraction: float = 0.1,
    *,
    num_classes: int,
) -> Split:
    members = {c: torch.nonzero(labels == c).flatten() for c in range(num_classes)}
    members = {c: m[torch.randperm(len(m), generator=class_generator(seed, c))] for c, m in members.items()}
    n_val = {c: round(val_fraction * len(m)) for c, m in members.items()}
    n_pretrain = pretrain_counts(
        {c: len(m) - n_val[c] for c, m in members.items()}, pretrain_classes, pretrain_fraction, pretrain_num_samples
    )
    per_class = {}
    for c, m in members.items():
        val, rest = m[: n_val[c]], m[n_val[c] :]
        per_class[c] = ClassSplit(val=val, pretrain_train=rest[: n_pretrain[c]], task_train=rest[n_pretrain[c] :])
    return Split(classes=per_class, tasks=[list(t) for t in tasks], pretrain_classes=sorted(pretrain_classes))
