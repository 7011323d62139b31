"""Strategies over task vectors τ_i = θ_i − θ0: merge them (any method of `merge.method`) or negate one.

Every knob (λ and the method's own: keep_fraction, p, alpha) is picked on validation data over its grid;
the test set is only reported (the whole curve, and the oracle point for contrast).
"""

import itertools
import logging
import time

import torch

from music.data.sources import NUM_CLASSES
from music.experiment import Experiment, stage_seed
from music.merging import TaskVector, kernels, stack
from music.merging.statistics import diagonal_fisher, linear_input_grams
from music.strategies.align import align

log = logging.getLogger(__name__)

# the knobs each method searches besides λ (DARE adds its base method's)
KNOBS = {"average": [], "task_arithmetic": [], "ties": ["keep_fraction"], "dare": ["p"], "fisher": [], "regmean": ["alpha"]}
DARE_BASES = ("task_arithmetic", "ties")
HEAD = "head."


def task_vectors(exp: Experiment, tasks: list[list[int]], include_head: bool = True) -> tuple[dict, list[TaskVector]]:
    theta0 = exp.theta0
    exclude = () if include_head else (HEAD,)
    return theta0, [TaskVector.between(theta0, exp.finetuned(task), exclude=exclude) for task in tasks]


def knob_names(merge_cfg) -> list[str]:
    names = list(KNOBS[merge_cfg.method])
    if merge_cfg.method == "dare":
        names += KNOBS[merge_cfg.base]
    return names


def diagnostics(tau: torch.Tensor) -> dict:
    """How the task vectors relate: pairwise cosine similarity and norms (interference shows up here)."""
    return {
        "diagnostics/cosine": kernels.cosine_similarity_matrix(tau).tolist(),
        "diagnostics/norms": tau.norm(dim=1).tolist(),
        "diagnostics/sign_conflict_fraction": kernels.sign_conflict_fraction(tau),
    }


class Merger:
    """Turns task vectors and knob values into a merged direction τ_merged (θ = θ0 + λ·τ_merged)."""

    def __init__(self, exp: Experiment, vectors: list[TaskVector], method: str, base: str | None = None):
        self.exp, self.vectors, self.method, self.base = exp, vectors, method, base
        self.tau = stack(vectors)
        self.template = vectors[0]
        self.stats = self._statistics()

    def _samples(self, task: list[int]) -> torch.Tensor:
        return self.exp.unlabeled_images(task, self.exp.cfg.merge.num_samples, self.method)

    def _statistics(self):
        tasks, exp = self.exp.tasks, self.exp
        if self.method == "fisher":
            names = list(self.template.deltas)
            generator = torch.Generator().manual_seed(stage_seed(exp.cfg.seed, "fisher"))
            return torch.stack([diagonal_fisher(exp.load_net(exp.finetuned(t)), self._samples(t), names, generator) for t in tasks])
        if self.method == "regmean":
            return [linear_input_grams(exp.load_net(exp.finetuned(t)), self._samples(t)) for t in tasks]
        return None

    def direction(self, knobs: dict) -> TaskVector:
        method, tau = self.method, self.tau
        if method == "dare":
            generator = torch.Generator().manual_seed(stage_seed(self.exp.cfg.seed, f"dare/p={knobs['p']}"))
            method, tau = self.base, kernels.dare(tau, knobs["p"], generator)
        if method == "regmean":
            return kernels.regmean(self.vectors, self.stats, knobs["alpha"])
        flat = {
            "task_arithmetic": lambda: kernels.task_arithmetic(tau),
            "average": lambda: kernels.average(tau),
            "ties": lambda: kernels.ties(tau, knobs["keep_fraction"]),
            "fisher": lambda: kernels.fisher_weighted(tau, self.stats),
        }[method]()
        return self.template.unflatten(flat)


def merge(exp: Experiment) -> dict:
    """θ0 + λ·merge(τ_1..τ_T) with `merge.method`; every knob combination × λ is evaluated on validation."""
    cfg = exp.cfg.merge
    per_task = exp.head == "per_task"  # each task keeps its own head: merge the feature extractor only
    theta0, vectors = task_vectors(exp, exp.tasks, cfg.include_head and not per_task)
    if per_task:
        theta0 = exp.with_task_heads(theta0)
    start = time.perf_counter()
    merger = Merger(exp, vectors, cfg.method, cfg.get("base"))
    statistics_s = time.perf_counter() - start
    names = knob_names(cfg)
    curve, best = [], None
    for values in itertools.product(*(cfg[name] for name in names)):
        knobs = {name: float(v) for name, v in zip(names, values)}
        direction = merger.direction(knobs)
        lambdas = [float(lam) for lam in cfg.lambdas]
        for lam, preds in zip(lambdas, exp.predictions_along(theta0, direction, lambdas)):
            metrics = exp.metrics(preds)
            point = knobs | {"lambda": lam, "val/acc": metrics["val/acc"], "test/acc": metrics["test/acc"]}
            curve.append(point)
            if best is None or point["val/acc"] > best[0]["val/acc"]:
                best = (point, metrics, direction)
    exp.timings |= {"merge/statistics": statistics_s, "merge/search": time.perf_counter() - start - statistics_s}
    point, metrics, direction = best
    picked = {name: point[name] for name in names}
    knobs = "".join(f", {name}={value:g}" for name, value in picked.items())
    log.info("%s: picked λ=%g%s on validation (val/acc %.4f, test/acc %.4f)", cfg.method, point["lambda"], knobs, point["val/acc"], point["test/acc"])
    collapsed = point["lambda"] == 0  # θ0 + 0·τ: no grid point beat θ0 on validation (ties go to the first point)
    if collapsed:
        log.warning("%s collapsed to θ0: λ=0 was picked on validation, so the merged model is θ0 itself", cfg.method)
    exp.log_table(f"{cfg.method}/lambda_curve", list(curve[0]), [list(p.values()) for p in curve])
    report = diagnostics(merger.tau)
    if "keep_fraction" in picked:  # conflicts TIES resolves: among the coordinates it keeps
        report["diagnostics/sign_conflict_fraction"] = kernels.sign_conflict_fraction(kernels.trim(merger.tau, picked["keep_fraction"]))
    if exp.cfg.align.method != "none":
        start = time.perf_counter()
        aligned, figures = align(exp, exp.model(direction.apply_to(theta0, point["lambda"])))
        exp.timings["align"] = time.perf_counter() - start
        before = {f"{split}/acc_before_align": metrics[f"{split}/acc"] for split in ("val", "test")}
        metrics = exp.evaluate(aligned) | before | figures
        log.info("%s: test/acc %.4f before alignment, %.4f after; KL %.4f -> %.4f", exp.cfg.align.method,
                 before["test/acc_before_align"], metrics["test/acc"], figures["align/kl_before"], figures["align/kl_after"])
    return metrics | picked | report | {
        "merge_method": cfg.method,
        "lambda": point["lambda"],
        "merge/collapsed_to_theta0": collapsed,
        "lambda_curve": curve,
        "test/acc_oracle_lambda": max(p["test/acc"] for p in curve),
        "merge/points": len(curve),
    }


def negation(exp: Experiment) -> dict:
    """θ0 − λ·τ_target: forget the target classes. λ minimises target accuracy on validation among the λ that
    keep ≥ `negation.control_floor` of θ0's validation accuracy on every other class (λ = 0 always qualifies)."""
    cfg = exp.cfg.negation
    target = sorted(cfg.target)
    groups = [target, [c for c in range(NUM_CLASSES) if c not in target]]
    theta0, (tau,) = task_vectors(exp, [target], exp.cfg.merge.include_head)
    lambdas = sorted({0.0, *map(float, exp.cfg.merge.lambdas)})
    curve, runs = [], {}
    for lam, preds in zip(lambdas, exp.predictions_along(theta0, -tau, lambdas)):
        scores = exp.metrics(preds, groups)
        curve.append({"lambda": lam} | {f"{s}/{name}_acc": scores[f"{s}/acc_task_{i}"] for s in ("val", "test") for i, name in enumerate(("target", "control"))})
        runs[lam] = preds
    before = curve[0]  # λ = 0: θ0 itself
    floor = cfg.control_floor * before["val/control_acc"]
    point = min((p for p in curve if p["val/control_acc"] >= floor), key=lambda p: (p["val/target_acc"], p["lambda"]))
    log.info("negation of %s: λ=%g, test target acc %.4f -> %.4f, control %.4f -> %.4f", target, point["lambda"],
             before["test/target_acc"], point["test/target_acc"], before["test/control_acc"], point["test/control_acc"])
    if point["lambda"] == 0:
        log.warning("negation collapsed to θ0: no λ kept the control classes' floor while lowering the target's accuracy")
    exp.log_table("negation/lambda_curve", list(curve[0]), [list(p.values()) for p in curve])
    return exp.metrics(runs[point["lambda"]]) | {
        "negation/target": target,
        "lambda": point["lambda"],
        "merge/collapsed_to_theta0": point["lambda"] == 0,
        "lambda_curve": curve,
        "val/control_acc_floor": floor,
        **{f"{k}_before": v for k, v in before.items() if k != "lambda"},
        **{k: v for k, v in point.items() if k != "lambda"},
    }
