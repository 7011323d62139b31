"""Spectral merge kernels: pure functions over ONE layer's stacked task matrices.

Matrix kernels take `taus` (T×m×n: the T tasks' deltas of one weight matrix; a conv weight is reshaped to
2-D by the caller) and return the merged m×n delta before any global λ, which the caller searches on
validation. Vector kernels (`*_vector`) take T×P (biases, norms, other non-matrix parameters) and do what
each method's reference code does with them. Outputs keep the input dtype; SVDs run in at least float32.
"""

import torch
from torch import Tensor

from music.merging.kernels import regmean_linear


def _working(taus: Tensor) -> Tensor:
    # linalg.svd has no half-precision kernels, and float64 inputs should stay float64
    return taus.to(torch.promote_types(taus.dtype, torch.float32))


def polar(a: Tensor) -> Tensor:
    """The orthogonal polar factor P Qᵀ of a = P Σ Qᵀ: the matrix with orthonormal columns (or rows, if a is
    wide) nearest to a in Frobenius norm."""
    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def tsv_merge(taus: Tensor, keep_fraction: float | None = None) -> Tensor:
    """TSV-Merge (Gargiulo et al., "Task Singular Vectors", CVPR 2025) of one layer.

    Each τ_i = U_i S_i V_iᵀ keeps its top k singular triplets, k = ⌊r/T⌋ with r = min(m, n) (the authors'
    `sv_reduction = 1/T`) or ⌊r·keep_fraction⌋; the kept U's and V's are concatenated, each replaced by its
    polar factor, and the layer is rebuilt with the concatenated singular values: polar(U) diag(s) polar(V)ᵀ.
    Equal to the authors' zero-padded layout (AntoAndGar/task_singular_vectors, src/utils/TSVM_utils.py,
    `compute_and_sum_svd_mem_reduction`), which differs only in placing the T·k columns inside r slots.
    keep_fraction = 1 is their "lossless" variant. Unlike theirs, k is at least 1, so a layer with r < T
    (where they keep nothing and return 0) keeps each task's top direction.
    The authors scale the whole merged vector by α ∈ linspace(0, 3, 31)[1:] chosen on validation.
    """
    work = _working(taus)
    count, m, n = work.shape
    rank = min(m, n)
    k = max(1, rank // count if keep_fraction is None else int(rank * keep_fraction))
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    u_cat = u[:, :, :k].permute(1, 0, 2).reshape(m, count * k)
    vh_cat = vh[:, :k, :].reshape(count * k, n)
    merged = (polar(u_cat) * s[:, :k].reshape(-1)) @ polar(vh_cat)
    return merged.to(taus.dtype)


def tsv_merge_vector(taus: Tensor) -> Tensor:
    """TSV-Merge on a non-matrix parameter: the mean τ_i (same source as `tsv_merge`)."""
    return taus.mean(dim=0)


def iso_c(taus: Tensor) -> Tensor:
    """Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging", ICML 2025) of one layer.

    M = Σ τ_i (the sum, not the mean) = U S Vᵀ; every singular value is replaced by mean(S) over all
    r = min(m, n) of them, so the result is mean(S)·U Vᵀ and keeps M's nuclear norm Σ s_j
    (danielm1405/iso-merging, src/utils/iso.py, `iso_c`). The authors scale by α ∈ linspace(0, 3, 31)[1:]
    chosen on validation (src/eval/eval.py).
    """
    u, s, vh = torch.linalg.svd(_working(taus).sum(dim=0), full_matrices=False)
    return (s.mean() * (u @ vh)).to(taus.dtype)


def iso_cts(taus: Tensor, common_fraction: float = 0.8) -> Tensor:
    """Iso-CTS (Marczak et al., ICML 2025, same source as `iso_c`, function `iso_cts`) of one layer.

    Of the r = min(m, n) directions, T·d go to the tasks and c = r − T·d to the common subspace, with
    d = round((r − ⌊r·common_fraction⌋)/T) (the authors' rounding so the task part divides evenly; default
    fraction 0.8 from their config/method/iso_cts.yaml; here d is also capped at ⌊r/T⌋ so c ≥ 0). The
    common part is the top c singular triplets of M = Σ τ_i; each task contributes the top d triplets of
    its residual (I − U_c U_cᵀ) τ_i (projected off the common left subspace only, as the authors do). The
    concatenated U's and V's are replaced by their polar factors and every singular value by the mean of
    the concatenated ones: mean(s)·polar(U) polar(V)ᵀ. Scaled by α on validation like Iso-C.
    """
    work = _working(taus)
    count, m, n = work.shape
    rank = min(m, n)
    per_task = min(round((rank - int(rank * common_fraction)) / count), rank // count)
    common = rank - count * per_task
    u, s, vh = torch.linalg.svd(work.sum(dim=0), full_matrices=False)
    u_common = u[:, :common]
    residual = work - u_common @ (u_common.T @ work)
    ut, st, vht = torch.linalg.svd(residual, full_matrices=False)
    u_cat = torch.cat([u_common, ut[:, :, :per_task].permute(1, 0, 2).reshape(m, count * per_task)], dim=1)
    s_cat = torch.cat([s[:common], st[:, :per_task].reshape(-1)])
    vh_cat = torch.cat([vh[:common], vht[:, :per_task, :].reshape(count * per_task, n)])
    return (s_cat.mean() * (polar(u_cat) @ polar(vh_cat))).to(taus.dtype)


def iso_vector(taus: Tensor) -> Tensor:
    """Iso-C and Iso-CTS on a non-matrix parameter: the mean τ_i (same source as `iso_c`)."""
    return taus.mean(dim=0)


def wudi_loss(tau: Tensor, taus: Tensor) -> Tensor:
    """WUDI's interference objective Σ_i ‖(τ − τ_i) τ_iᵀ‖²_F / ‖τ_i‖²_F (a zero τ_i contributes 0)."""
    weights = taus.flatten(1).square().sum(dim=1).clamp(min=torch.finfo(taus.dtype).tiny)
    return ((tau - taus) @ taus.transpose(1, 2)).square().sum(dim=(1, 2)).div(weights).sum()


def _wudi_grams(work: Tensor) -> Tensor:
    """G_i = τ_iᵀτ_i / ‖τ_i‖², stacked (a zero τ_i gives 0)."""
    norms = work.flatten(1).square().sum(dim=1).clamp(min=torch.finfo(work.dtype).tiny)
    return work.transpose(1, 2) @ work / norms[:, None, None]


def _wudi_terms(work: Tensor) -> tuple[Tensor, Tensor]:
    """G = Σ_i G_i and Σ_i τ_i G_i: the loss's gradient is 2(τ G − Σ_i τ_i G_i)."""
    grams = _wudi_grams(work)
    return grams.sum(dim=0), (work @ grams).sum(dim=0)


def wudi(taus: Tensor, steps: int = 300, lr: float = 1e-5) -> Tensor:
    """WUDI-merging (Cheng et al., "Whoever Started the Interference Should End It", ICML 2025) of one layer, as its
    authors run it: Adam (lr 1e-5, 300 steps; fusion_bench uses 400) on `wudi_loss` from τ = Σ τ_i
    (nathanielyvo/WUDI-Merging, vit/wudi_main.py, `get_redundant_task_vector`), which they apply with scaling 1 (this
    project's config searches a λ around it). The lr is absolute: no coordinate moves more than steps·lr from Σ τ_i.

    The gradient is taken in closed form, 2(τ G − Σ_i τ_i G_i), rather than by autograd through the loss: the same
    steps at a fraction of the cost. The early stop matters: the exact minimiser (`wudi_minimiser`) is ill-posed
    where G is nearly singular, and on small fine-tunes its norm grows by orders of magnitude over Σ τ_i.
    """
    work = _working(taus).detach()
    gram, target = _wudi_terms(work)
    tau = torch.nn.Parameter(work.sum(dim=0))
    optimizer = torch.optim.Adam([tau], lr=lr)
    for _ in range(steps):
        tau.grad = 2 * (tau.detach() @ gram - target)
        optimizer.step()
    return tau.detach().to(taus.dtype)


def wudi_minimiser(taus: Tensor) -> Tensor:
    """The exact minimiser of `wudi_loss`: τ G = Σ_i τ_i G_i, i.e. RegMean with G_i = τ_iᵀτ_i / ‖τ_i‖² in place of
    the input Gram matrices; solved in float64 by least squares, so a singular G gives the minimum-norm τ."""
    work = taus.double()
    return regmean_linear(work, _wudi_grams(work)).to(taus.dtype)


def wudi_vector(taus: Tensor) -> Tensor:
    """WUDI on a non-matrix parameter: zero, i.e. θ0 is kept. The authors merge only the transformer blocks'
    linear weights (attn in/out projections, MLP c_fc/c_proj) and load nothing else (vit/wudi_main.py), so
    biases, norms and embeddings stay pretrained. (fusion_bench's port averages them instead.)"""
    return torch.zeros_like(taus[0])
