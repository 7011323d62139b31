"""An optimizer's state (Adam's moments and step counts, SGD's momentum) as flat named tensors, so a sequential stage
can hand it to the next (`finetune.optimizer_state=carry`) and the cache can keep it beside the stage's weights."""

import torch
from torch import Tensor

PREFIX = "optimizer/"  # <PREFIX><parameter index>/<name>: a key no network parameter has


def flatten(state_dict: dict) -> dict[str, Tensor]:
    """`optimizer.state_dict()["state"]` as {"optimizer/<index>/<name>": tensor}; values that are not tensors become
    0-d tensors, and None (SGD's momentum of a parameter that never had a gradient) is left out."""
    return {
        f"{PREFIX}{index}/{name}": (value if isinstance(value, Tensor) else torch.tensor(value)).detach().cpu().clone()
        for index, entries in state_dict["state"].items()
        for name, value in entries.items()
        if value is not None
    }


def unflatten(tensors: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    """The inverse of `flatten` on the entries that carry PREFIX: {parameter index: {name: tensor}}."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(PREFIX):
            index, name = key.removeprefix(PREFIX).split("/", 1)
            state.setdefault(int(index), {})[name] = value
    return state


def split(entry: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[int, dict[str, Tensor]]]:
    """A cached stage (weights and optimizer state in one entry) as (the network's state, the optimizer's state)."""
    return {k: v for k, v in entry.items() if not k.startswith(PREFIX)}, unflatten(entry)


def load(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Tensor]]) -> None:
    """Start `optimizer` from another optimizer's `state` over the same parameters, in the same order; its own
    hyperparameters (learning rate, betas, …) stay as configured."""
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
