"""The readers of the declared datasets' real on-disk formats (music.data.sources): IDX files, CIFAR's pickled batches,
SVHN's .mat files. Each returns {'train': (uint8 images N×C×H×W, int64 labels), 'test': …}, or None when a file is
missing (the next folder is then tried), and refuses a file it cannot read with one line."""

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from music.data.idx import read_idx
from music.errors import DataError

if TYPE_CHECKING:
    from music.data.sources import DatasetSpec

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {'train': (uint8 images N×C×H×W, int64 labels), 'test': …}


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _checked(
    where: Path, images: torch.Tensor, labels: torch.Tensor, classes: int, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    if images.dim() != 4 or labels.dim() != 1 or tuple(images.shape[1:]) != shape:
        raise DataError(
            f"{where}: expected N×{'×'.join(map(str, shape))} images and N labels, "
            f"got {list(images.shape)} and {list(labels.shape)}"
        )
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
        raise DataError(f"{where}: labels {int(labels.min())}..{int(labels.max())} outside 0..{classes - 1}")
    return images.contiguous(), labels.long()


def read_idx_folder(folder: Path, spec: "DatasetSpec") -> Splits | None:
    """The MNIST family: four IDX files (plain or .gz) in one folder, or None if any is missing."""
    found = {split: [_find(folder, name) for name in names] for split, names in spec.files.items()}
    if any(p is None for paths in found.values() for p in paths):
        return None
    return {
        split: _checked(images, read_idx(images).unsqueeze(1), read_idx(labels), spec.classes, spec.shape)
        for split, (images, labels) in found.items()
    }


# What a CIFAR batch's pickle may name: numpy's array reconstruction (numpy 1's and 2's module names, and protocol 5's
# buffer form) and the bytes codec Python 3 writes protocol-2 bytes with. Dicts, lists, str and ints need no name. An
# unpickler imports and calls whatever a file names (os.system, …), so any other name refuses the file unread.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # written by Python 2: its str keys read as str, as torchvision reads them
            batch = _CifarUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:  # before any of its content is used: nothing it names was called
        raise DataError(f"{path}: not a CIFAR batch, refused before use ({e})") from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise DataError(f"{path}: cannot read a CIFAR batch ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR batch (a {type(batch).__name__}, not a dict)")
    return batch


def read_cifar_folder(folder: Path, spec: "DatasetSpec") -> Splits | None:
    """CIFAR-10/100 as python-pickled batches (rows of 3072 bytes, channel-major; labels under 'labels' or
    'fine_labels'), or None if any batch is missing."""
    paths = {split: [folder / name for name in names] for split, names in spec.files.items()}
    if not all(p.is_file() for names in paths.values() for p in names):
        return None
    out = {}
    for split, files in paths.items():
        batches = [_unpickle(p) for p in files]
        key = "fine_labels" if "fine_labels" in batches[0] else "labels"
        try:
            data = torch.cat([torch.as_tensor(b["data"], dtype=torch.uint8).reshape(-1, *spec.shape) for b in batches])
            labels = torch.cat([torch.as_tensor(b[key], dtype=torch.long) for b in batches])
        except (KeyError, RuntimeError, TypeError) as e:
            raise DataError(f"{files[0]}: not a CIFAR batch of {'×'.join(map(str, spec.shape))} images ({e})") from None
        out[split] = _checked(files[0], data, labels, spec.classes, spec.shape)
    return out


def read_svhn_folder(folder: Path, spec: "DatasetSpec") -> Splits | None:
    """SVHN's cropped digits as MATLAB files (X: 32×32×3×N, y: N×1 with 10 meaning the digit 0), or None if missing."""
    paths = {split: folder / names[0] for split, names in spec.files.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    from scipy.io import loadmat  # only SVHN needs it

    out = {}
    for split, path in paths.items():
        try:
            mat = loadmat(path)
            images = torch.from_numpy(mat["X"]).permute(3, 2, 0, 1)
            labels = torch.from_numpy(mat["y"].astype("int64")).reshape(-1) % 10  # SVHN labels the digit 0 as 10
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not an SVHN .mat file ({e})") from None
        out[split] = _checked(path, images, labels, spec.classes, spec.shape)
    return out
