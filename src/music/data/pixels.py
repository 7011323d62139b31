"""Images brought, once and before they are stored, to the resolution the network reads: decoded (image files), resized
and cropped as the backbone's own eval transform does it, kept as uint8. Normalisation happens later, per batch, on
the device (music.data.store)."""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from music.errors import DataError


@dataclass(frozen=True)
class Resize:
    """How an image reaches `size` × `size`.

    crop_fraction None: squashed to the square (data.image_size: an image folder read by a network trained here).
    Otherwise the backbone's eval transform — open_clip's preprocess and timm's resolve_data_config alike: the shorter
    side resized to floor(size / crop_fraction) with `interpolation` (PIL's filter on the decoded image), then the
    centre size × size crop (CLIP: crop_fraction 1, bicubic; timm: its crop_pct, often 0.875)."""

    size: int
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    crop_fraction: float | None = None

    def material(self) -> dict:
        """What the stored pixels depend on: part of the image cache's key."""
        return asdict(self)

    @property
    def scale(self) -> int:
        return self.size if self.crop_fraction is None else math.floor(self.size / self.crop_fraction)


def _mode(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}.get(
        name, InterpolationMode.NEAREST
    )


def resized(image, resize: Resize) -> Tensor:
    """A decoded PIL image → uint8 3 × size × size, as `resize` says."""
    from torchvision.transforms.v2 import functional as F

    image = image.convert("RGB")
    if resize.crop_fraction is None:  # the square, as image folders were always read (antialiased tensor resize)
        return F.resize(F.pil_to_tensor(image), [resize.size, resize.size], antialias=True)
    image = F.resize(image, resize.scale, interpolation=_mode(resize.interpolation))  # the shorter side
    return F.pil_to_tensor(F.center_crop(image, [resize.size, resize.size]))


def decode(path: Path, resize: Resize, max_pixels: int | None) -> Tensor:
    """An image file → uint8 3 × size × size; a file PIL cannot read (not an image, truncated, larger than
    `max_pixels`: a decompression bomb) is one line naming it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels  # PIL's guard, per process (workers included)
    try:
        with Image.open(path) as image:
            image.load()
            return resized(image, resize)
    except Image.DecompressionBombError as e:  # not an OSError: PIL raises it above twice its limit
        raise DataError(f"{path}: {e} (data.max_image_pixels sets the limit)") from None
    except (OSError, ValueError, SyntaxError) as e:  # unidentified, truncated, an unknown mode
        raise DataError(f"{path}: not an image PIL can decode ({type(e).__name__}: {e})") from None


def array_resized(images: Tensor, resize: Resize) -> Tensor:
    """uint8 images N × C × H × W (an array dataset: MNIST, CIFAR, …) through the same transform as image files:
    each made a PIL image (grey repeated on three channels) and resized, as the papers' datasets do it."""
    from PIL import Image

    out = torch.empty(len(images), 3, resize.size, resize.size, dtype=torch.uint8)
    for i, image in enumerate(images):
        pixels = image.permute(1, 2, 0).numpy()
        out[i] = resized(Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels), resize)
    return out


class ChannelMoments:
    """Per channel mean and standard deviation of uint8 images scaled to [0, 1], accumulated chunk by chunk (sums in
    float64): the normalisation of a dataset declared by its images (image files)."""

    def __init__(self):
        self.sum = self.squares = None
        self.count = 0

    def add(self, images: Tensor) -> None:
        for part in images.split(16):  # float64 copies of 16 images at a time, not of the whole chunk
            x = part.to(torch.float64).div_(255).transpose(0, 1).flatten(1)
            sums, squares = x.sum(1), x.square().sum(1)
            self.sum = sums if self.sum is None else self.sum + sums
            self.squares = squares if self.squares is None else self.squares + squares
            self.count += x.shape[1]

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean = self.sum / self.count
        std = (self.squares / self.count - mean.square()).clamp_min(0).sqrt()
        return tuple(round(v, 4) for v in mean.tolist()), tuple(round(max(v, 1e-3), 4) for v in std.tolist())
