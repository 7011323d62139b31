"""Dark Experience Replay, DER (Buzzega et al., NeurIPS 2020, "Dark Experience for General Continual Learning").

A reservoir memory of the training images with the network's logits on them *at the step they were seen* (sampled
along the optimisation trajectory); each step adds alpha · MSE(net(memory images), memory logits) on a memory batch.

As the authors' code (aimagelab/mammoth, models/der.py, read at HEAD): the memory batch is drawn before the step's
examples are offered to the reservoir (utils/buffer.py: every example, algorithm R; a draw takes min(size, held)
without replacement); the logits stored are the raw outputs of the training forward pass (`outputs.data`); the
memory batch has `minibatch_size` images (null: the training batch's size, as their best args set it). Defaults are
their seq-CIFAR-10 best args (utils/best_args.py): alpha 0.3 at every buffer size; memory 500. As theirs, the memory
keeps the images before augmentation (with the logits of the augmented batch) and augments what it draws.
"""

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor, nn

from music.continual.buffer import StreamMemory
from music.settings import Positive


class DER(StreamMemory):
    """DER: keeps up to `memory_size` training images with the logits recorded when they were seen."""

    memory = "images with logits"

    def __init__(
        self,
        memory_size: Positive = 500,
        alpha: Annotated[float, "[0, inf)"] = 0.3,
        minibatch_size: Positive | None = None,
    ):
        super().__init__(memory_size)
        self.alpha, self.minibatch_size = float(alpha), minibatch_size

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        loss = 0.0
        if len(self.buffer):
            drawn = self.buffer.draw(self.minibatch_size or len(x), x.device, self.augment)
            loss = self.alpha * F.mse_loss(net(drawn["images"]), drawn["logits"])
        self.buffer.add(images=x if raw is None else raw, logits=logits)  # the image as it was, the logits as seen
        return loss
