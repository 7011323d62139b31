"""Where the images come from: a flat folder of IDX files, or torchvision's layout (downloaded if missing)."""

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from music.data.idx import read_idx
from music.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# dataset name -> torchvision class name (also its folder under data_dir: <data_dir>/<ClassName>/raw)
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
# copies a system package installs, read when data_dir holds none (Debian's dataset-fashion-mnist)
SYSTEM_COPIES = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
NUM_CLASSES = 10
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3 or labels.dim() != 1:
        raise DataError(f"{images_path}: expected N×H×W images and N labels, got {list(images.shape)} and {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return images, labels.long()


def _read_folder(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """Both splits from a folder holding the four IDX files (plain or .gz), or None if any is missing."""
    found = {split: [_find(folder, name) for name in names] for split, names in IDX_FILES.items()}
    if any(p is None for paths in found.values() for p in paths):
        return None
    return {split: _read_pair(*paths) for split, paths in found.items()}


def _download(name: str, data_dir: Path, download: bool) -> Path:
    """torchvision's own download into <data_dir>/<ClassName>/raw; returns that folder. The download goes to a
    temporary folder first and moves into place whole: a failed one (no network, a mistyped data_dir) leaves no
    folders behind."""
    import torchvision.datasets  # imported here: only this path needs it

    cls = getattr(torchvision.datasets, DATASETS[name])
    raw = data_dir / DATASETS[name] / "raw"
    if not download:
        reason = "download is off (data.download=false)"
    else:
        with tempfile.TemporaryDirectory(prefix="music-download-") as staging:
            try:
                for train in (True, False):
                    cls(root=staging, train=train, download=True)
            except (RuntimeError, OSError) as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                reason = f"download failed ({lines[-1] if lines else type(e).__name__})"  # torchvision ends with the cause
            else:
                raw.mkdir(parents=True, exist_ok=True)
                for file in (Path(staging) / DATASETS[name] / "raw").iterdir():
                    shutil.move(file, raw / file.name)
                return raw
    files = ", ".join(n for pair in IDX_FILES.values() for n in pair)
    raise DataError(
        f"data.name={name}: no dataset files in {data_dir} and {reason}. Put the four IDX files ({files}; plain or"
        f" .gz) in {data_dir} or {raw}, or point data.data_dir at the folder that holds them"
    )


def load_dataset(name: str, data_dir: str | Path, download: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (uint8 images N×28×28, int64 labels), 'test': (...)} of one of DATASETS, read from the first folder
    that holds the four IDX files: data_dir itself, torchvision's data_dir/<ClassName>/raw, a system-wide copy
    (SYSTEM_COPIES), or what torchvision downloads into data_dir/<ClassName>/raw."""
    if name not in DATASETS:
        raise ConfigError("data.name", name, f"one of {', '.join(DATASETS)}")
    data_dir = Path(data_dir)
    raw = data_dir / DATASETS[name] / "raw"
    for folder in (data_dir, raw, *SYSTEM_COPIES.get(name, ())):
        splits = _read_folder(folder)
        if splits is not None:
            break
    else:
        folder = _download(name, data_dir, download)
        splits = _read_folder(folder)
        if splits is None:
            raise DataError(f"data.name={name}: the download into {raw} left some of the four IDX files missing")
    log.info("%s: %d train / %d test images from %s", name, len(splits["train"][1]), len(splits["test"][1]), folder)
    return splits
