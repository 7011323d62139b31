"""The data every run works with: images held as tensors in memory, split per class, served as whole batches by index."""

import hashlib
import math
from pathlib import Path
from typing import Annotated

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from music.data.sources import dataset_spec, load_dataset
from music.data.split import Split, make_split
from music.settings import Positive


class IndexedTensors(Dataset):
    """`dataset[positions]` → (images, labels) of a whole batch: one gather, no per-sample Python or collate."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[positions]
        return self.images[rows], self.labels[rows]


class BatchPositions(Sampler):
    """Yields tensors of positions, one per batch, in a seeded random order when shuffling."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        yield from order.split(self.batch_size)


_LOADED: dict[tuple, tuple[torch.Tensor, ...]] = {}


def load_normalized(name: str, data_dir: str, download: bool) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels), images as N×C×H×W floats standardised per channel with
    the dataset's declared mean and std. Loaded once per process (a multirun's jobs share it); never modified in place."""
    key = (name, str(Path(data_dir).resolve()))
    if key not in _LOADED:
        splits = load_dataset(name, data_dir, download)
        spec = dataset_spec(name)
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
        _LOADED.clear()  # keep one dataset in memory
        _LOADED[key] = tuple(
            x
            for images, labels in ((train_images, train_labels), (test_images, test_labels))
            for x in (images.float().div_(255).sub_(mean).div_(std), labels)
        )
    return _LOADED[key]


class TaskData:
    """A dataset of DATASETS as normalized float tensors, split into θ0's data and per-task data.

    Its own train/val loaders serve the pretrain split; `loader(indices)` serves any other stage (a task,
    the union of tasks, all validation data). Plain Python, so a run whose models all come from the cache
    never imports Lightning; MusicDataModule is the same data as a LightningDataModule.
    """

    def __init__(
        self,
        name: str = "mnist",
        data_dir: str = "data",
        download: bool = True,
        tasks: list[list[int]] | None = None,
        seed: int = 0,
        pretrain: dict | None = None,
        val_fraction: Annotated[float, "[0, 1)"] = 0.1,  # 0: nothing held out (a run that searches nothing)
        batch_size: Positive = 256,
        eval_batch_size: Positive = 4096,
        # data=image_folder's settings (its name spells them, music.data.image_folder reads them from it)
        root: str | None = None,
        image_size: Annotated[int, "[8, 1024]"] = 32,
        test_fraction: Annotated[float, "(0, 1)"] = 0.2,
    ):
        super().__init__()  # cooperative: LightningDataModule.__init__ when this is a MusicDataModule
        pretrain = pretrain or {}
        self.name, self.data_dir, self.download = name, data_dir, download
        self.spec = dataset_spec(name)
        self.tasks = (
            [list(t) for t in tasks] if tasks is not None else [[c] for c in range(self.spec.classes)]
        )  # None: one per class
        self.seed, self.val_fraction = seed, val_fraction
        self.pretrain_classes = list(pretrain.get("classes") or range(self.spec.classes))  # null: every class
        self.pretrain_fraction = pretrain.get("fraction", 0.5)
        self.pretrain_num_samples = pretrain.get("num_samples")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.split: Split | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.train_images, self.train_labels, self.test_images, self.test_labels = load_normalized(
            self.name, self.data_dir, self.download
        )
        # which data this is, for cache keys: a folder's name says little (data=mnist may point at any IDX files)
        self.fingerprint = hashlib.sha256(
            self.train_labels.numpy().tobytes() + self.test_labels.numpy().tobytes()
        ).hexdigest()[:16]
        self.split = make_split(
            self.train_labels,
            self.tasks,
            self.seed,
            self.pretrain_classes,
            self.pretrain_fraction,
            self.pretrain_num_samples,
            self.val_fraction,
            num_classes=self.spec.classes,
        )

    def to(self, device: torch.device | str) -> "TaskData":
        """The images and labels moved to `device` once, for the whole run: every batch is then gathered there (on a
        GPU, training and evaluation never copy images from the host)."""
        self.train_images, self.train_labels, self.test_images, self.test_labels = (
            t.to(device) for t in (self.train_images, self.train_labels, self.test_images, self.test_labels)
        )
        return self

    def loader(self, indices: torch.Tensor, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches of training images at `indices` (shuffled with a seeded generator when training), gathered on the
        images' device."""
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        dataset = IndexedTensors(self.train_images, self.train_labels, indices.to(self.train_images.device))
        return DataLoader(dataset, batch_size=None, sampler=BatchPositions(len(indices), batch_size, shuffle, seed))

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.split.pretrain_train, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.split.pretrain_val)

    def test_dataloader(self) -> DataLoader:
        dataset = IndexedTensors(
            self.test_images, self.test_labels, torch.arange(len(self.test_labels), device=self.test_images.device)
        )
        return DataLoader(dataset, batch_size=None, sampler=BatchPositions(len(dataset), self.eval_batch_size, False))
