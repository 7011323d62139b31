"""Statistics of a network on images (its diagonal Fisher, its linear layers' input Gram matrices): what some merges
estimate per fine-tune, and online EWC per stage."""

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def diagonal_fisher(
    net: nn.Module, images: torch.Tensor, names: list[str], generator: torch.Generator, chunk: int = 64
) -> torch.Tensor:
    """Diagonal Fisher information E_x E_{y~p(·|x)} (∂ log p(y|x)/∂θ)², flattened in `names` order.

    y is drawn from the model's own predictive distribution (the true Fisher, not the empirical one), so the
    estimate reads no labels; one per-sample gradient per image (torch.func.vmap over grad).
    """
    net = net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def log_likelihood(p, x, y):
        return torch.log_softmax(functional_call(net, p, (x[None],)), dim=-1)[0].gather(0, y[None])[0]

    per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for x in images.split(chunk):
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(net(x), dim=-1), 1, generator=generator).squeeze(1)
        for name, g in per_sample(params, x, y).items():
            total[name] += g.square().sum(dim=0)
    # a name with no parameter (a BatchNorm running statistic, under merge.batchnorm=merge) has no Fisher: zeros, which
    # fisher_weighted turns into the plain mean
    zeros = {k: torch.zeros_like(v) for k, v in net.state_dict().items() if k not in total}
    return torch.cat([(total[k] if k in total else zeros[k]).reshape(-1) for k in names]) / len(images)


def linear_input_grams(net: nn.Module, images: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """For every nn.Linear, the Gram matrix X̃ᵀX̃ (float64) of its inputs with a constant 1 appended (X̃ = [X, 1])."""
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs):
            x = inputs[0].reshape(-1, module.in_features).double()
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
            grams[name] = grams.get(name, 0) + x.T @ x

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            for x in images.split(chunk):
                net(x)
    finally:
        for h in handles:
            h.remove()
    return grams  # float64: the solve that uses them is ill-conditioned
