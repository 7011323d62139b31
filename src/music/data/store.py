"""Where a run's images live: uint8 pixels, normalised per batch on the device.

Resident: the whole split as one uint8 tensor moved once to the run's device (batches are gathered there by index; 4×
less memory than floats). Streamed: a split too large for memory is written once, already at the run's resolution,
into a disk cache of uint8 arrays read by row (keyed by exactly what determines its pixels: the dataset's key and
file list, the resize) and fed by a DataLoader (workers, pinned memory, prefetch) to the device. Both serve the same
positions in the same order for one seed, so a run gives the same batches either way; both keep their labels in
memory. Image files are decoded by a DataLoader's workers too (music.data.pixels).
"""

import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from music.cache import cache_key
from music.data.composite import conform
from music.data.pixels import ChannelMoments, Resize, array_resized, decode
from music.data.refs import Arrays, Files, Items, Pixels
from music.errors import DataError

log = logging.getLogger(__name__)
CHUNK = 1024  # images decoded or resized per step while storing


class _Decoded(Dataset):
    """Image files decoded at a resolution: an error comes back as a message (a worker's exception would reach the
    main process wrapped in a traceback, not as the one line the user should read)."""

    def __init__(self, paths, resize: Resize, max_pixels: int | None):
        self.paths, self.resize, self.max_pixels = paths, resize, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return decode(self.paths[i], self.resize, self.max_pixels), ""
        except DataError as e:
            return torch.zeros(3, self.resize.size, self.resize.size, dtype=torch.uint8), str(e)


def pixel_chunks(
    items: list[Items], pixels: Pixels, parts, shape: tuple[int, ...], workers: int, max_pixels: int | None
) -> Iterator[Tensor]:
    """uint8 images at the run's `shape`, chunk by chunk, in the items' order: files decoded, arrays resized through
    the backbone's transform when there is one, every part brought to the composite's shape."""
    for part, item in zip(parts, items):
        resize = pixels.of(part)
        if isinstance(item, Arrays):
            for chunk in item.images.split(CHUNK):
                yield conform(array_resized(chunk, resize) if resize else chunk, shape)
            continue
        loader = DataLoader(
            _Decoded(item.paths, resize, max_pixels), batch_size=CHUNK // 4, num_workers=workers, collate_fn=list
        )
        for batch in loader:
            for _, error in batch:
                if error:
                    raise DataError(error)
            yield conform(torch.stack([image for image, _ in batch]), shape)


def _count(items: list[Items]) -> int:
    return sum(len(item.labels) for item in items)


def fingerprint(items: list[Items]) -> str:
    """What the stored pixels are made of: the files (names, sizes, modification times) or the arrays' bytes."""
    parts = []
    for item in items:
        if isinstance(item, Files):
            parts.append([[str(p), (found := p.stat()).st_size, found.st_mtime_ns] for p in item.paths])
        else:
            parts.append(hashlib.sha256(item.images.contiguous().numpy().tobytes()).hexdigest())
        parts.append(item.labels.tolist())
    return cache_key({"items": parts})


class RowFile:
    """Rows of a uint8 N × C × H × W array file read with pread into fresh memory: nothing of the file is mapped into
    the process (a memory map's touched pages count as the reader's resident memory), the kernel's page cache serves
    repeated reads. Safe across forked DataLoader workers (pread has no shared file position)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), torch.uint8
        self.row = math.prod(self.shape[1:])
        self.fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):  # a spawned worker opens its own descriptor
        return {**self.__dict__, "fd": None}

    def read(self, rows: Tensor) -> Tensor:
        """uint8 images at `rows` (any order), read in ascending file order."""
        import os

        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        rows = rows.cpu()
        order = torch.argsort(rows)
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8)
        flat = out.view(len(rows), -1).numpy()
        for i, row in zip(order.tolist(), rows[order].tolist()):
            if os.preadv(self.fd, [flat[i]], row * self.row) != self.row:
                raise DataError(f"{self.path}: shorter than its {self.shape[0]} images (a damaged image cache)")
        return out

    def all(self) -> Tensor:
        """The whole array, read into memory (a resident store built from the disk cache)."""
        return torch.from_numpy(np.fromfile(self.path, dtype=np.uint8).reshape(self.shape))


class Store:
    """One split's images (uint8: a tensor resident on the device, or a RowFile on disk) and labels, normalised per
    batch."""

    def __init__(self, images: "Tensor | RowFile", labels: Tensor, mean, std, streamed: bool):
        self.images, self.labels, self.streamed = images, labels, streamed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "Store":
        """The labels (and a resident store's images) moved to `device` once, for the run."""
        self.device = torch.device(device)
        self.labels = self.labels.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        if not self.streamed:
            self.images = self.images.to(device)
        return self

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 → floats standardised per channel with the dataset's statistics, on `images`' device."""
        return images.float().div_(255).sub_(self.mean.to(images.device)).div_(self.std.to(images.device))

    def raw(self, rows: Tensor) -> Tensor:
        """uint8 images at `rows` (any order), on the run's device."""
        if not self.streamed:
            return self.images[rows.to(self.device)]
        return self.images.read(rows).to(self.device, non_blocking=True)

    def gather(self, rows: Tensor) -> Tensor:
        """Normalised float images at `rows`, on the run's device."""
        return self.normalize(self.raw(rows))

    def view(self, rows: Tensor) -> "Rows":
        return Rows(self, rows)

    def loader(self, rows: Tensor, batch_size: int, shuffle: bool, seed: int, workers: int = 0) -> DataLoader:
        return batches(self, rows, batch_size, shuffle, seed, workers)


class Rows:
    """Some rows of a store, read lazily: `split(n)` yields normalised batches on the device (what evaluation reads),
    so an evaluation set need not fit in memory."""

    def __init__(self, store: Store, rows: Tensor):
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def split(self, size: int) -> Iterator[Tensor]:
        for part in self.rows.split(size):
            yield self.store.gather(part)

    def materialize(self) -> Tensor:
        """All of them as one float tensor on the CPU (small sets only: alignment shots, statistics)."""
        return torch.cat([chunk.cpu() for chunk in self.split(4096)]) if len(self) else self.store.gather(self.rows)


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


class _Gathered(Dataset):
    """`dataset[positions]` → (uint8 images, labels) of a whole batch: one gather (resident: on the device; streamed:
    a sorted read of the cache file, in a worker)."""

    def __init__(self, store: Store, rows: Tensor):
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: Tensor):
        rows = self.rows[positions]
        if not self.store.streamed:
            return self.store.images[rows], self.store.labels[rows]
        return self.store.images.read(rows), self.labels[positions]


def training_workers(workers: int) -> int:
    """Workers that read streamed batches while the main process trains, only from cores to spare: two stay the
    trainer's and its device feeder's (on 2 cores, one worker made a streamed epoch 0.71× the resident one, none
    1.02×: benchmarks/storage.py)."""
    import os

    return max(0, min(workers, (os.cpu_count() or 1) - 2))


def batches(store: Store, rows: Tensor, batch_size: int, shuffle: bool, seed: int, workers: int) -> DataLoader:
    """A DataLoader of uint8 (images, labels) batches at `rows` — normalised on the device by their reader
    (Classifier.on_after_batch_transfer). The positions come from one seeded sampler, so resident and streamed
    storage give the same batches; a streamed store's are read by workers into pinned memory, prefetched."""
    sampler = BatchPositions(len(rows), batch_size, shuffle, seed)
    if not store.streamed:
        return DataLoader(_Gathered(store, rows.to(store.device)), batch_size=None, sampler=sampler)
    dataset = _Gathered(store, rows.cpu())
    dataset.labels = store.labels.cpu()[rows.cpu()]
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=store.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,  # one start per stage, not per epoch
    )


def build_resident(chunks: Iterator[Tensor], count: int, shape, moments: ChannelMoments | None) -> Tensor:
    images = torch.empty((count, *shape), dtype=torch.uint8)
    at = 0
    for chunk in chunks:
        images[at : at + len(chunk)] = chunk
        if moments is not None:
            moments.add(chunk)
        at += len(chunk)
    return images


class DiskImages:
    """The disk cache of one split's pixels: `<dir>/<key>/images.u8` (N × C × H × W uint8, raw bytes) and
    `meta.json` (shape, statistics), written in a temporary folder and renamed whole, under a file lock."""

    def __init__(self, folder: Path):
        self.folder = folder

    def read(self) -> tuple[RowFile, dict] | None:
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        return RowFile(self.folder / "images.u8", tuple(meta["shape"])), meta

    def write(self, chunks: Iterator[Tensor], count: int, shape, moments: ChannelMoments | None) -> None:
        from filelock import FileLock

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.folder}.lock"):
            if (self.folder / "meta.json").is_file():
                return
            staging = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}."))
            try:
                at = 0
                with open(staging / "images.u8", "wb") as out:  # written in order: nothing of it stays in memory
                    for chunk in chunks:
                        out.write(chunk.contiguous().numpy().tobytes())
                        if moments is not None:
                            moments.add(chunk)
                        at += len(chunk)
                if at != count:
                    raise DataError(f"{self.folder}: {at} images stored where {count} were listed")
                meta = {"shape": [count, *shape]}
                if moments is not None:
                    meta["mean"], meta["std"] = moments.result()
                (staging / "meta.json").write_text(json.dumps(meta))
                staging.rename(self.folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)


def _scratch() -> Path:
    """A folder for a streamed store when the cache is off (cache.enabled=false): removed when the process ends."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="music-images-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def open_stores(
    source,
    spec,
    pixels: Pixels,
    data_dir: Path,
    download: bool,
    storage: str,
    resident_max_gb: float,
    cache_dir: Path | None,
    workers: int,
    max_pixels: int | None,
) -> tuple[dict[str, Store], tuple, tuple]:
    """({'train': Store, 'test': Store}, mean, std) of `source` at the run's resolution: resident when the splits fit
    in `resident_max_gb` (or storage=resident), else streamed from the disk cache (or storage=streamed). Array datasets
    kept as decoded and resident are today's fast path: no disk, no pass over the pixels."""
    items = source.items(data_dir, download)
    parts = getattr(source, "parts", (source,))
    items = {split: found if isinstance(found, list) else [found] for split, found in items.items()}
    shape = spec.shape
    count = sum(_count(found) for found in items.values())
    size = count * math.prod(shape)
    streamed = storage == "streamed" or (storage == "auto" and size > resident_max_gb * 1e9)
    measured = spec.mean is None  # normalisation from the training images (image files)
    if not streamed and all(pixels.of(p) is None for p in parts):  # arrays as decoded: no pass, no disk
        images = {split: torch.cat([conform(i.images, shape) for i in found]) for split, found in items.items()}
        labels = {split: torch.cat([i.labels for i in found]) for split, found in items.items()}
        stores = {split: Store(images[split], labels[split], spec.mean, spec.std, False) for split in items}
        return stores, spec.mean, spec.std
    how = "streamed from a disk cache" if streamed else "resident"
    log.info(
        "%s: %d images at %s, %.2f GB as uint8, %s", source.key(), count, "×".join(map(str, shape)), size / 1e9, how
    )
    stores, stats = {}, (spec.mean, spec.std)
    for split in ("train", "test"):
        found = items[split]
        moments = ChannelMoments() if measured and split == "train" else None
        chunks = pixel_chunks(found, pixels, parts, shape, workers, max_pixels)
        labels = torch.cat([i.labels for i in found])
        if cache_dir is None and not streamed:
            images = build_resident(chunks, len(labels), shape, moments)
            stats = moments.result() if moments else stats
        else:
            material = {
                "source": source.key(),
                "split": split,
                "items": fingerprint(found),
                "pixels": [None if pixels.of(p) is None else pixels.of(p).material() for p in parts],
                "shape": list(shape),
            }
            where = Path(cache_dir) if cache_dir is not None else _scratch()
            disk = DiskImages(where / "images" / f"{split}-{cache_key(material)}")
            if disk.read() is None:
                disk.write(chunks, len(labels), shape, moments)
            images, meta = disk.read()
            if measured and split == "train":
                stats = (tuple(meta["mean"]), tuple(meta["std"]))
            if not streamed:
                images = images.all()  # read into memory once
        stores[split] = Store(images, labels, *stats, streamed)  # test: the training images' statistics (train first)
    return stores, stats[0], stats[1]
