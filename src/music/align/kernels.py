"""Pure alignment math: KL distillation of a head (FT-Classifier) and the orthogonal Procrustes map."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.evaluation.metrics import restrict

MASKED = -1e9  # logit of a class a sample may not be scored over (finite: keeps KL free of 0·∞)


def log_probs(logits: Tensor, allowed: Tensor) -> Tensor:
    """Log-probabilities over each sample's allowed classes."""
    return torch.log_softmax(restrict(logits, allowed, fill=MASKED), dim=-1)


def kl_loss(student_logits: Tensor, teacher_probs: Tensor, allowed: Tensor) -> Tensor:
    """KL(p_teacher ‖ p_student), mean over samples: `kl_div(log_softmax(student), softmax(teacher), 'batchmean')`."""
    return F.kl_div(log_probs(student_logits, allowed), teacher_probs, reduction="batchmean")


def kl_to_teacher(teacher_logits: Tensor, student_logits: Tensor, allowed: Tensor) -> float:
    return float(kl_loss(student_logits, log_probs(teacher_logits, allowed).exp(), allowed))


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
    loss KL(p_teacher ‖ p_head), Adam."""
    teacher = log_probs(teacher_logits, allowed).exp()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        for rows in torch.randperm(len(features), generator=generator).split(batch_size):
            loss = kl_loss(head(features[rows]), teacher[rows], allowed[rows])
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
    identity = torch.eye(source.shape[1], dtype=source.dtype, device=source.device)
    return basis @ (u @ vt) @ basis.T + identity - basis @ basis.T


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
