"""Mask-based merge kernels over the stacked task vectors `tau` (T×P, one row per task).

TALL masks and Consensus merging (Wang et al., ICML 2024), EMR-Merging (Huang et al., NeurIPS 2024),
PCB-merging (Du et al., NeurIPS 2024) and Model Breadcrumbs (Davari & Belilovsky, ECCV 2024). Each mirrors
its authors' code; the file read is named in the docstring. Kernels ending in `_task_vectors` return one
vector per task (T×P): the model for task t is θ0 + row t, which needs the task id at test time.
"""

import itertools

import torch
from torch import Tensor

from music.merging.kernels import task_arithmetic


def _per_task(values: float | list[float] | Tensor, tau: Tensor) -> Tensor:
    """A scalar or a length-T sequence as a T×1 (or 1×1) column matching tau's dtype and device."""
    return torch.as_tensor(values, dtype=tau.dtype, device=tau.device).reshape(-1, 1)


def _runs(sizes: list[int] | None, width: int) -> list[tuple[int, int]]:
    """Consecutive equal segment sizes as (size, count); one segment of `width` when sizes is None."""
    if sizes is None:
        return [(width, 1)]
    if sum(sizes) != width:
        raise ValueError(f"layer sizes sum to {sum(sizes)}, the task vectors have {width} entries")
    return [(size, len(list(group))) for size, group in itertools.groupby(sizes)]


def tall_masks(tau: Tensor, lambdas: float | list[float] | Tensor, multi_task: Tensor | None = None) -> Tensor:
    """TALL masks (Wang et al., 2024): m_t = |τ_t| > λ_t·|τ_MTL − τ_t|, a T×P bool tensor.

    Keeps the coordinates where θ_t is farther from θ0 than from the multi-task model θ0 + τ_MTL. τ_MTL is
    the task-arithmetic sum Σ τ_t by default, as in the authors' code (nik-dim/tall_masks,
    src/eval/aggregation.py, `use_ties: false` in config/method/tall_mask.yaml); pass `multi_task` to use
    another (their TIES variant). The inequality is strict as in src/utils/tallmask_utils.py
    (`generate_task_masks`). λ_t is picked per task on that task's validation accuracy from
    {0.2, 0.3, 0.4, 0.5, 0.6} (`construct_tall_mask`, `find_optimal_mask`); `lambdas` is a float or one per task.
    """
    merged = task_arithmetic(tau) if multi_task is None else multi_task
    return tau.abs() > _per_task(lambdas, tau) * (merged - tau).abs()


def tall_task_vectors(tau: Tensor, lambdas: float | list[float] | Tensor, multi_task: Tensor | None = None) -> Tensor:
    """TALL-mask task vectors m_t ⊙ τ_MTL (T×P): task t's model is θ0 + row t (task id at test).

    The authors add them with coefficient 1 (src/eval/eval.py: `scaling_coef=1.0` whenever masks are given),
    so no global λ is searched; only the per-task λ_t of the masks.
    """
    merged = task_arithmetic(tau) if multi_task is None else multi_task
    return tall_masks(tau, lambdas, merged) * merged


def consensus(
    tau: Tensor, lambdas: float | list[float] | Tensor, k: int = 2, multi_task: Tensor | None = None
) -> Tensor:
    """Consensus merging (Wang et al., 2024): τ_MTL where at least k TALL masks keep the coordinate, else 0.

    Consensus TA by default (τ_MTL = Σ τ_t); pass a TIES vector as `multi_task` for Consensus TIES. k = 2
    drops both "catastrophic" weights (kept by no task) and "selfish" ones (kept by one); k = 0 gives τ_MTL,
    k > T gives 0 (nik-dim/tall_masks: config/method/consensus.yaml `prun_thre_k: 2`,
    src/utils/tallmask_utils.py `construct_consensus_mask`). The authors' masks use the per-task λ_t chosen for
    TALL (this project searches one shared value); the caller then searches the global λ, which the authors take from
    {0.1, 0.2, …, 1.0}.
    """
    merged = task_arithmetic(tau) if multi_task is None else multi_task
    return merged * (tall_masks(tau, lambdas, merged).sum(dim=0) >= k)


def emr(tau: Tensor, sizes: list[int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """EMR-Merging (Huang et al., 2024): (τ_uni of size P, masks T×P bool, rescalers of size T).

    Elect: σ = sign(Σ τ_t), and per coordinate the largest |τ_t| among the tasks whose sign agrees with σ, so
    τ_uni = σ·ε. Mask: m_t = (τ_t·σ > 0). Rescale: r_t = Σ_l mean_l|τ_t| / Σ_l mean_l|m_t ⊙ τ_uni|, a sum
    over parameter tensors l of their means (harveyhuang18/EMR_Merging, merge_vit/src/main_emr_merging.py,
    `emr_merge`); pass the layer sizes in flat order as `sizes` to mirror it, or the whole row is one tensor.
    No hyperparameter and no λ: task t's model is θ0 + r_t·m_t ⊙ τ_uni (`emr_task_vectors`; task id at test).
    Where Σ τ_t is exactly 0, σ = −1, as in the original and in fusion_bench's port. A task with no coordinate
    agreeing with σ gets r_t = 0 instead of the original's 0/0 (its masked vector is 0 either way).
    """
    sign = torch.where(tau.sum(dim=0) > 0, 1.0, -1.0).to(tau.dtype)
    masks = tau * sign > 0
    unified = sign * (tau.abs() * masks).amax(dim=0)
    weight = torch.cat(
        [
            torch.full((size * count,), 1 / size, dtype=tau.dtype, device=tau.device)
            for size, count in _runs(sizes, tau.shape[1])
        ]
    )
    kept = (masks * unified.abs() * weight).sum(dim=1)
    total = (tau.abs() * weight).sum(dim=1)
    rescalers = torch.where(kept > 0, total / kept.clamp(min=torch.finfo(tau.dtype).tiny), torch.zeros_like(total))
    return unified, masks, rescalers


def emr_task_vectors(tau: Tensor, sizes: list[int] | None = None) -> Tensor:
    """EMR task vectors r_t·m_t ⊙ τ_uni (T×P): task t's model is θ0 + row t, added with coefficient 1."""
    unified, masks, rescalers = emr(tau, sizes)
    return rescalers[:, None] * masks * unified


def _minmax(x: Tensor) -> Tensor:
    """Each row rescaled to [0, 1]; a constant row becomes 0 (the authors' code would give 0/0)."""
    low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    span = high - low
    return torch.where(span > 0, (x - low) / span.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def _clamp_to_ranks(x: Tensor, low_fraction: float, high_fraction: float) -> Tensor:
    """Each row clamped to its sorted entries at 0-based ranks int(P·low) and int(P·(1 − high) − 1).

    The rank rule is the authors' `clamp` (duguodong7/pcb-merging) kept exactly, off-by-one included: even
    with high = 0.01 and P < 100 the largest entry is lowered to the second largest.
    """
    width = x.shape[1]
    low = x.kthvalue(int(width * low_fraction) + 1, dim=1, keepdim=True).values
    high = x.kthvalue(int(width * (1 - high_fraction) - 1) + 1, dim=1, keepdim=True).values
    return torch.clamp(x, low, high)


def pcb(tau: Tensor, ratio: float = 0.05, clip: float = 0.01) -> Tensor:
    """PCB-merging (Du et al., 2024) without its evolutionary search: a P-vector, to be scaled by λ.

    As `task_para_att_merge` in duguodong7/pcb-merging (nlp_source_code/utils/merge_utils.py; the same as
    `PCB_merge` in pcb-merging.py, which clips 0.0001 instead of 0.01), per task row:
    1. clip |τ_t| to its `clip` and 1 − `clip` quantiles (outliers) giving τ̃_t = sign(τ_t)·clipped |τ_t|;
    2. intra-balancing exp(T·minmax(clipped |τ_t|)²) — the paper's softmax over the row up to a per-row
       constant, which step 4's min-max cancels;
    3. inter-balancing tanh(Σ_j τ_t ⊙ τ_j) on the raw τ (the paper sums a normalised pairwise term over j;
       the vision scripts pcb.py and pcb_ES.py each use yet another variant);
    4. score β_t = intra·inter; drop: every β below the row's (1 − `ratio`) quantile is raised to it, and the
       row's min-max then gives weights w_t of 0 there and in (0, 1] on the kept top `ratio` of the row;
    5. merge: Σ_t w_t ⊙ τ̃_t / max(Σ_t w_t, 1e-12), a score-weighted mean.
    The authors scale the result by λ (1.2 for ViTs in vision_source_code/pcb.py; 0.8–2.2 searched for T5 in
    run_merging.sh) and use ratio 0.05 for ViTs (pcb.py, pcb_ES.py) and 0.05/0.1/0.2 for T5 (run_merging.sh).
    """
    magnitude = _clamp_to_ranks(tau.abs(), clip, clip)
    clipped = torch.sign(tau) * magnitude
    intra = torch.exp(tau.shape[0] * _minmax(magnitude) ** 2)
    inter = torch.tanh(tau * tau.sum(dim=0))
    weights = _minmax(_clamp_to_ranks(intra * inter, 1 - ratio, 0.0))
    return (weights * clipped).sum(dim=0) / weights.sum(dim=0).clamp(min=1e-12)


def breadcrumbs(
    tau: Tensor, keep_fraction: float = 0.15, drop_top_fraction: float = 0.006, sizes: list[int] | None = None
) -> Tensor:
    """Model Breadcrumbs (Davari & Belilovsky, 2024): each τ_t masked to a middle band of |τ_t|, T×P.

    Per task and per segment of n entries, sorted by |τ_t| descending: the largest int(n·drop_top_fraction)
    (outliers) are dropped, the next int(n·keep_fraction) kept, the rest (the small bottom) dropped; so
    `keep_fraction` is the density of the result, not the bottom fraction removed. In the authors' code
    (rezazzr/breadcrumbs, src/task_vectors.py `TaskVectorMiddleKeep`) these are `top_k_keep` = β and
    `top_k_remove` = γ, applied along the last dimension of every parameter (per row of a weight matrix);
    defaults β = 0.15, γ = 0.006, λ = 0.2 are their search's starting point, searched over β ∈ [0.05, 0.2],
    γ ∈ [0.001, 0.01], λ ∈ [0.01, 1] (find_best_hyperparam.py, `middle_keep`). `sizes` gives the segment
    sizes in flat order — layer sizes as in the paper, or row lengths to match their code; without it the
    whole row is one segment. The caller sums the rows (task arithmetic) and scales by λ.
    """
    masked, start = torch.zeros_like(tau), 0
    # equal-sized neighbours (the rows of one matrix, repeated layer shapes) are masked together as a batch
    for size, count in _runs(sizes, tau.shape[1]):
        stop = start + size * count
        block = tau[:, start:stop].reshape(tau.shape[0], count, size)
        first = int(size * drop_top_fraction)
        last = min(size, first + int(size * keep_fraction))
        kept = block.abs().topk(last, dim=2).indices[..., first:]
        band = torch.zeros_like(block).scatter_(2, kept, block.gather(2, kept))
        masked[:, start:stop] = band.reshape(tau.shape[0], -1)
        start = stop
    return masked
