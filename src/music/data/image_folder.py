"""Your own images as a dataset (data=image_folder, music.data.refs.ImageFolder): torchvision's ImageFolder layout (one
folder per class, named after it), either `root/train/<class>/…` and `root/test/<class>/…`, or `root/<class>/…` with a
seeded `test_fraction` of each class held out as the test set. Only the tree is read here (files and labels); the
images are decoded once, at the run's resolution, when the data is stored (music.data.store)."""

from functools import lru_cache
from pathlib import Path

import torch

from music.errors import DataError

# what torchvision's ImageFolder takes for an image (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_SEED = 0  # the held-out test images: fixed for the folder, the same for every run seed

Listing = tuple[tuple[Path, ...], torch.Tensor]  # image files and their labels


def _listing(root: Path, setting: str = "data.root") -> tuple[list[str], Listing]:
    """(class folder names, (files, labels)) of one ImageFolder tree: at least two classes, each with an image file."""
    if not root.is_dir():
        raise DataError(f"{setting}={str(root)!r}: no such folder (an ImageFolder tree: one folder per class)")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{setting}={str(root)!r}: an ImageFolder tree needs ≥ 2 class folders ({found})")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            why = f"no image file ({', '.join(IMAGE_SUFFIXES)})"
            raise DataError(f"{setting}={str(root)!r}: class folder {name!r} has {why}")
        paths += files
        labels += [label] * len(files)
    return classes, (tuple(paths), torch.tensor(labels, dtype=torch.long))


def _held_out(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """A mask of `fraction` of each class's images, drawn with a fixed seed."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        mask[members[: round(fraction * len(members))]] = True
    return mask


@lru_cache(maxsize=32)
def read_tree(root: Path, test_fraction: float) -> tuple[list[str], dict[str, Listing]]:
    """(class names, {'train': (files, labels), 'test': …}) of the tree at `root` (listed once per process)."""
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r}: no such folder (an ImageFolder tree: one folder per class)")
    if (root / "train").is_dir() or (root / "test").is_dir():
        (train_classes, train), (test_classes, test) = (_listing(root / split) for split in ("train", "test"))
        if train_classes != test_classes:
            raise DataError(
                f"data.root={str(root)!r}: train/ and test/ name different classes "
                f"({', '.join(sorted(set(train_classes) ^ set(test_classes)))} in one only)"
            )
        return train_classes, {"train": train, "test": test}
    classes, (paths, labels) = _listing(root)
    test = _held_out(labels, test_fraction)
    if not 0 < int(test.sum()) < len(labels):
        why = f"data.test_fraction={test_fraction} leaves no training or no test image"
        raise DataError(f"data.root={str(root)!r}: {why}")
    kept = lambda mask: (tuple(p for p, m in zip(paths, mask.tolist()) if m), labels[mask])  # noqa: E731
    return classes, {"train": kept(~test), "test": kept(test)}
