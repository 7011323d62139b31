"""Strategies that merge task vectors τ_i = θ_i − θ0, with their knob picked on validation data only."""

import logging

from music.experiment import Experiment
from music.merging import TaskVector, task_arithmetic as task_arithmetic_kernel

log = logging.getLogger(__name__)


def task_vectors(exp: Experiment) -> tuple[dict, list[TaskVector]]:
    theta0 = exp.theta0()
    return theta0, [TaskVector.between(theta0, exp.finetuned(i)) for i in range(len(exp.tasks))]


def task_arithmetic(exp: Experiment) -> dict:
    """θ0 + λ·Σ τ_i over the λ grid; λ is the grid point with the best validation accuracy (smallest on ties)."""
    theta0, vectors = task_vectors(exp)
    curve, best = [], None
    for lam in exp.cfg.merge.lambdas:
        metrics = exp.evaluate(exp.load_net(task_arithmetic_kernel(vectors, float(lam)).apply_to(theta0)))
        curve.append({"lambda": float(lam), "val/acc": metrics["val/acc"], "test/acc": metrics["test/acc"]})
        if best is None or metrics["val/acc"] > best[1]["val/acc"]:
            best = (float(lam), metrics)
    lam, metrics = best
    log.info("task_arithmetic: λ=%g picked on validation (val/acc %.4f, test/acc %.4f)", lam, metrics["val/acc"], metrics["test/acc"])
    exp.log_table("task_arithmetic/lambda_curve", ["lambda", "val/acc", "test/acc"], [list(p.values()) for p in curve])
    oracle = max(p["test/acc"] for p in curve)
    return metrics | {"lambda": lam, "lambda_curve": curve, "test/acc_oracle_lambda": oracle}
