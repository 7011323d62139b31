"""Experience replay as Mammoth runs it, ER (aimagelab/mammoth, models/er.py, read at HEAD; the DER paper's "ER" row,
Buzzega et al., NeurIPS 2020): a reservoir over *every* example seen (utils/buffer.py, algorithm R), filled at every
training step, and replay from the first step on — the current task's examples included.

Each step draws `minibatch_size` remembered examples (null: the training batch's size) before the step's examples are
offered to the reservoir, appends them to the batch (one cross-entropy over both, augmented with it: Mammoth augments
what it draws) and keeps the step's examples as they were before augmentation.

`experiment=replay` is the other memory (Chaudhry et al., 2019): updated at the end of each stage, so stage 0 replays
nothing and later stages replay earlier stages' images only. With more than one epoch per stage ER's stream offers
each image once per epoch (Mammoth's too): its memory may hold an image twice."""

import torch
from torch import Tensor

from music.continual.buffer import StreamMemory
from music.settings import Positive


class ER(StreamMemory):
    """ER: keeps up to `memory_size` training images with their labels, a reservoir over every example seen."""

    memory = "images with labels"

    def __init__(self, memory_size: Positive = 500, minibatch_size: Positive | None = None):
        super().__init__(memory_size)
        self.minibatch_size = minibatch_size

    def batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        drawn = self.buffer.draw(self.minibatch_size or len(x), x.device) if len(self.buffer) else None
        self.buffer.add(images=x, labels=y)  # before augmentation: the Classifier augments the whole batch
        if drawn is None:
            return x, y
        return torch.cat([x, drawn["images"].to(x.dtype)]), torch.cat([y, drawn["labels"].to(y.dtype)])
