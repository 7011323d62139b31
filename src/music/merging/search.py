"""Step 2 of a merge: the search over every knob combination × λ on validation. Pure: it sees the method's inputs,
the grids and a scoring function, never the run."""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from music.merging.methods import Merged, MergeInputs, Method

Metrics = dict[str, float | None]


@dataclass(frozen=True)
class Pick:
    """The point validation picked: its knobs and λ, its figures, the merge's direction at its knobs, the whole curve."""

    point: dict
    metrics: Metrics
    direction: Merged
    curve: list[dict]

    @property
    def knobs(self) -> dict[str, float]:
        return {k: v for k, v in self.point.items() if k not in ("lambda", "val/acc", "test/acc")}


def search(
    method: Method,
    inputs: MergeInputs,
    grids: dict[str, list[float]],
    lambdas: list[float],
    score: Callable[[Merged, list[float]], list[Metrics]],
) -> Pick:
    """Each knob combination's direction scored at every λ (`score(direction, lambdas)`: the figures of θ0 + λ·direction
    per λ); the point with the highest val/acc wins, ties to the first (λ grids start at 0: θ0 wins ties)."""
    curve, best = [], None
    for values in itertools.product(*grids.values()):
        knobs = {name: float(v) for name, v in zip(grids, values)}
        direction = method.merge(inputs, knobs)
        for lam, metrics in zip(lambdas, score(direction, lambdas)):
            point = knobs | {"lambda": lam, "val/acc": metrics["val/acc"], "test/acc": metrics["test/acc"]}
            curve.append(point)
            if best is None or point["val/acc"] > best[0]["val/acc"]:
                best = (point, metrics, direction)
    return Pick(*best, curve)
