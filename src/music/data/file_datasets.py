"""The 8-task merging benchmark's image datasets (EuroSAT, GTSRB, DTD, SUN397, Stanford Cars, RESISC45; MNIST and SVHN
are music.data.readers') in the on-disk layouts torchvision's dataset classes download to, with their official splits,
and in the plain ImageFolder layout many copies come in (`<folder>/train/<class>/…`, `<folder>/test/<class>/…`).

A reader lists files, it decodes nothing: `read_<name>(folder)` returns {'train': [(image file, label)], 'test': …}
with labels 0..K-1 in the order of the dataset's class names (music.data.prompts_eight, task_vectors' order), None
when `folder` holds neither layout (the caller tries its next folder), and raises DataError (one line naming the file
or folder) when it holds one but broken: an annotation file missing, a label out of range, an unknown class folder, a
listed image absent. The table FILE_DATASETS at the bottom declares each dataset (its folder under data_dir, reader,
class names, prompts, torchvision class); `download` fetches one with torchvision where it can.

Splits, as the task-arithmetic code (mlfoundations/task_vectors) trains and tests:
- EuroSAT: task_vectors reads a prepared EuroSAT_splits/{train,val,test}/<class>/ tree, a random 21,600/2,700/2,700
  split of the 27,000 images (its issue #1); that tree is read as is (train/ and test/; val/ is its validation set,
  here validation is held out of train). torchvision's eurosat/2750/<class>/ has no split: a seeded random split of the
  same proportions (1/10 test, 1/10 left out as task_vectors' validation, the remaining 8/10 train), so that per-dataset
  epochs mean as many steps as theirs. The images of this split are not task_vectors' (theirs was never published).
- GTSRB: the official Training/ folders vs Final_Test/Images with GT-final_test.csv.
- DTD: partition 1, training = train1.txt + val1.txt, test = test1.txt (task_vectors, after PAINT). Its prepared tree
  dtd/train/ + dtd/val/ (val = the test set) is read too.
- SUN397: the official partition Training_01.txt / Testing_01.txt (from SUN397's Partitions archive; torchvision does
  not download it) next to ClassName.txt or in Partitions/. task_vectors reads a prepared sun397/train/ + sun397/val/
  tree, read too; how it was split is not in its code (its issue #1 only links the archive), so without the partition
  files a torchvision folder is refused, not split at random.
- Stanford Cars: the devkit's cars_train_annos.mat vs cars_test_annos_withlabels.mat, names from cars_meta.mat.
- RESISC45: resisc45-train.txt vs resisc45-test.txt (the split lists task_vectors reads, from "In-domain
  representation learning for remote sensing"), over NWPU-RESISC45/<class>/*.jpg; resisc45-val.txt is not trained on.
"""

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from music.data import prompts_eight as names
from music.data.image_folder import IMAGE_SUFFIXES
from music.errors import DataError, first_line

FileSplits = dict[str, list[tuple[Path, int]]]  # {'train': [(image file, label)], 'test': […]}

EUROSAT_SPLIT_SEED = 0  # the held-out images of torchvision's EuroSAT folder: fixed, the same for every run seed
EUROSAT_TEST_FRACTION = 2_700 / 27_000  # task_vectors' test and validation sizes over EuroSAT's 27,000 images


def _key(name: str) -> str:
    """How class names and folder names are compared: case, underscores, slashes and spacing ignored."""
    return " ".join(re.split(r"[\s_/]+", name.lower())).strip()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _index(class_names: Sequence[str]) -> dict[str, int]:
    index = {_key(name): i for i, name in enumerate(class_names)}
    assert len(index) == len(class_names), "two declared class names compare equal"
    return index


def _class_of(
    raw: str, index: dict[str, int], alias: Callable[[str], str | None] | None, where: Path, class_names: Sequence[str]
) -> int:
    """The label of a class as a folder or an annotation names it: the declared name itself (any case, underscores or
    spaces), or what the dataset's `alias` makes of a raw name (GTSRB's 00014, EuroSAT's AnnualCrop, SUN397's a_abbey)."""
    label = index.get(_key(raw))
    if label is None and alias is not None and (named := alias(raw)) is not None:
        label = index.get(_key(named))
    if label is None:
        raise DataError(
            f"{where}: {raw!r} is none of the {len(class_names)} declared classes "
            f"({', '.join(map(repr, class_names[:3]))}, …)"
        )
    return label


def _class_folders(split: Path) -> list[tuple[str, list[Path]]]:
    """(path relative to `split`, its image files) of every folder under `split` that holds images itself: a class
    folder may be nested (SUN397's a/abbey/, b/bakery/shop/)."""
    found = []
    for parent, dirs, files in os.walk(split):
        dirs.sort()
        images = sorted(Path(parent) / f for f in files if _is_image(f))
        if images and Path(parent) != split:
            found.append((Path(parent).relative_to(split).as_posix(), images))
    return found


def read_image_folder_tree(
    folder: Path,
    class_names: Sequence[str],
    alias: Callable[[str], str | None] | None = None,
    test: str = "test",
) -> FileSplits | None:
    """`folder/train/<class>/…` and `folder/<test>/<class>/…` with class folders named after the declared classes (or
    their raw names, through `alias`), labels in the declared order; None unless both folders exist."""
    splits = {"train": folder / "train", "test": folder / test}
    if not all(path.is_dir() for path in splits.values()):
        return None
    index = _index(class_names)
    result: FileSplits = {}
    for split, path in splits.items():
        owner: dict[int, str] = {}
        files = []
        for rel, images in _class_folders(path):
            label = _class_of(rel, index, alias, path, class_names)
            if label in owner:
                raise DataError(f"{path}: {owner[label]!r} and {rel!r} are both class {class_names[label]!r}")
            owner[label] = rel
            files += [(image, label) for image in images]
        if not files:
            raise DataError(f"{path}: no class folder with images ({', '.join(IMAGE_SUFFIXES)})")
        result[split] = files
    return result


def _existing(files: list[tuple[Path, int]], listed_in: Path) -> list[tuple[Path, int]]:
    missing = [path for path, _ in files if not path.is_file()]
    if missing:
        raise DataError(f"{listed_in}: {len(missing)} listed images are missing (the first: {missing[0]})")
    return files


def _required(*paths: Path) -> None:
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}")


# --- EuroSAT ------------------------------------------------------------------------------------------------------
def read_eurosat(folder: Path) -> FileSplits | None:
    """An ImageFolder tree (also task_vectors' EuroSAT_splits/), or torchvision's 2750/<class>/ with a seeded split."""
    for tree in (folder, folder / "EuroSAT_splits"):
        if (found := read_image_folder_tree(tree, names.EUROSAT_NAMES, names.eurosat_name)) is not None:
            return found
    data = folder / "2750"
    if not data.is_dir():
        return None
    import torch

    index = _index(names.EUROSAT_NAMES)
    files = [
        (image, _class_of(rel, index, names.eurosat_name, data, names.EUROSAT_NAMES))
        for rel, images in _class_folders(data)
        for image in images
    ]
    held_out = round(EUROSAT_TEST_FRACTION * len(files))
    if held_out == 0:
        raise DataError(f"{data}: {len(files)} images are too few to hold 1/10 out as the test set")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(EUROSAT_SPLIT_SEED)).tolist()
    test, train = sorted(order[:held_out]), sorted(order[2 * held_out :])  # order[held_out:2*held_out]: their val
    return {"train": [files[i] for i in train], "test": [files[i] for i in test]}


# --- GTSRB --------------------------------------------------------------------------------------------------------
def _gtsrb_folder(name: str) -> str | None:
    """'00014' -> GTSRB_NAMES[14]: the official class folders are the ClassId, five digits."""
    return names.GTSRB_NAMES[int(name)] if name.isdigit() and int(name) < len(names.GTSRB_NAMES) else None


def read_gtsrb(folder: Path) -> FileSplits | None:
    """An ImageFolder tree, or torchvision's GTSRB/Training/<ClassId>/*.ppm, GTSRB/Final_Test/Images/*.ppm and
    GT-final_test.csv (Filename;…;ClassId)."""
    if (found := read_image_folder_tree(folder, names.GTSRB_NAMES, _gtsrb_folder)) is not None:
        return found
    training = folder / "GTSRB" / "Training"
    if not training.is_dir():
        return None
    test_images, annotations = folder / "GTSRB" / "Final_Test" / "Images", folder / "GT-final_test.csv"
    _required(test_images, annotations)
    index = _index(names.GTSRB_NAMES)
    train = [
        (image, _class_of(rel, index, _gtsrb_folder, training, names.GTSRB_NAMES))
        for rel, images in _class_folders(training)
        for image in images
        if image.suffix.lower() == ".ppm"  # torchvision's GTSRB takes only the .ppm files of a class folder
    ]
    if not train:
        raise DataError(f"{training}: no class folder with .ppm images")
    test = []
    with open(annotations, newline="") as file:
        for row in csv.DictReader(file, delimiter=";", skipinitialspace=True):
            try:
                name, label = row["Filename"], int(row["ClassId"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{annotations}: expected ';'-separated Filename and ClassId columns") from None
            if not 0 <= label < len(names.GTSRB_NAMES):
                raise DataError(f"{annotations}: ClassId {label} of {name} outside 0..{len(names.GTSRB_NAMES) - 1}")
            test.append((test_images / name, label))
    if not test:
        raise DataError(f"{annotations}: no rows")
    return {"train": train, "test": _existing(test, annotations)}


# --- DTD ----------------------------------------------------------------------------------------------------------
def read_dtd(folder: Path) -> FileSplits | None:
    """An ImageFolder tree (test/, or task_vectors' val/ as the test set), or torchvision's dtd/dtd/images/<class>/
    with labels/{train,val,test}1.txt (also the extracted dtd/ itself): train1 + val1 train, test1 tests."""
    for test in ("test", "val"):
        if (found := read_image_folder_tree(folder, names.DTD_NAMES, test=test)) is not None:
            return found
    data = next((d for d in (folder / "dtd", folder) if (d / "images").is_dir() and (d / "labels").is_dir()), None)
    if data is None:
        return None
    lists = {"train": ("train1.txt", "val1.txt"), "test": ("test1.txt",)}
    _required(*(data / "labels" / name for group in lists.values() for name in group))
    index = _index(names.DTD_NAMES)
    result: FileSplits = {}
    for split, group in lists.items():
        result[split] = []
        for name in group:
            listing, files = data / "labels" / name, []
            for line in listing.read_text().split():  # banded/banded_0002.jpg
                cls, _, image = line.partition("/")
                if not image:
                    raise DataError(f"{listing}: {line!r} is not <class>/<image>")
                files.append((data / "images" / cls / image, _class_of(cls, index, None, listing, names.DTD_NAMES)))
            result[split] += _existing(files, listing)
    return result


# --- SUN397 -------------------------------------------------------------------------------------------------------
def _sun397_folder(name: str) -> str | None:
    """'a_abbey' (task_vectors' folders) or 'a/abbey' (SUN397's own) -> 'abbey': the leading letter dropped."""
    return name[2:] if re.match(r"[a-z][_/]", name) else None


def read_sun397(folder: Path) -> FileSplits | None:
    """An ImageFolder tree (test/, or task_vectors' val/ as the test set), or torchvision's SUN397/ (ClassName.txt,
    <letter>/<class>/sun_*.jpg; also given as `folder` itself) with the partition Training_01.txt / Testing_01.txt."""
    for test in ("test", "val"):
        if (found := read_image_folder_tree(folder, names.SUN397_NAMES, _sun397_folder, test=test)) is not None:
            return found
    data = next((d for d in (folder, folder / "SUN397") if (d / "ClassName.txt").is_file()), None)
    if data is None:
        return None
    places = (data, data / "Partitions", data.parent, data.parent / "Partitions")
    partition = next(
        (d for d in places if (d / "Training_01.txt").is_file() and (d / "Testing_01.txt").is_file()), None
    )
    if partition is None:
        raise DataError(
            f"{data}: no Training_01.txt and Testing_01.txt (SUN397's official partition, in its Partitions archive): "
            "put them in that folder or its Partitions/"
        )
    index = _index(names.SUN397_NAMES)
    class_file = data / "ClassName.txt"
    declared = {
        entry: _class_of(entry[3:], index, None, class_file, names.SUN397_NAMES)
        for entry in class_file.read_text().split()
    }
    result: FileSplits = {}
    for split, name in (("train", "Training_01.txt"), ("test", "Testing_01.txt")):
        listing = partition / name
        files = []
        for line in listing.read_text().split():  # /a/abbey/sun_aaalbzqrimafwbiv.jpg
            entry = line.rsplit("/", 1)[0]
            if entry not in declared:
                raise DataError(f"{listing}: {line!r} is in no class of {class_file}")
            files.append((data / line.lstrip("/"), declared[entry]))
        result[split] = _existing(files, listing)
    return result


# --- Stanford Cars ------------------------------------------------------------------------------------------------
def _annotations(path: Path) -> list[tuple[str, int]]:
    """(fname, class 1..196) of a devkit annotation .mat."""
    import numpy as np
    import scipy.io

    try:
        rows = np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)["annotations"])
        return [(str(row["fname"]), int(row["class"])) for row in rows]
    except (KeyError, ValueError, TypeError, OSError) as e:  # not a .mat, or without the fields torchvision reads
        raise DataError(
            f"{path}: no annotations with fname and class ({first_line(str(e), type(e).__name__)})"
        ) from None


def read_stanford_cars(folder: Path) -> FileSplits | None:
    """An ImageFolder tree, or torchvision's stanford_cars/: devkit/{cars_meta,cars_train_annos}.mat, cars_train/,
    cars_test/ and cars_test_annos_withlabels.mat."""
    if (found := read_image_folder_tree(folder, names.CARS_NAMES)) is not None:
        return found
    devkit = folder / "devkit"
    if not devkit.is_dir():
        return None
    meta = devkit / "cars_meta.mat"
    parts = {
        "train": (devkit / "cars_train_annos.mat", folder / "cars_train"),
        "test": (folder / "cars_test_annos_withlabels.mat", folder / "cars_test"),
    }
    _required(meta, *(path for pair in parts.values() for path in pair))
    import scipy.io

    try:
        listed = [str(name) for name in scipy.io.loadmat(str(meta), squeeze_me=True)["class_names"].tolist()]
    except (KeyError, ValueError, TypeError, OSError, AttributeError) as e:
        raise DataError(f"{meta}: no class_names ({first_line(str(e), type(e).__name__)})") from None
    if [_key(n) for n in listed] != [_key(n) for n in names.CARS_NAMES]:
        wrong = next((i for i, (a, b) in enumerate(zip(listed, names.CARS_NAMES)) if _key(a) != _key(b)), len(listed))
        raise DataError(
            f"{meta}: {len(listed)} class names that differ from the declared {len(names.CARS_NAMES)} at row {wrong}"
        )
    result: FileSplits = {}
    for split, (annotations, images) in parts.items():
        files = []
        for fname, cls in _annotations(annotations):
            if not 1 <= cls <= len(names.CARS_NAMES):
                raise DataError(f"{annotations}: class {cls} of {fname} outside 1..{len(names.CARS_NAMES)}")
            files.append((images / fname, cls - 1))  # the devkit counts classes from 1
        result[split] = _existing(files, annotations)
    return result


# --- RESISC45 -----------------------------------------------------------------------------------------------------
def read_resisc45(folder: Path) -> FileSplits | None:
    """An ImageFolder tree, or task_vectors' resisc45/: NWPU-RESISC45/<class>/*.jpg and the split lists
    resisc45-train.txt, resisc45-test.txt (one image file name a line)."""
    if (found := read_image_folder_tree(folder, names.RESISC45_NAMES)) is not None:
        return found
    data = folder / "NWPU-RESISC45"
    if not data.is_dir():
        return None
    lists = {split: folder / f"resisc45-{split}.txt" for split in ("train", "test")}
    _required(*lists.values())
    index = _index(names.RESISC45_NAMES)
    by_name = {
        image.name: (image, _class_of(rel, index, None, data, names.RESISC45_NAMES))
        for rel, images in _class_folders(data)
        for image in images
    }
    result: FileSplits = {}
    for split, listing in lists.items():
        listed = listing.read_text().split()
        missing = [name for name in listed if name not in by_name]
        if missing:
            raise DataError(f"{listing}: {len(missing)} listed images are not under {data} (the first: {missing[0]})")
        result[split] = [by_name[name] for name in listed]
    return result


# --- the table ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileDataset:
    name: str
    title: str
    folder: str  # under data_dir: where torchvision's download puts it (task_vectors' folder for RESISC45)
    read: Callable[[Path], FileSplits | None]
    class_names: tuple[str, ...]
    prompts: tuple[str, ...]
    torchvision: str | None  # the torchvision.datasets class that downloads it
    download_args: tuple[tuple[tuple[str, str], ...], ...]  # keyword arguments of each download call
    layout: str  # what to put in the folder by hand

    def fill_hint(self, data_dir: Path) -> str:
        return f"put {self.title} in {Path(data_dir) / self.folder}: {self.layout}"


_TREE = "or train/<class>/ + test/<class>/"
FILE_DATASETS: dict[str, FileDataset] = {
    d.name: d
    for d in (
        FileDataset(
            name="eurosat",
            title="EuroSAT",
            folder="eurosat",
            read=read_eurosat,
            class_names=names.EUROSAT_NAMES,
            prompts=names.EUROSAT_PROMPTS,
            torchvision="EuroSAT",
            download_args=((),),
            layout=f"2750/<class>/*.jpg (EuroSAT.zip), EuroSAT_splits/{{train,test}}/<class>/ {_TREE}",
        ),
        FileDataset(
            name="gtsrb",
            title="GTSRB",
            folder="gtsrb",
            read=read_gtsrb,
            class_names=names.GTSRB_NAMES,
            prompts=names.GTSRB_PROMPTS,
            torchvision="GTSRB",
            download_args=((("split", "train"),), (("split", "test"),)),
            layout=f"GTSRB/Training/<ClassId>/*.ppm, GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv, {_TREE}",
        ),
        FileDataset(
            name="dtd",
            title="DTD",
            folder="dtd",
            read=read_dtd,
            class_names=names.DTD_NAMES,
            prompts=names.DTD_PROMPTS,
            torchvision="DTD",
            download_args=((),),
            layout=f"dtd/images/<class>/*.jpg and dtd/labels/{{train1,val1,test1}}.txt (dtd-r1.0.1.tar.gz), {_TREE}",
        ),
        FileDataset(
            name="sun397",
            title="SUN397",
            folder="SUN397",
            read=read_sun397,
            class_names=names.SUN397_NAMES,
            prompts=names.SUN397_PROMPTS,
            torchvision="SUN397",
            download_args=((),),
            layout="ClassName.txt, <letter>/<class>/*.jpg (SUN397.tar.gz) and Training_01.txt + Testing_01.txt "
            f"(its Partitions archive), {_TREE}",
        ),
        FileDataset(
            name="stanford_cars",
            title="Stanford Cars",
            folder="stanford_cars",
            read=read_stanford_cars,
            class_names=names.CARS_NAMES,
            prompts=names.CARS_PROMPTS,
            torchvision="StanfordCars",  # its download is gone (torchvision raises): the hint is what is left
            download_args=((("split", "train"),),),
            layout="devkit/{cars_meta,cars_train_annos}.mat, cars_train/, cars_test/ and "
            f"cars_test_annos_withlabels.mat, {_TREE}",
        ),
        FileDataset(
            name="resisc45",
            title="RESISC45",
            folder="resisc45",
            read=read_resisc45,
            class_names=names.RESISC45_NAMES,
            prompts=names.RESISC45_PROMPTS,
            torchvision=None,
            download_args=(),
            layout="NWPU-RESISC45/<class>/*.jpg and resisc45-train.txt + resisc45-test.txt "
            f"(remote_sensing_representations' split lists), {_TREE}",
        ),
    )
}


def download(name: str, data_dir: Path) -> Path | None:
    """Download dataset `name` into data_dir with its torchvision class (nothing is fetched when torchvision finds it
    there already) and return the folder to read; None when no class downloads it (RESISC45: the caller refuses with
    `fill_hint`). A failed download (no network, a dead URL, a bad checksum) is one line naming the folder to fill."""
    dataset = FILE_DATASETS[name]
    if dataset.torchvision is None:
        return None
    import torchvision.datasets

    make = getattr(torchvision.datasets, dataset.torchvision)
    for kwargs in dataset.download_args:
        try:
            make(root=str(data_dir), download=True, **dict(kwargs))
        except Exception as e:  # torchvision raises what urllib, its checksum or a dead mirror raise: all say the same
            raise DataError(
                f"{dataset.title}: torchvision.datasets.{dataset.torchvision} could not download it "
                f"({first_line(str(e), type(e).__name__)}); {dataset.fill_hint(data_dir)}"
            ) from None
    return Path(data_dir) / dataset.folder


def load_files(name: str, data_dir: Path, download_missing: bool) -> FileSplits:
    """The files of dataset `name`: from data_dir/<its folder> (or data_dir itself) in its real layout or as a plain
    train/ + test/ tree; else what torchvision downloads there (data.download=true); else one line naming the folder
    to fill and what goes there."""
    dataset = FILE_DATASETS[name]
    for folder in (data_dir / dataset.folder, data_dir / name, data_dir):
        if folder.is_dir() and (found := dataset.read(folder)) is not None:
            return found
    fetched = download(name, data_dir) if download_missing else None
    if fetched is not None and (found := dataset.read(fetched)) is not None:
        return found
    raise DataError(f"data.name={name}: {dataset.fill_hint(data_dir)}")
