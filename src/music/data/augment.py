"""Training-time augmentation of whole batches on the batch's device: random crops (zero padding, as torchvision's
RandomCrop(size, padding) pads the raw image) and horizontal flips, each image its own draw from a generator seeded
per stage. Evaluation never augments.

Why not torchvision.transforms.v2 on the batch: a v2 transform draws its parameters once per call, so a batch
tensor gets one crop for all its images; per-image crops would need a Python loop per image. Here one gather does
them all (the way airbench crops on the GPU).
"""

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from music.data.sources import DatasetSpec


@dataclass(frozen=True)
class AugmentSettings:
    """configs/augment/*.yaml (music.settings); `augment=dataset`, the default, is what the dataset declares."""

    crop_padding: Annotated[int, "[0, 64]"] = 0  # random crops of the image's size from it padded by this many pixels
    flip: bool = False  # horizontal flips with probability ½

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def random_crop(x: Tensor, padding: int, fill: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of the N×C×H×W batch cropped back to H×W at a random offset from itself padded by `padding` pixels
    of `fill` (per channel: the normalised value of a zero pixel)."""
    n, c, h, w = x.shape
    padded = F.pad(x - fill.view(1, c, 1, 1), (padding,) * 4) + fill.view(1, c, 1, 1)
    dy, dx = (torch.randint(2 * padding + 1, (n,), generator=generator, device=x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # N×H×1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # N×1×W
    return padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image flipped left–right with probability ½."""
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def training_augment(augment, spec: DatasetSpec, seed: int) -> "BatchAugment | None":
    """The training augmentation the `augment` config group asks for, or None when it asks for none."""
    settings = AugmentSettings(**augment)
    return BatchAugment(settings, spec, seed) if settings.active else None


class BatchAugment:
    """Augments training batches as `settings` say, with a generator seeded by `seed` on the batch's device."""

    def __init__(self, settings: AugmentSettings, spec: DatasetSpec, seed: int):
        self.settings, self.seed, self.generator = settings, seed, None
        self.fill = -torch.tensor(spec.mean) / torch.tensor(spec.std)  # a zero pixel, normalised

    def __call__(self, x: Tensor) -> Tensor:
        if not self.settings.active:
            return x
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        if self.settings.crop_padding:
            x = random_crop(x, self.settings.crop_padding, self.fill.to(x.device, x.dtype), self.generator)
        return random_flip(x, self.generator) if self.settings.flip else x
