"""The datasets a run reads, as typed values resolved once from the config (music.data.resolve): never strings to parse.

Each kind is one frozen dataclass with the same four methods —
- `key()`: its identity, written (never parsed) into metrics.json's `dataset` and the cache keys;
- `classes()`: how many classes it has (what the tasks are checked against, read without decoding an image);
- `declare(pixels)`: its DatasetSpec (classes, image shape at the resolution the run stores, names, prompts,
  normalisation — None where only its images can tell, music.data.store then measures it);
- `items(data_dir, download)`: per split, either uint8 arrays (Arrays) or image files to decode (Files), with labels.
A new kind of dataset (an HF dataset, another torchvision class) is one more dataclass here and a line in the resolver.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from music.data import class_names as names
from music.data.composite import pooled_statistics
from music.data.image_folder import read_tree
from music.data.pixels import Resize
from music.data.sources import DATASETS, DatasetSpec, load_dataset
from music.errors import ConfigError


@dataclass(frozen=True)
class Arrays:
    """Decoded images (uint8 N × C × H × W) and their labels."""

    images: Tensor
    labels: Tensor


@dataclass(frozen=True)
class Files:
    """Image files still to decode, and their labels."""

    paths: tuple[Path, ...]
    labels: Tensor


Items = Arrays | Files


@dataclass(frozen=True)
class Pixels:
    """The resolution a run stores its images at: a pretrained backbone's eval transform for every image (`backbone`),
    else image files squashed to data.image_size (`files`) and array datasets as they are."""

    backbone: Resize | None
    files: Resize

    def of(self, part) -> Resize | None:
        """The transform one dataset's images go through (None: kept as decoded)."""
        return self.backbone or (self.files if part.is_files else None)


def _file_datasets() -> dict:
    from music.data.file_datasets import FILE_DATASETS  # the 8-task benchmark's datasets in their real formats

    return FILE_DATASETS


def known_names() -> list[str]:
    return [*DATASETS, *_file_datasets()]


def _file_spec(title: str, class_names, prompts, resize: Resize) -> DatasetSpec:
    """The declaration of image files stored at `resize`: RGB at its size, normalisation measured from the images."""
    return DatasetSpec(
        title,
        len(class_names),
        (3, resize.size, resize.size),
        None,
        None,
        None,
        {},
        "image files",
        ".",
        title=title,
        class_names=tuple(class_names),
        prompts=tuple(prompts),
    )


@dataclass(frozen=True)
class Catalog:
    """A dataset this project declares by name: an array dataset (music.data.sources.DATASETS: MNIST, CIFAR, SVHN, …)
    or one read from image files in its real layout (music.data.file_datasets: the 8-task benchmark's)."""

    name: str

    def key(self) -> str:
        return self.name

    @property
    def is_files(self) -> bool:
        return self.name not in DATASETS

    def classes(self) -> int:
        return DATASETS[self.name].classes if not self.is_files else len(_file_datasets()[self.name].class_names)

    def declare(self, pixels: "Pixels") -> DatasetSpec:
        resize = pixels.of(self)
        if not self.is_files:
            spec = DATASETS[self.name]
            if resize is None:
                return spec
            # through a backbone's transform: RGB at its size; the declared statistics, each grey one on three channels
            mean, std = pooled_statistics([spec.mean], [spec.std], 3)
            return replace(spec, shape=(3, resize.size, resize.size), mean=mean, std=std)
        files = _file_datasets()[self.name]
        return _file_spec(files.title, files.class_names, files.prompts, resize)

    def items(self, data_dir: Path, download: bool) -> dict[str, Items]:
        if not self.is_files:
            return {split: Arrays(x, y) for split, (x, y) in load_dataset(self.name, data_dir, download).items()}
        from music.data.file_datasets import load_files

        return {
            split: Files(tuple(p for p, _ in pairs), torch.tensor([c for _, c in pairs], dtype=torch.long))
            for split, pairs in load_files(self.name, Path(data_dir), download).items()
        }


@dataclass(frozen=True)
class ImageFolder:
    """Your own images: torchvision's ImageFolder layout under `root` (music.data.image_folder)."""

    root: str
    test_fraction: float = 0.2
    class_names: tuple[str, ...] | None = None  # what CLIP's zero-shot head reads; None: the folder names
    prompts: tuple[str, ...] | None = None  # its prompt templates; None: one generic template

    @property
    def is_files(self) -> bool:
        return True

    def key(self) -> str:
        return f"image_folder:{Path(self.root).resolve()}:{self.test_fraction}"

    def classes(self) -> int:
        return len(read_tree(Path(self.root), self.test_fraction)[0])

    def declare(self, pixels: "Pixels") -> DatasetSpec:
        folders, _ = read_tree(Path(self.root), self.test_fraction)
        given = self.class_names
        if given is not None and len(given) != len(folders):
            allowed = f"{len(folders)} names, one per class folder ({', '.join(folders)})"
            raise ConfigError("data.class_names", list(given), allowed)
        title = Path(self.root).name
        return _file_spec(title, given or folders, self.prompts or names.GENERIC_PROMPTS, pixels.of(self))

    def items(self, data_dir: Path, download: bool) -> dict[str, Items]:
        _, splits = read_tree(Path(self.root), self.test_fraction)
        return {split: Files(paths, labels) for split, (paths, labels) in splits.items()}


@dataclass(frozen=True)
class Composite:
    """Several datasets as one (tasks that are datasets, music.data.composite): one label space, each part's classes
    after the previous parts', every image brought to the largest part's shape."""

    parts: tuple["Catalog | ImageFolder", ...]

    @property
    def is_files(self) -> bool:
        return any(part.is_files for part in self.parts)

    def key(self) -> str:
        return "+".join(part.key() for part in self.parts)

    def declare(self, pixels: "Pixels") -> DatasetSpec:
        specs = [part.declare(pixels) for part in self.parts]
        shape = tuple(max(spec.shape[i] for spec in specs) for i in range(3))
        if all(spec.mean is not None for spec in specs):
            mean, std = pooled_statistics([s.mean for s in specs], [s.std for s in specs], shape[0])
        else:  # a part known by its images only: measured over the composite's training images
            mean = std = None
        return DatasetSpec(
            "+".join(s.torchvision for s in specs),
            sum(spec.classes for spec in specs),
            shape,
            mean,
            std,
            None,
            {},
            "datasets",
            ".",
            title=" + ".join(spec.name for spec in specs),
            # the augmentation every part allows: the smallest crop padding, flips only if every part flips
            augment=(min(s.augment[0] for s in specs), all(s.augment[1] for s in specs)),
            class_names=tuple(n for spec in specs for n in spec.names),
            prompts_per_class=tuple(p for spec in specs for p in spec.class_prompts()),
        )

    def classes(self) -> int:
        return sum(part.classes() for part in self.parts)

    def items(self, data_dir: Path, download: bool) -> dict[str, list[Items]]:
        """Per split, each part's items with its labels after the previous parts' classes (a list, one per part)."""
        out: dict[str, list[Items]] = {"train": [], "test": []}
        offset = 0
        for part in self.parts:
            for split, items in part.items(data_dir, download).items():
                out[split].append(replace(items, labels=items.labels + offset))
            offset += part.classes()
        return out


Source = Catalog | ImageFolder | Composite
