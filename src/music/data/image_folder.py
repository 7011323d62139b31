"""Your own images as a dataset: torchvision's ImageFolder layout (one folder per class, named after it), either
`root/train/<class>/…` and `root/test/<class>/…`, or `root/<class>/…` with a seeded `test_fraction` of each class held
out as the test set. Images are read with torchvision's loader (PIL, RGB), resized to image_size × image_size, and the
dataset declares itself like the others: classes from the folder names, shape 3 × size × size, and the normalisation
computed once per process from its training images.

configs/data/image_folder.yaml spells the dataset's name from its settings, `image_folder:<size>:<test
fraction>:<root>`, so that every place that reads a dataset by name (declaration, cache keys, reports) reads this one.
"""

from functools import lru_cache
from pathlib import Path

import torch

from music.errors import ConfigError, DataError

PREFIX = "image_folder:"
SPLIT_SEED = 0  # the held-out test images: fixed for the folder, the same for every run seed


def parse(name: str) -> tuple[int, float, Path]:
    try:
        size, fraction, root = name.removeprefix(PREFIX).split(":", 2)
        return int(size), float(fraction), Path(root)
    except ValueError:
        raise ConfigError(
            "data.name", name, f"{PREFIX}<image size>:<test fraction>:<root> (data=image_folder)"
        ) from None


def _read_tree(root: Path, size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(class names, uint8 images N×3×size×size, labels) of one ImageFolder tree."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    resize = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])
    try:
        tree = ImageFolder(str(root))
    except (FileNotFoundError, OSError) as e:  # no class folder, or a class folder without images
        raise DataError(f"data.root={str(root)!r}: not an image folder tree ({e})") from None
    images = []
    for path, _ in tree.samples:
        try:
            images.append(resize(tree.loader(path)))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"data.root: {path}: not an image ({type(e).__name__})") from None
    return tree.classes, torch.stack(images), torch.tensor(tree.targets, dtype=torch.long)


def _held_out(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """A mask of `fraction` of each class's images, drawn with a fixed seed."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        mask[members[: round(fraction * len(members))]] = True
    return mask


@lru_cache(maxsize=4)
def read(name: str) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(class names, {'train': (images, labels), 'test': …}) of the folder `name` describes (read once per process)."""
    size, fraction, root = parse(name)
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r}: no such folder (an ImageFolder tree: one folder per class)")
    if (root / "train").is_dir() or (root / "test").is_dir():
        (train_classes, *train), (test_classes, *test) = (_read_tree(root / split, size) for split in ("train", "test"))
        if train_classes != test_classes:
            raise DataError(
                f"data.root={str(root)!r}: train/ and test/ name different classes "
                f"({', '.join(sorted(set(train_classes) ^ set(test_classes)))} in one only)"
            )
        return train_classes, {"train": tuple(train), "test": tuple(test)}
    classes, images, labels = _read_tree(root, size)
    test = _held_out(labels, fraction)
    if not 0 < int(test.sum()) < len(labels):
        raise DataError(f"data.root={str(root)!r}: data.test_fraction={fraction} leaves no training or no test image")
    return classes, {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


def statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per channel mean and std of uint8 images scaled to [0, 1]."""
    scaled = images.float().div_(255).transpose(0, 1).flatten(1)
    return tuple(round(v, 4) for v in scaled.mean(1).tolist()), tuple(round(v, 4) for v in scaled.std(1).tolist())


def spec(name: str):
    """The folder's declaration (a music.data.sources.DatasetSpec), read from its images."""
    from music.data.sources import DatasetSpec

    classes, splits = read(name)
    size, _, root = parse(name)
    mean, std = statistics(splits["train"][0])
    return DatasetSpec(
        "ImageFolder",
        len(classes),
        (3, size, size),
        mean,
        std,
        lambda folder, declared: read(name)[1],
        {},  # no named files: its root is in its name
        "an ImageFolder tree",
        str(root),
        title=root.name,
        class_names=tuple(classes),
    )
