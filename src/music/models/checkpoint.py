"""Bring-your-own θ0: network weights from a safetensors file or a Lightning checkpoint, checked against the model."""

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from music.errors import DataError, first_line

PREFIX = "net."  # where Classifier keeps the network inside a Lightning checkpoint


def load_weights(path: str | Path, net: nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s state after loading `path` strictly; DataError naming the file if it is not a checkpoint of `net`."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
            if any(k.startswith(PREFIX) for k in state):
                state = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    except Exception as e:  # whatever torch's weights-only unpickler or safetensors make of a file that is not theirs
        # torch's weights-only refusal: its reason, not its advice
        detail = str(e).split("WeightsUnpickler error:", 1)[-1]
        said = first_line(detail, type(e).__name__)
        raise DataError(f"{path}: cannot read checkpoint ({type(e).__name__}: {said})") from None
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        detail = " ".join(str(e).split())[:300]
        raise DataError(f"{path}: not a checkpoint of the configured {type(net).__name__} ({detail})") from None
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
