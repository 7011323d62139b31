"""Tasks that are datasets: several datasets as one, the merging literature's setting (each task a whole dataset, or
a class subset of one, scored by its own head).

`tasks: [mnist, fashion_mnist, svhn]` (or `[{data: cifar100, classes: [0, …, 9]}, …]`) makes the run's dataset the
composite `mnist+fashion_mnist+svhn` (music.data.refs.Composite, resolved by music.data.resolve): one label space with
each part's classes after the previous parts' (MNIST 0–9, Fashion-MNIST 10–19, SVHN 20–29), every image brought to the
largest part's shape (grey images repeated on three channels, smaller ones resized bilinearly: `conform`), normalised
with the parts' pooled statistics. Everything downstream (split, cache keys, merging, metrics, report) then sees one
dataset, declared like the others."""

import torch
import torch.nn.functional as F


def conform(images: torch.Tensor, shape: tuple[int, int, int], chunk: int = 8192) -> torch.Tensor:
    """uint8 images N×C×H×W brought to `shape`: one channel repeated to three, resized bilinearly (antialiased when
    shrinking) in chunks, rounded back to uint8."""
    channels, height, width = shape
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != channels:
        raise ValueError(f"cannot bring {images.shape[1]}-channel images to {channels} channels")
    if tuple(images.shape[2:]) == (height, width):
        return images.contiguous()
    shrinking = images.shape[2] > height or images.shape[3] > width
    return torch.cat(
        [
            F.interpolate(part.float(), size=(height, width), mode="bilinear", antialias=shrinking, align_corners=False)
            .round_()
            .clamp_(0, 255)
            .to(torch.uint8)
            for part in images.split(chunk)
        ]
    )


def pooled_statistics(means: list[tuple[float, ...]], stds: list[tuple[float, ...]], channels: int) -> tuple:
    """Per channel, the mean and standard deviation of an equal mixture of the parts (each part's declared statistics,
    a grey part's on every channel): a fixed normalisation declared from the parts, no pass over the images."""
    means = [m * channels if len(m) == 1 else m for m in means]
    stds = [s * channels if len(s) == 1 else s for s in stds]
    mean = [sum(m[c] for m in means) / len(means) for c in range(channels)]
    second = [sum(s[c] ** 2 + m[c] ** 2 for m, s in zip(means, stds)) / len(means) for c in range(channels)]
    std = [max(second[c] - mean[c] ** 2, 0.0) ** 0.5 for c in range(channels)]
    return tuple(round(v, 4) for v in mean), tuple(round(v, 4) for v in std)
