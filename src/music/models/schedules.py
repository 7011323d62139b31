"""Learning-rate schedules stepped per optimizer step (finetune.scheduler_interval=step)."""

import math
from typing import Annotated

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int | None) -> float:
    """The factor of the base learning rate at optimizer step `step` (0-based), as task_vectors' `cosine_lr`: a linear
    warmup (step + 1) / warmup_steps, then a half cosine from 1 to 0 over the remaining steps (constant 1 after the
    warmup while the total is unknown)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


class WarmupCosine(LambdaLR):
    """Linear warmup then cosine decay, stepped per optimizer step. `total_steps` null: the stage's own number of
    optimizer steps, filled in by the Classifier (Lightning's estimated_stepping_batches)."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: Annotated[int, "[1, inf)"] = 500,
        total_steps: Annotated[int, "[1, inf)"] | None = None,
    ):
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        super().__init__(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
