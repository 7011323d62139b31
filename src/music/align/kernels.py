"""Pure alignment math: KL distillation of a head (FT-Classifier) and the orthogonal Procrustes map."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED = -1e9  # logit of a class a sample may not be scored over (finite: keeps KL free of 0·∞)


def masked_log_probs(logits: Tensor, allowed: Tensor) -> Tensor:
    return torch.log_softmax(logits.masked_fill(~allowed, MASKED), dim=-1)


def kl_to_teacher(teacher_logits: Tensor, student_logits: Tensor, allowed: Tensor) -> float:
    """KL(p_teacher ‖ p_student), mean over samples, each distribution over the sample's allowed classes."""
    teacher = masked_log_probs(teacher_logits, allowed).exp()
    return float(F.kl_div(masked_log_probs(student_logits, allowed), teacher, reduction="batchmean"))


def fit_head_kl(
    head: nn.Linear,
    features: Tensor,
    teacher_logits: Tensor,
    allowed: Tensor,
    lr: float,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> nn.Linear:
    """FT-Classifier (Kong et al., 2024): train `head` in place so that softmax(head(features)) matches the teachers,
    loss KL(p_teacher ‖ p_head) (`kl_div(log_softmax(student), softmax(teacher), 'batchmean')`), Adam."""
    teacher = masked_log_probs(teacher_logits, allowed).exp()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        for rows in torch.randperm(len(features), generator=generator).split(batch_size):
            loss = F.kl_div(masked_log_probs(head(features[rows]), allowed[rows]), teacher[rows], reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head


def orthogonal_map(source: Tensor, target: Tensor, subspace_dim: int | None = None) -> Tensor:
    """The orthogonal R minimising ‖source·R − target‖ (n×d each): R = U Vᵀ from the SVD of sourceᵀ·target.

    With subspace_dim = r, R rotates only within the top-r principal subspace of both feature sets (fit there,
    identity on its complement): with fewer samples than dimensions the full map is underdetermined.
    """
    if subspace_dim is None:
        u, _, vt = torch.linalg.svd(source.T @ target)
        return u @ vt
    basis = torch.linalg.svd(torch.cat([source, target]), full_matrices=False).Vh[:subspace_dim].T  # d×r
    u, _, vt = torch.linalg.svd((source @ basis).T @ (target @ basis))
    return basis @ (u @ vt) @ basis.T + torch.eye(source.shape[1]) - basis @ basis.T


def procrustes_report(source: Tensor, target: Tensor, rotation: Tensor) -> dict:
    """How close to orthogonal the misalignment is: relative residuals of the orthogonal fit and of the
    unconstrained least-squares map M (minimum-norm when n < d), and M's singular values."""
    scale = target.norm().clamp(min=1e-12)
    least_squares = torch.linalg.lstsq(source.double(), target.double(), driver="gelsd").solution.float()
    return {
        "n": source.shape[0],
        "d": source.shape[1],
        "residual_orthogonal": float((source @ rotation - target).norm() / scale),
        "residual_lstsq": float((source @ least_squares - target).norm() / scale),
        "lstsq_singular_values": torch.linalg.svdvals(least_squares).tolist(),
    }
