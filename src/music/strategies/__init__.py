"""Strategy name (the config's `strategy`) -> function(Run) -> metrics."""

from music.merging.negation import negation
from music.merging.strategy import merge
from music.strategies.finetuning import individual, merged, pretrain, sequential

STRATEGIES = {
    "pretrain": pretrain,
    "merged": merged,
    "sequential": sequential,
    "individual": individual,
    "merge": merge,
    "negation": negation,
}

__all__ = ["STRATEGIES"]
