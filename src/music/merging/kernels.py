"""Merge kernels: pure functions from task vectors to one merged direction τ_merged.

Flat kernels take the stacked task vectors `tau` (T×P, one row per task) and return a P-vector; the
merged model is θ0 + λ·τ_merged, with λ (and each kernel's knobs) picked on validation by the caller.
"""

import math

import torch
from torch import Tensor

from music.merging.task_vector import TaskVector


def task_arithmetic(tau: Tensor) -> Tensor:
    """Σ τ_i (Ilharco et al., 2023)."""
    return tau.sum(dim=0)


def average(tau: Tensor) -> Tensor:
    """Mean τ_i: θ0 + mean τ_i is the uniform soup of the fine-tuned models (Wortsman et al., 2022)."""
    return tau.mean(dim=0)


def trim(tau: Tensor, keep_fraction: float) -> Tensor:
    """Each row keeps its ceil(keep_fraction·P) largest-magnitude entries; the rest become 0."""
    k = max(1, math.ceil(keep_fraction * tau.shape[1]))
    keep = torch.zeros_like(tau, dtype=torch.bool).scatter_(1, tau.abs().topk(k, dim=1).indices, True)
    return tau * keep


def elect_sign(tau: Tensor) -> Tensor:
    """Per coordinate, the sign with the larger total mass (the sign of the column sum; 0 where it is 0)."""
    return torch.sign(tau.sum(dim=0))


def disjoint_mean(tau: Tensor, sign: Tensor) -> Tensor:
    """Per coordinate, the mean of the non-zero entries whose sign agrees with `sign` (0 where none do)."""
    agree = (torch.sign(tau) == sign) & (tau != 0)
    return (tau * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)


def ties(tau: Tensor, keep_fraction: float) -> Tensor:
    """TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint mean."""
    trimmed = trim(tau, keep_fraction)
    return disjoint_mean(trimmed, elect_sign(trimmed))


def sign_conflict_fraction(tau: Tensor) -> float:
    """Among coordinates where at least two task vectors are non-zero, the fraction where their signs differ."""
    positive, negative = (tau > 0).sum(dim=0), (tau < 0).sum(dim=0)
    shared = (positive + negative) >= 2
    return float(((positive > 0) & (negative > 0) & shared).sum()) / max(1, int(shared.sum()))


def dare(tau: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """DARE (Yu et al., 2024): drop each entry with probability p, rescale survivors by 1/(1−p) (unbiased)."""
    if p == 0:
        return tau
    keep = (torch.rand(tau.shape, generator=generator) >= p).to(tau.device)
    return tau * keep / (1 - p)


def fisher_weighted(tau: Tensor, fishers: Tensor, eps: float = 1e-12) -> Tensor:
    """Σ F_i τ_i / Σ F_i per coordinate (Matena & Raffel, 2022); the plain mean where every F_i is 0."""
    total = fishers.sum(dim=0)
    weighted = (fishers * tau).sum(dim=0) / total.clamp(min=eps)
    return torch.where(total > eps, weighted, tau.mean(dim=0))


def shrink(gram: Tensor, alpha: float) -> Tensor:
    """RegMean's shrinkage: off-diagonal entries scaled by alpha (alpha = 1 keeps the Gram matrix)."""
    diagonal = torch.diag_embed(gram.diagonal(dim1=-2, dim2=-1))
    return alpha * gram + (1 - alpha) * diagonal


def regmean_linear(weights: Tensor, grams: Tensor, alpha: float = 1.0) -> Tensor:
    """RegMean (Jin et al., 2023) for one linear map y = x·Wᵀ: W* minimising Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖².

    weights: T×out×in, grams: T×in×in (G_i = X_iᵀX_i). W*ᵀ = (Σ G̃_i)⁻¹ Σ G̃_i W_iᵀ, solved by least squares
    so a singular Σ G̃_i (e.g. always-blank pixels) gives the minimum-norm solution.
    """
    shrunk = shrink(grams.double(), alpha)
    rhs = (shrunk @ weights.double().transpose(1, 2)).sum(dim=0)
    return torch.linalg.lstsq(shrunk.sum(dim=0), rhs, driver="gelsd").solution.T.to(weights.dtype)


def regmean(vectors: list[TaskVector], grams: list[dict[str, Tensor]], alpha: float) -> TaskVector:
    """RegMean over task vectors: each linear layer `<name>` with a Gram matrix of its inputs augmented by a
    constant 1 (so its bias is solved jointly) is merged in closed form; every other parameter is averaged.

    Linear in the weights, so merging τ_i = θ_i − θ0 equals merging θ_i and subtracting θ0 (when Σ G̃_i is
    invertible; otherwise it is the minimum-norm change from θ0). Shrinkage also scales the bias's row and column.
    """
    merged = dict((sum(vectors) * (1 / len(vectors))).deltas)
    for layer in grams[0]:
        prefix = f"{layer}." if layer else ""  # "" is a bare nn.Linear
        weight, bias = f"{prefix}weight", f"{prefix}bias"
        if weight not in merged:
            continue  # an excluded head
        augmented = torch.stack([torch.cat([v.deltas[weight], v.deltas[bias][:, None]], dim=1) for v in vectors])
        solved = regmean_linear(augmented, torch.stack([g[layer] for g in grams]), alpha)
        merged[weight], merged[bias] = solved[:, :-1].contiguous(), solved[:, -1].contiguous()
    return TaskVector(merged)


def max_magnitude(tau: Tensor) -> Tensor:
    """MagMax (Marczak et al., ECCV 2024): per coordinate, the task vectors' entry of largest magnitude (sign kept)."""
    return tau.gather(0, tau.abs().argmax(dim=0, keepdim=True)).squeeze(0)


def cosine_similarity_matrix(tau: Tensor) -> Tensor:
    unit = tau / tau.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return unit @ unit.T
