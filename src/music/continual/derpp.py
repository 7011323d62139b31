"""DER++ (Buzzega et al., NeurIPS 2020): DER's logit term plus beta · cross-entropy of the network on a second,
independent memory batch against the remembered labels.

As the authors' code (aimagelab/mammoth, models/derpp.py, read at HEAD): two draws per step, one for each term, both
before the step's examples are offered to the reservoir, which stores each with its label and its raw logits.
Defaults are their seq-CIFAR-10 best args for a buffer of 500 (utils/best_args.py): alpha 0.2, beta 0.5 (buffer 200:
0.1 and 0.5; 5120: 0.1 and 1.0).
"""

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor, nn

from music.continual.der import DER
from music.settings import Positive


class DERpp(DER):
    """DER++: keeps up to `memory_size` training images with their labels and the logits recorded when seen."""

    memory = "images with labels and logits"

    def __init__(
        self,
        memory_size: Positive = 500,
        alpha: Annotated[float, "[0, inf)"] = 0.2,
        beta: Annotated[float, "[0, inf)"] = 0.5,
        minibatch_size: Positive | None = None,
    ):
        super().__init__(memory_size, alpha, minibatch_size)
        self.beta = float(beta)

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        loss = 0.0
        if len(self.buffer):
            size = self.minibatch_size or len(x)
            logit_batch, label_batch = (self.buffer.draw(size, x.device, self.augment) for _ in range(2))
            loss = self.alpha * F.mse_loss(net(logit_batch["images"]), logit_batch["logits"])
            loss = loss + self.beta * F.cross_entropy(net(label_batch["images"]), label_batch["labels"])
        self.buffer.add(images=x if raw is None else raw, labels=y, logits=logits)
        return loss
