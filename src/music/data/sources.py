"""What each array dataset is — its declaration (classes, image shape, normalisation, class names, prompts,
augmentation) and the reader of its real on-disk format (music.data.readers), downloaded through torchvision when
missing. DatasetSpec is every dataset's declaration; image files, image folders and composites declare themselves in
music.data.refs."""

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from music.data import class_names as names
from music.data.readers import Splits, read_cifar_folder, read_idx_folder, read_svhn_folder
from music.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: everything downstream (split, networks, metrics, checks) reads these, nothing assumes them."""

    torchvision: str  # torchvision.datasets class that downloads it
    classes: int
    shape: tuple[int, int, int]  # channels, height, width
    # per channel, of the training images scaled to [0, 1]: the normalisation (None: measured from the images)
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    read: Callable[[Path, "DatasetSpec"], Splits | None] | None
    files: dict[str, tuple[str, ...]]  # per split, the files `read` needs
    kind: str  # what they are, for messages
    folder: str  # where torchvision's download puts them, under data_dir
    split_args: tuple[dict, dict] = (
        {"train": True},
        {"train": False},
    )  # torchvision's train / test constructor arguments
    system_copies: tuple[Path, ...] = ()  # copies a system package installs (Debian's dataset-fashion-mnist)
    title: str = ""  # its name in reports (metrics.json's dataset_title); "": the torchvision class's name
    # its training augmentation under augment=dataset (music.data.augment): crop padding and flips
    augment: tuple[int, bool] = (0, False)
    class_names: tuple[str, ...] = ()  # what CLIP's zero-shot head reads (); (): the class ids
    prompts: tuple[str, ...] = names.GENERIC_PROMPTS  # CLIP's prompt templates for its classes, "{}" the class name
    prompts_per_class: tuple[tuple[str, ...], ...] = ()  # a composite's: each class keeps its own dataset's prompts

    @property
    def name(self) -> str:
        return self.title or self.torchvision

    @property
    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(str(c) for c in range(self.classes))

    def class_prompts(self) -> tuple[tuple[str, ...], ...]:
        """Per class, its prompts for CLIP's zero-shot head: each template of its dataset filled with its name (a
        composite's classes keep their own dataset's templates)."""
        if self.prompts_per_class:
            return self.prompts_per_class
        return tuple(tuple(template.format(name) for template in self.prompts) for name in self.names)


_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_GREY = {"shape": (1, 28, 28), "read": read_idx_folder, "files": _IDX, "kind": "IDX files (plain or .gz)"}
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "MNIST",
        10,
        mean=(0.1307,),
        std=(0.3081,),
        folder="MNIST/raw",
        class_names=names.DIGITS,
        prompts=names.DIGIT_PROMPTS,
        **_GREY,
    ),
    "fashion_mnist": DatasetSpec(
        "FashionMNIST",
        10,
        mean=(0.2860,),
        std=(0.3530,),
        folder="FashionMNIST/raw",
        system_copies=(Path("/usr/share/datasets/fashion-mnist"),),
        title="Fashion-MNIST",
        class_names=names.FASHION_MNIST,
        **_GREY,
    ),
    "kmnist": DatasetSpec(
        "KMNIST", 10, mean=(0.1918,), std=(0.3483,), folder="KMNIST/raw", class_names=names.KMNIST, **_GREY
    ),
    "cifar10": DatasetSpec(
        "CIFAR10",
        10,
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        read_cifar_folder,
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "python-pickled batches",
        "cifar-10-batches-py",
        title="CIFAR-10",
        augment=(4, True),
        class_names=names.CIFAR10,
        prompts=names.PHOTO_PROMPTS,
    ),
    "cifar100": DatasetSpec(
        "CIFAR100",
        100,
        (3, 32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        read_cifar_folder,
        {"train": ("train",), "test": ("test",)},
        "python-pickled batches",
        "cifar-100-python",
        title="CIFAR-100",
        augment=(4, True),
        class_names=names.CIFAR100,
        prompts=names.PHOTO_PROMPTS,
    ),
    "svhn": DatasetSpec(
        "SVHN",
        10,
        (3, 32, 32),
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        read_svhn_folder,
        {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
        "MATLAB files",
        ".",
        ({"split": "train"}, {"split": "test"}),
        augment=(4, False),  # crops, no flips: a flipped digit is another glyph
        class_names=names.DIGITS,
        prompts=names.DIGIT_PROMPTS,
    ),
}


def one_task_per_class(name: str):
    """Resolver for train.yaml's default `tasks`: one task per class of a declared array dataset; null for any other
    (an image folder, image files: music.data.resolve counts their classes; an unknown name: validation says why)."""
    from omegaconf import OmegaConf  # a ListConfig, which OmegaConf.resolve (`--cfg job --resolve`) can put in place

    spec = DATASETS.get(name)
    return OmegaConf.create([[c] for c in range(spec.classes)]) if spec else None


def dataset_augment(name: str, key: str):
    """Resolver for augment=dataset: the dataset's declared `crop_padding` or `flip` (none for a dataset that declares
    none: image folders, image files, an unknown name, which validation then names)."""
    spec = DATASETS.get(name)
    padding, flip = spec.augment if spec else (0, False)
    return {"crop_padding": padding, "flip": flip}[key]


def _download(name: str, spec: DatasetSpec, data_dir: Path, download: bool) -> Path:
    """torchvision's own download into <data_dir>/<spec.folder>; returns that folder. The download goes to a
    temporary folder first and moves into place whole: a failed one (no network, a mistyped data_dir) leaves no
    folders behind."""
    import torchvision.datasets  # imported here: only this path needs it

    cls = getattr(torchvision.datasets, spec.torchvision)
    target = (data_dir / spec.folder).resolve()
    if not download:
        reason = "download is off (data.download=false)"
    else:
        with tempfile.TemporaryDirectory(prefix="music-download-") as staging:
            try:
                for split_args in spec.split_args:
                    cls(root=staging, download=True, **split_args)
            except (RuntimeError, OSError) as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                reason = (
                    f"download failed ({lines[-1] if lines else type(e).__name__})"  # torchvision ends with the cause
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                for file in (Path(staging) / spec.folder).iterdir():
                    if file.is_file() and not (target / file.name).exists():
                        shutil.move(file, target / file.name)
                return target
    files = ", ".join(n for names in spec.files.values() for n in names)
    raise DataError(
        f"data.name={name}: no dataset files in {data_dir} and {reason}. "
        f"Put its {spec.kind} — {files} — in {data_dir} or {target},"
        " or point data.data_dir at the folder that holds them"
    )


def load_dataset(name: str, data_dir: str | Path, download: bool = True) -> Splits:
    """{'train': (uint8 images N×C×H×W, int64 labels), 'test': (...)} of one of DATASETS, read from the first folder
    that holds its files: data_dir itself, torchvision's data_dir/<spec.folder>, a system-wide copy, or what
    torchvision downloads into data_dir/<spec.folder>."""
    spec = DATASETS[name]
    data_dir = Path(data_dir)
    # a dataset's files may be in several places
    for folder in (data_dir, data_dir / spec.folder, *spec.system_copies):
        splits = spec.read(folder, spec)
        if splits is not None:
            break
    else:
        folder = _download(name, spec, data_dir, download)
        splits = spec.read(folder, spec)
        if splits is None:
            raise DataError(f"data.name={name}: the download into {folder} left some of its files missing")
    log.info("%s: %d train / %d test images from %s", name, len(splits["train"][1]), len(splits["test"][1]), folder)
    return splits
