"""Strategy name (the config's `strategy`) -> function(Experiment) -> metrics."""

from music.strategies.finetuning import individual, merged, pretrain, sequential
from music.strategies.merging import merge, negation

STRATEGIES = {
    "pretrain": pretrain,
    "merged": merged,
    "sequential": sequential,
    "individual": individual,
    "merge": merge,
    "negation": negation,
}

__all__ = ["STRATEGIES"]
