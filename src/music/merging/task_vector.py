"""The one task-vector type: τ = θ_finetuned − θ0 over named parameters, with value semantics."""

from collections.abc import Mapping

import torch
from torch import Tensor

StateDict = Mapping[str, Tensor]


def _check_keys(expected, got, what: str) -> None:
    if set(expected) != set(got):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise KeyError(f"{what}: parameter names differ (missing {missing}, unexpected {extra})")


class TaskVector:
    """Parameter deltas keyed by name. Supports +, −, scalar *, sum() and `apply_to(θ0, λ)`."""

    def __init__(self, deltas: Mapping[str, Tensor]):
        self.deltas = dict(deltas)

    @classmethod
    def between(
        cls, pretrained: StateDict, finetuned: StateDict, exclude: tuple[str, ...] = (), keys: list[str] | None = None
    ) -> "TaskVector":
        """θ_finetuned − θ0 over `keys` (default: every floating-point entry; an integer buffer such as BatchNorm's
        num_batches_tracked is a count, never a direction), less those whose name starts with one of `exclude`."""
        _check_keys(pretrained, finetuned, "task vector")
        keys = [k for k in pretrained if pretrained[k].is_floating_point()] if keys is None else keys
        return cls({k: finetuned[k] - pretrained[k] for k in keys if not k.startswith(exclude)})

    def _zip(self, other: "TaskVector", op) -> "TaskVector":
        _check_keys(self.deltas, other.deltas, "task vector arithmetic")
        return TaskVector({k: op(v, other.deltas[k]) for k, v in self.deltas.items()})

    def __add__(self, other):
        if isinstance(other, int) and other == 0:  # lets sum(vectors) start from 0
            return self
        return self._zip(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other: "TaskVector") -> "TaskVector":
        return self._zip(other, torch.sub)

    def __neg__(self) -> "TaskVector":
        return TaskVector({k: -v for k, v in self.deltas.items()})

    def __mul__(self, scale: float) -> "TaskVector":
        return TaskVector({k: v * scale for k, v in self.deltas.items()})

    __rmul__ = __mul__

    def flatten(self) -> Tensor:
        """All deltas as one 1-D tensor, in this vector's parameter order."""
        return torch.cat([v.reshape(-1) for v in self.deltas.values()])

    def unflatten(self, flat: Tensor) -> "TaskVector":
        """A task vector with this one's names and shapes, filled from a 1-D tensor (the inverse of flatten)."""
        sizes = [v.numel() for v in self.deltas.values()]
        if flat.dim() != 1 or flat.numel() != sum(sizes):
            raise ValueError(f"unflatten: expected a 1-D tensor of {sum(sizes)} values, got shape {list(flat.shape)}")
        return TaskVector({k: part.view_as(v) for (k, v), part in zip(self.deltas.items(), flat.split(sizes))})

    def apply_to(self, pretrained: StateDict, scale: float = 1.0) -> dict[str, Tensor]:
        """θ0 + scale·τ; entries of θ0 that τ does not cover (an excluded head, buffers) are copied unchanged."""
        unknown = sorted(set(self.deltas) - set(pretrained))
        if unknown:
            raise KeyError(f"apply_to: task vector has parameters the model lacks: {unknown}")
        return {k: v + scale * self.deltas[k] if k in self.deltas else v.clone() for k, v in pretrained.items()}


def stack(vectors: list[TaskVector]) -> Tensor:
    """T task vectors with the same parameters as a T×P tensor (rows in the first vector's parameter order)."""
    names = list(vectors[0].deltas)
    for v in vectors[1:]:
        _check_keys(names, v.deltas, "stack")
    return torch.stack([torch.cat([v.deltas[k].reshape(-1) for k in names]) for v in vectors])
