"""The merge strategy, as a pipeline of plain values: gather (θ0, task vectors, the statistics the method table
names) → search knobs × λ on validation → the merged model (BatchNorm re-estimated) → optional alignment → metrics.
Every knob is picked on validation data; the test set is only reported (the whole curve, the oracle point)."""

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from omegaconf import OmegaConf

from music.align.step import align
from music.experiment import Run
from music.merging import kernels
from music.merging.gather import method_vectors, statistics
from music.merging.methods import METHODS, MergeInputs, knob_names
from music.merging.models import MergedModels
from music.merging.search import search
from music.merging.task_vector import stack
from music.settings import Positive

log = logging.getLogger(__name__)

Finite = Annotated[float, "(-inf, inf)"]


@dataclass(frozen=True)
class MergeSettings:
    """What every configs/merge/<method>.yaml has (music.settings); a method's own knobs and options are declared in
    its table entry (merging/methods.py), its name and the cross-group rules in config.py."""

    lambdas: list[Finite]  # the λ grid, searched on validation (non-empty)
    include_head: bool = True
    num_samples: Positive = 256  # unlabeled training images per task for statistics and BatchNorm re-estimation
    batchnorm: Literal["recompute", "merge"] = "recompute"


def diagnostics(tau, kept=None) -> dict:
    """How the task vectors relate: pairwise cosine similarity, norms, and the fraction of coordinates whose signs
    conflict (among `kept`, the coordinates the method keeps, where its table entry says which)."""
    return {
        "diagnostics/cosine": kernels.cosine_similarity_matrix(tau).tolist(),
        "diagnostics/norms": tau.norm(dim=1).tolist(),
        "diagnostics/sign_conflict_fraction": kernels.sign_conflict_fraction(tau if kept is None else kept),
    }


def merge(run: Run) -> dict:
    """θ0 + λ·merge(τ_1..τ_T) with `merge.method` (METHODS). Methods that need the task id at test give one direction
    per task, and each image of a task's classes is predicted by θ0 + λ·direction_t (like `individual`)."""
    ctx, cfg = run.ctx, run.ctx.cfg.merge
    method, models = METHODS[cfg.method], MergedModels(run)
    per_task = ctx.head == "per_task"  # each task keeps its own head: merge the feature extractor only
    theta0, vectors = method_vectors(run, method, models.merge_keys, cfg.include_head and not per_task)
    theta0 = run.artifacts.with_task_heads(theta0) if per_task else theta0
    start = time.perf_counter()
    stats = statistics(run, method, theta0, vectors, cfg.method)
    inputs = MergeInputs(vectors, stack(vectors), stats, OmegaConf.to_container(cfg, resolve=True), ctx.seeded)
    statistics_s = time.perf_counter() - start
    evaluation = run.evaluation

    if method.task_id:  # one direction per task, routed by the task id; images of no task: θ0's predictions
        default = evaluation.predictions(run.artifacts.model(theta0))
        # task t's model re-estimates its BatchNorm statistics on task t's images (drawn once)
        images = [models.batchnorm_images_of([t]) if models.recomputes_batchnorm else None for t in ctx.tasks]

        def score(directions, lambdas):
            along = [models.predictions_along(theta0, d, lambdas, x) for d, x in zip(directions, images)]
            return [evaluation.metrics(evaluation.routed(default, [p[i] for p in along])) for i in range(len(lambdas))]
    else:

        def score(direction, lambdas):
            return [evaluation.metrics(preds) for preds in models.predictions_along(theta0, direction, lambdas)]

    grids = {name: list(cfg[name]) for name in knob_names(cfg.method, cfg.get("base"))}
    pick = search(method, inputs, grids, [float(lam) for lam in cfg.lambdas], score)
    ctx.timings |= {"merge/statistics": statistics_s, "merge/search": time.perf_counter() - start - statistics_s}
    point, metrics, direction = pick.point, pick.metrics, pick.direction
    knobs = "".join(f", {name}={value:g}" for name, value in pick.knobs.items())
    log.info(
        "%s: picked λ=%g%s on validation (val/acc %.4f, test/acc %.4f)",
        cfg.method,
        point["lambda"],
        knobs,
        point["val/acc"],
        point["test/acc"],
    )
    # θ0 itself: λ = 0 was picked (no grid point beat θ0 on validation; ties go to the first point), or a zero merge
    zero = all(not delta.any() for d in (direction if method.task_id else [direction]) for delta in d.deltas.values())
    collapsed = point["lambda"] == 0 or zero
    if collapsed:
        why = "its direction is zero" if zero else "λ=0 was picked on validation"
        log.warning("%s collapsed to θ0: %s, so the merged model is θ0 itself", cfg.method, why)
    ctx.log_table(f"{cfg.method}/lambda_curve", list(pick.curve[0]), [list(p.values()) for p in pick.curve])
    report = diagnostics(inputs.tau, method.kept(inputs.tau, pick.knobs) if method.kept else None)
    if ctx.cfg.align.method != "none":
        start = time.perf_counter()
        merged = models.merged_model(direction.apply_to(theta0, point["lambda"]), theta0).cpu()  # aligned on the CPU
        aligned, figures = align(run, merged)
        ctx.timings["align"] = time.perf_counter() - start
        before = {f"{split}/acc_before_align": metrics[f"{split}/acc"] for split in ("val", "test")}
        metrics = evaluation.evaluate(aligned) | before | figures
        log.info(
            "%s: test/acc %.4f before alignment, %.4f after; KL %.4f -> %.4f",
            ctx.cfg.align.method,
            before["test/acc_before_align"],
            metrics["test/acc"],
            figures["align/kl_before"],
            figures["align/kl_after"],
        )
    elif ctx.head == "shared" and not method.task_id:  # the picked model's task-IL figures (the search scores class-IL)
        picked = models.merged_model(direction.apply_to(theta0, point["lambda"]), theta0)
        metrics = metrics | {k: v for k, v in evaluation.evaluate(picked).items() if "task_il" in k}
    return (
        metrics
        | pick.knobs
        | report
        | {
            "merge_method": cfg.method,
            # re-estimating BatchNorm statistics reads unlabeled task images: a data-free method is no longer data-free
            "merge/data": "unlabeled" if method.data == "none" and models.recomputes_batchnorm else method.data,
            "merge/task_id": method.task_id,
            "lambda": point["lambda"],
            "merge/collapsed_to_theta0": collapsed,
            "lambda_curve": pick.curve,
            "test/acc_oracle_lambda": max(p["test/acc"] for p in pick.curve),
            "merge/points": len(pick.curve),
        }
    )
