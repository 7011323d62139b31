"""The data every run works with: the dataset's splits stored as uint8 (resident on the device, or streamed from a disk
cache: music.data.store), split per class, served as normalised batches by index."""

import hashlib
import os
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch.utils.data import DataLoader

from music.data.pixels import Resize
from music.data.refs import Catalog, Pixels
from music.data.resolve import DataPlan
from music.data.split import Split, make_split
from music.data.store import Rows, Store, open_stores, training_workers
from music.settings import Positive

PIL_MAX_PIXELS = 89_478_485  # PIL's own Image.MAX_IMAGE_PIXELS (a decompression-bomb guard)


class TaskData:
    """A dataset's images and labels, split into θ0's data and per-task data.

    Its own train/val loaders serve the pretrain split; `loader(indices)` serves any other stage (a task, the union of
    tasks, all validation data). Plain Python, so a run whose models all come from the cache never imports Lightning;
    MusicDataModule is the same data as a LightningDataModule.
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
        # where the images live: resident in memory (on the device) up to resident_max_gb, streamed from a disk cache
        # beyond (auto), or forced either way; `workers` decode image files and feed streamed batches
        storage: Literal["auto", "resident", "streamed"] = "auto",
        resident_max_gb: Annotated[float, "(0, inf)"] = 8.0,
        workers: Annotated[int, "[0, 64]"] = 4,
        # image files (data=image_folder, the 8-task datasets): squashed to image_size when no pretrained backbone
        # says otherwise; PIL refuses larger images (decompression bombs); null: no limit
        image_size: Annotated[int, "[8, 1024]"] = 32,
        max_image_pixels: Annotated[int, "[1, inf)"] | None = PIL_MAX_PIXELS,
        # data=image_folder's own settings (music.data.refs.ImageFolder)
        root: str | None = None,
        test_fraction: Annotated[float, "(0, 1)"] = 0.2,
        class_names: list[str] | None = None,  # what CLIP's zero-shot head reads; null: the folder names
        prompts: list[str] | None = None,  # its prompt templates, "{}" the class name; null: "a photo of a {}."
        plan: DataPlan | None = None,  # music.data.resolve's, for a run; None: `name` as declared
        cache_dir: str | None = None,  # where the disk cache of stored pixels goes (the run's cache.dir); None: none
    ):
        super().__init__()  # cooperative: LightningDataModule.__init__ when this is a MusicDataModule
        pretrain = pretrain or {}
        if plan is None:
            source, pixels = Catalog(name), Pixels(None, Resize(image_size))
            plan = DataPlan(source, source.declare(pixels), pixels, tasks or [], None)
        self.plan, self.data_dir, self.download = plan, data_dir, download
        self.spec = plan.spec
        self.tasks = [list(t) for t in tasks] if tasks else [[c] for c in range(self.spec.classes)]
        self.seed, self.val_fraction = seed, val_fraction
        self.pretrain_classes = list(pretrain.get("classes") or range(self.spec.classes))  # null: every class
        self.pretrain_fraction = pretrain.get("fraction", 0.5)
        self.pretrain_num_samples = pretrain.get("num_samples")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        # no more workers than cores: more only contend (DataLoader warns)
        self.storage, self.resident_max_gb, self.workers = storage, resident_max_gb, min(workers, os.cpu_count() or 1)
        self.max_image_pixels, self.cache_dir = max_image_pixels, cache_dir
        self.split: Split | None = None

    @property
    def name(self) -> str:
        """The dataset's key (music.data.refs): its name, or a composite's parts' names joined by '+'."""
        return self.plan.key

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        stores, mean, std = open_stores(
            self.plan.source,
            self.spec,
            self.plan.pixels,
            Path(self.data_dir),
            self.download,
            self.storage,
            self.resident_max_gb,
            Path(self.cache_dir) if self.cache_dir else None,
            self.workers,
            self.max_image_pixels,
        )
        if self.spec.mean is None:  # measured from the training images: the declaration now says it
            from dataclasses import replace

            self.spec = replace(self.spec, mean=mean, std=std)
        self.train, self.test = stores["train"], stores["test"]
        # which data this is, for cache keys: a folder's name says little (data=mnist may point at any IDX files)
        self.fingerprint = hashlib.sha256(
            self.train.labels.numpy().tobytes() + self.test.labels.numpy().tobytes()
        ).hexdigest()[:16]
        self.split = make_split(
            self.train.labels,
            self.tasks,
            self.seed,
            self.pretrain_classes,
            self.pretrain_fraction,
            self.pretrain_num_samples,
            self.val_fraction,
            num_classes=self.spec.classes,
        )

    @property
    def train_labels(self) -> torch.Tensor:
        return self.train.labels

    @property
    def test_labels(self) -> torch.Tensor:
        return self.test.labels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batches → the network's input (standardised with the dataset's statistics), on their device."""
        return self.train.normalize(images)

    @property
    def streamed(self) -> bool:
        return self.train.streamed

    def to(self, device: torch.device | str) -> "TaskData":
        """The labels (and resident images) moved to `device` once, for the whole run: every batch is then gathered
        there (on a GPU, training and evaluation of resident data never copy images from the host)."""
        self.train.to(device)
        self.test.to(device)
        return self

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalised training images at `indices`, on the run's device."""
        return self.train.gather(indices)

    def train_rows(self, indices: torch.Tensor) -> Rows:
        return self.train.view(indices)

    def test_rows(self, indices: torch.Tensor) -> Rows:
        return self.test.view(indices)

    def loader(self, indices: torch.Tensor, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """uint8 batches of training images at `indices` (shuffled with a seeded generator when training), on the run's
        device (resident) or pinned for it (streamed); `normalize` makes them the network's input."""
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        return self.train.loader(indices, batch_size, shuffle, seed, training_workers(self.workers))

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.split.pretrain_train, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.split.pretrain_val)

    def test_dataloader(self) -> DataLoader:
        rows = torch.arange(len(self.test))
        return self.test.loader(rows, self.eval_batch_size, False, 0, training_workers(self.workers))


__all__ = ["Store", "TaskData"]
