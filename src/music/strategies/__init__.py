"""Strategy name (the config's `strategy`) -> function(Experiment) -> metrics."""

from music.strategies.finetuning import individual, merged, pretrain, sequential
from music.strategies.merging import task_arithmetic

STRATEGIES = {
    "pretrain": pretrain,
    "merged": merged,
    "sequential": sequential,
    "individual": individual,
    "task_arithmetic": task_arithmetic,
}

__all__ = ["STRATEGIES"]
