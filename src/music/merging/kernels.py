"""Merge kernels: pure functions from task vectors to one merged task vector."""

from collections.abc import Sequence

from music.merging.task_vector import TaskVector


def task_arithmetic(vectors: Sequence[TaskVector], lam: float) -> TaskVector:
    """λ·Σ τ_i (Ilharco et al., 2023)."""
    return sum(vectors) * lam
