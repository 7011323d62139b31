"""Tangent-space (linearized) models: f_lin(x; θ) = f(x; θ0) + J_θ f(x; θ0)·(θ − θ0) (Ortiz-Jiménez et al., 2023)."""

import copy

import torch
from torch import nn
from torch.func import functional_call, jvp


class LinearizedNet(nn.Module):
    """Wraps a network at its current parameters θ0; `net`'s parameters are θ (trainable, initialised at θ0).

    One forward is one Jacobian-vector product (torch.func.jvp over functional_call), so training it costs about
    two forward passes; gradients reach θ through the tangent θ − θ0.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.anchor = copy.deepcopy(net).requires_grad_(False)  # θ0, the expansion point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the expansion point is a fixed function whatever the training mode: BatchNorm normalises with θ0's running
        # statistics (and a transform may not update them); set here, as Lightning restores each submodule's mode itself
        self.anchor.eval()
        theta0 = dict(self.anchor.named_parameters())
        delta = {name: p - theta0[name] for name, p in self.net.named_parameters()}
        out, change = jvp(lambda params: functional_call(self.anchor, params, (x,)), (theta0,), (delta,))
        return out + change


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The network's own parameters θ (what is cached and merged), for a plain or a linearized model."""
    net = model.net if isinstance(model, LinearizedNet) else model
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
