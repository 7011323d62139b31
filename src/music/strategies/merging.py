"""Strategies over task vectors τ_i = θ_i − θ0: merge them (any method of `merge.method`) or negate one.

Every knob (λ and the method's own, listed in merging/methods.py) is picked on validation data over its grid;
the test set is only reported (the whole curve, and the oracle point for contrast).
"""

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch.func import functional_call

from music.align.kernels import MASKED
from music.evaluation.metrics import restrict
from music.experiment import Experiment, stage_seed
from music.merging import TaskVector, kernels, stack
from music.merging.methods import METHODS, MergeInputs, knob_names
from music.merging.statistics import diagonal_fisher, linear_input_grams
from music.strategies.align import align
from music.strategies.finetuning import continual_method, sequential_states

log = logging.getLogger(__name__)

HEAD = "head."


def task_vectors(
    exp: Experiment, tasks: list[list[int]], include_head: bool = True, states: list[dict] | None = None
) -> tuple[dict, list[TaskVector]]:
    """θ0 and τ_i = θ_i − θ0 for the per-task fine-tunes of `tasks`, or for given `states` (MagMax: sequential stages)."""
    theta0 = exp.theta0
    exclude = () if include_head else (HEAD,)
    states = states if states is not None else [exp.finetuned(task) for task in tasks]
    return theta0, [TaskVector.between(theta0, state, exclude, exp.merge_keys) for state in states]


def diagnostics(tau: torch.Tensor) -> dict:
    """How the task vectors relate: pairwise cosine similarity and norms (interference shows up here)."""
    return {
        "diagnostics/cosine": kernels.cosine_similarity_matrix(tau).tolist(),
        "diagnostics/norms": tau.norm(dim=1).tolist(),
        "diagnostics/sign_conflict_fraction": kernels.sign_conflict_fraction(tau),
    }


@dataclass(frozen=True)
class EntropyData:
    """What AdaMerging reads: θ0, the network's logits as a function of (parameters, images, task index), and each
    task's unlabeled images."""

    theta0: dict[str, torch.Tensor]
    logits: Callable[[dict[str, torch.Tensor], torch.Tensor, int], torch.Tensor]
    images: list[torch.Tensor]


def statistics(exp: Experiment, kind: str | None, theta0: dict, vectors: list[TaskVector], method: str):
    """The per-task statistics a method estimates before merging (METHODS[…].statistics)."""
    cfg, tasks = exp.cfg.merge, exp.tasks
    if kind is None:
        return None
    if kind == "entropy":  # each task's validation images, their labels never read: AdaMerging's unlabeled data
        net, masks = (
            exp.load_net(theta0).eval(),
            exp.task_masks(),
        )  # per-task heads: the task id says which classes score

        def logits(params, x, k):
            return restrict(functional_call(net, params, (x,)), masks[k].expand(len(x), -1), fill=MASKED)

        return EntropyData(theta0, logits, exp.task_val_images())
    samples = [exp.unlabeled_images(task, cfg.num_samples, method) for task in tasks]
    if kind == "fisher":
        names = list(vectors[0].deltas)
        generator = torch.Generator().manual_seed(stage_seed(exp.cfg.seed, "fisher"))
        return torch.stack(
            [diagonal_fisher(exp.load_net(exp.finetuned(t)), x, names, generator) for t, x in zip(tasks, samples)]
        )
    if kind == "grams":
        return [linear_input_grams(exp.load_net(exp.finetuned(t)), x) for t, x in zip(tasks, samples)]
    raise ValueError(f"unknown statistics {kind!r}")


def merge(exp: Experiment) -> dict:
    """θ0 + λ·merge(τ_1..τ_T) with `merge.method` (METHODS); every knob combination × λ is evaluated on validation.
    Methods that need the task id at test give one direction per task, and each image of a task's classes is
    predicted by θ0 + λ·direction_t (like `individual`)."""
    cfg = exp.cfg.merge
    method = METHODS[cfg.method]
    per_task = exp.head == "per_task"  # each task keeps its own head: merge the feature extractor only
    # MagMax merges the sequential stages' θ_t − θ0 (under the configured continual method), the rest the per-task fine-tunes
    stages = sequential_states(exp, continual_method(exp)) if method.vectors == "sequential" else None
    theta0, vectors = task_vectors(exp, exp.tasks, cfg.include_head and not per_task, stages)
    if per_task:
        theta0 = exp.with_task_heads(theta0)
    start = time.perf_counter()
    inputs = MergeInputs(
        vectors=vectors,
        tau=stack(vectors),
        stats=statistics(exp, method.statistics, theta0, vectors, cfg.method),
        options=OmegaConf.to_container(cfg, resolve=True),
        seeded=lambda purpose: torch.Generator().manual_seed(stage_seed(exp.cfg.seed, purpose)),
    )
    statistics_s = time.perf_counter() - start
    names = knob_names(cfg.method, cfg.get("base"))
    lambdas = [float(lam) for lam in cfg.lambdas]
    curve, best = [], None
    default = exp.predictions(exp.model(theta0)) if method.task_id else None  # images of no task: θ0's predictions
    # a task-id method's model for task t re-estimates its BatchNorm statistics on task t's images (drawn once)
    routed_images = (
        [exp.batchnorm_images_of([task]) if exp.recomputes_batchnorm else None for task in exp.tasks]
        if method.task_id
        else None
    )
    for values in itertools.product(*(cfg[name] for name in names)):
        knobs = {name: float(v) for name, v in zip(names, values)}
        direction = method.merge(inputs, knobs)
        if method.task_id:  # one direction per task: routed by the task id
            along = [exp.predictions_along(theta0, d, lambdas, images) for d, images in zip(direction, routed_images)]
            path = [exp.routed(default, [preds[i] for preds in along]) for i in range(len(lambdas))]
        else:
            path = exp.predictions_along(theta0, direction, lambdas)
        for lam, preds in zip(lambdas, path):
            metrics = exp.metrics(preds)
            point = knobs | {"lambda": lam, "val/acc": metrics["val/acc"], "test/acc": metrics["test/acc"]}
            curve.append(point)
            if best is None or point["val/acc"] > best[0]["val/acc"]:
                best = (point, metrics, direction)
    exp.timings |= {"merge/statistics": statistics_s, "merge/search": time.perf_counter() - start - statistics_s}
    point, metrics, direction = best
    picked = {name: point[name] for name in names}
    knobs = "".join(f", {name}={value:g}" for name, value in picked.items())
    log.info(
        "%s: picked λ=%g%s on validation (val/acc %.4f, test/acc %.4f)",
        cfg.method,
        point["lambda"],
        knobs,
        point["val/acc"],
        point["test/acc"],
    )
    # θ0 itself: λ = 0 was picked (no grid point beat θ0 on validation; ties go to the first point), or the merge is zero
    zero = all(not delta.any() for d in (direction if method.task_id else [direction]) for delta in d.deltas.values())
    collapsed = point["lambda"] == 0 or zero
    if collapsed:
        log.warning(
            "%s collapsed to θ0: %s, so the merged model is θ0 itself",
            cfg.method,
            "its direction is zero" if zero else "λ=0 was picked on validation",
        )
    exp.log_table(f"{cfg.method}/lambda_curve", list(curve[0]), [list(p.values()) for p in curve])
    report = diagnostics(inputs.tau)
    if "ties" in (cfg.method, cfg.get("base")) and cfg.method in (
        "ties",
        "dare",
    ):  # conflicts TIES resolves: among the coordinates it keeps
        report["diagnostics/sign_conflict_fraction"] = kernels.sign_conflict_fraction(
            kernels.trim(inputs.tau, picked["keep_fraction"])
        )
    if exp.cfg.align.method != "none":
        start = time.perf_counter()
        aligned, figures = align(
            exp, exp.merged_model(direction.apply_to(theta0, point["lambda"]), theta0).cpu()
        )  # alignment computes on the CPU
        exp.timings["align"] = time.perf_counter() - start
        before = {f"{split}/acc_before_align": metrics[f"{split}/acc"] for split in ("val", "test")}
        metrics = exp.evaluate(aligned) | before | figures
        log.info(
            "%s: test/acc %.4f before alignment, %.4f after; KL %.4f -> %.4f",
            exp.cfg.align.method,
            before["test/acc_before_align"],
            metrics["test/acc"],
            figures["align/kl_before"],
            figures["align/kl_after"],
        )
    return (
        metrics
        | picked
        | report
        | {
            "merge_method": cfg.method,
            # re-estimating BatchNorm statistics reads unlabeled task images: a data-free method is no longer data-free
            "merge/data": "unlabeled" if method.data == "none" and exp.recomputes_batchnorm else method.data,
            "merge/task_id": method.task_id,
            "lambda": point["lambda"],
            "merge/collapsed_to_theta0": collapsed,
            "lambda_curve": curve,
            "test/acc_oracle_lambda": max(p["test/acc"] for p in curve),
            "merge/points": len(curve),
        }
    )


def negation(exp: Experiment) -> dict:
    """θ0 − λ·τ_target: forget the target classes. λ minimises target accuracy on validation among the λ that
    keep ≥ `negation.control_floor` of θ0's validation accuracy on every other class (λ = 0 always qualifies)."""
    cfg = exp.cfg.negation
    target = sorted(cfg.target)
    groups = [target, [c for c in range(exp.num_classes) if c not in target]]
    theta0, (tau,) = task_vectors(exp, [target], exp.cfg.merge.include_head)
    lambdas = sorted({0.0, *map(float, exp.cfg.merge.lambdas)})
    curve, runs = [], {}
    for lam, preds in zip(lambdas, exp.predictions_along(theta0, -tau, lambdas)):
        scores = exp.metrics(preds, groups)
        curve.append(
            {"lambda": lam}
            | {
                f"{s}/{name}_acc": scores[f"{s}/acc_task_{i}"]
                for s in ("val", "test")
                for i, name in enumerate(("target", "control"))
            }
        )
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
