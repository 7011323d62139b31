"""Task negation (Ilharco et al., ICLR 2023): θ0 − λ·τ_target forgets the target classes."""

import logging
from dataclasses import dataclass
from typing import Annotated

from music.experiment import Run
from music.merging.gather import task_vectors
from music.merging.models import MergedModels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NegationSettings:
    """`negation` in configs/experiment/negation.yaml (music.settings; the target's classes are checked against the
    dataset's)."""

    target: list[int]
    control_floor: Annotated[float, "(0, 1]"] = 0.95  # of θ0's validation accuracy on the other classes, kept


def negation(run: Run) -> dict:
    """θ0 − λ·τ_target: forget the target classes. λ minimises target accuracy on validation among the λ that
    keep ≥ `negation.control_floor` of θ0's validation accuracy on every other class (λ = 0 always qualifies)."""
    ctx, cfg, evaluation = run.ctx, run.ctx.cfg.negation, run.evaluation
    models = MergedModels(run)
    target = sorted(cfg.target)
    groups = [target, [c for c in range(ctx.num_classes) if c not in target]]
    theta0, (tau,) = task_vectors(run, [target], models.merge_keys, ctx.cfg.merge.include_head)
    lambdas = sorted({0.0, *map(float, ctx.cfg.merge.lambdas)})
    curve, runs = [], {}
    for lam, preds in zip(lambdas, models.predictions_along(theta0, -tau, lambdas)):
        scores = evaluation.metrics(preds, groups)
        names = ("target", "control")
        accuracies = {
            f"{s}/{name}_acc": scores[f"{s}/acc_task_{i}"] for s in ("val", "test") for i, name in enumerate(names)
        }
        curve.append({"lambda": lam} | accuracies)
        runs[lam] = preds
    before = curve[0]  # λ = 0: θ0 itself
    floor = cfg.control_floor * before["val/control_acc"]
    point = min((p for p in curve if p["val/control_acc"] >= floor), key=lambda p: (p["val/target_acc"], p["lambda"]))
    log.info(
        "negation of %s: λ=%g, test target acc %.4f -> %.4f, control %.4f -> %.4f",
        target,
        point["lambda"],
        before["test/target_acc"],
        point["test/target_acc"],
        before["test/control_acc"],
        point["test/control_acc"],
    )
    if point["lambda"] == 0:
        log.warning(
            "negation collapsed to θ0: no λ kept the control classes' floor while lowering the target's accuracy"
        )
    ctx.log_table("negation/lambda_curve", list(curve[0]), [list(p.values()) for p in curve])
    return evaluation.metrics(runs[point["lambda"]]) | {
        "negation/target": target,
        "lambda": point["lambda"],
        "merge/collapsed_to_theta0": point["lambda"] == 0,
        "lambda_curve": curve,
        "val/control_acc_floor": floor,
        **{f"{k}_before": v for k, v in before.items() if k != "lambda"},
        **{k: v for k, v in point.items() if k != "lambda"},
    }
