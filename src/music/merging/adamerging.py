"""AdaMerging (Yang et al., ICLR 2024): merging coefficients learned by minimising the entropy of the merged model's
predictions on unlabeled images.

θ(λ) = θ0 + Σ_k λ_k τ_k (task-wise) or θ^l = θ0^l + Σ_k λ_k^l τ_k^l (layer-wise: one coefficient per task and
parameter tensor). The authors' defaults (EnnengYang/AdaMerging, main_task_wise_adamerging.py and
main_layer_wise_adamerging.py): every λ starts at the prior 0.3, Adam with lr 1e-3 and betas (0.9, 0.999), 500
steps, each step one batch of 16 unlabeled images per task with the loss summed over tasks. As the authors do, the
coefficients are clamped to [0, 1] inside the merged model (`torch.clamp(lambdas_raw, 0, 1)` in their `lambdas()`):
Adam updates the raw values, and a raw value past a bound gets no gradient there, so it can stay out of [0, 1] and
the merge uses the bound. (Projecting the raw values back after each step would give the same merge at a fixed λ but
other learned λ: a projected value can leave the bound again at the next step.)
"""

from collections.abc import Callable

import torch
from torch import Tensor

from music.merging.task_vector import TaskVector

Logits = Callable[[dict[str, Tensor], Tensor, int], Tensor]  # (parameters, images of task k, k) -> logits


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy of softmax(logits) over the batch."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


def merged_parameters(theta0: dict[str, Tensor], vectors: list[TaskVector], coefficients: Tensor) -> dict[str, Tensor]:
    """θ0 + Σ_k λ_k τ_k per parameter; `coefficients` is T (task-wise) or T×L (one column per parameter of τ, in order)."""
    names = list(vectors[0].deltas)
    columns = coefficients if coefficients.dim() == 2 else coefficients[:, None].expand(-1, len(names))
    merged = dict(theta0)
    for layer, name in enumerate(names):
        merged[name] = theta0[name] + sum(columns[k, layer] * v.deltas[name] for k, v in enumerate(vectors))
    return merged


def adamerging(
    theta0: dict[str, Tensor],
    vectors: list[TaskVector],
    logits: Logits,
    images: list[Tensor],
    layerwise: bool,
    generator: torch.Generator,
    steps: int = 500,
    lr: float = 1e-3,
    prior: float = 0.3,
    batch_size: int = 16,
) -> tuple[Tensor, list[float]]:
    """The learned coefficients, clamped to [0, 1] as the merge uses them (T, or T×L layer-wise), and the summed
    entropy at every step.

    `images[k]`: task k's unlabeled images (a batch of each per step); `logits(params, x, k)` evaluates the model
    with parameters `params` on images `x` of task k.
    """
    shape = (len(vectors), len(vectors[0].deltas)) if layerwise else (len(vectors),)
    raw = torch.full(shape, prior, requires_grad=True)
    optimizer = torch.optim.Adam([raw], lr=lr, betas=(0.9, 0.999))
    history = []
    for _ in range(steps):
        params = merged_parameters(theta0, vectors, raw.clamp(0.0, 1.0))
        loss = sum(
            entropy(logits(params, x[torch.randint(len(x), (batch_size,), generator=generator)], k))
            for k, x in enumerate(images)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return raw.detach().clamp(0.0, 1.0), history


def weighted_sum(vectors: list[TaskVector], coefficients: Tensor) -> TaskVector:
    """Σ_k λ_k τ_k as one task vector (θ0 + it is the merged model)."""
    zero = {name: torch.zeros_like(delta) for name, delta in vectors[0].deltas.items()}
    with torch.no_grad():
        return TaskVector(
            {name: merged - zero[name] for name, merged in merged_parameters(zero, vectors, coefficients).items()}
        )
