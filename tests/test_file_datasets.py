"""The 8-task datasets' readers (music.data.file_datasets) on small copies written in each real on-disk layout —
torchvision's (task_vectors' for RESISC45) with their annotation files (.mat, .csv, .txt) and the ImageFolder tree —
and their class names and templates compared with the task-arithmetic code's (mlfoundations/task_vectors)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from music.data import file_datasets as fd
from music.data import prompts_eight as names
from music.errors import DataError


def image(path: Path, value: int = 0) -> Path:
    """A tiny RGB image in the format its suffix names (jpg, ppm, png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, 2 * value % 256, 3 * value % 256)).save(path)
    return path


def as_set(files: list[tuple[Path, int]]) -> set[tuple[str, int]]:
    return {(path.name, label) for path, label in files}


def refused(read, folder: Path, *words: str) -> str:
    with pytest.raises(DataError) as caught:
        read(folder)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


# --- writers of each layout ---------------------------------------------------------------------------------------
def write_tree(folder: Path, classes: dict[str, int], test: str = "test", suffix: str = ".jpg") -> None:
    """folder/train/<class>/ (3 images) and folder/<test>/<class>/ (2): `classes` maps a folder name to its count key."""
    for split, count in (("train", 3), (test, 2)):
        for raw in classes:
            for i in range(count):
                image(folder / split / raw / f"{raw.replace('/', '_')}_{split}_{i}{suffix}", i)


def write_eurosat_2750(folder: Path, per_class: int = 10) -> None:
    for raw in ("AnnualCrop", "Industrial", "SeaLake"):
        for i in range(per_class):
            image(folder / "2750" / raw / f"{raw}_{i + 1}.jpg", i)


def write_gtsrb(folder: Path) -> None:
    """torchvision's GTSRB: Training/<ClassId>/*.ppm (+ its per-class GT csv), Final_Test/Images/*.ppm, GT-final_test.csv."""
    for cls in (0, 14):
        for i in range(2):
            image(folder / "GTSRB" / "Training" / f"{cls:05d}" / f"00000_{i:05d}.ppm", i)
        (folder / "GTSRB" / "Training" / f"{cls:05d}" / f"GT-{cls:05d}.csv").write_text("Filename;ClassId\n")
    rows = [("00000.ppm", 14), ("00001.ppm", 0), ("00002.ppm", 42)]
    for name, _ in rows:
        image(folder / "GTSRB" / "Final_Test" / "Images" / name)
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    body = "".join(f"{name};4;4;0;0;3;3;{cls}\n" for name, cls in rows)
    (folder / "GT-final_test.csv").write_text(header + body)


def write_dtd(folder: Path) -> Path:
    """torchvision's DTD: dtd/dtd/images/<class>/*.jpg and dtd/dtd/labels/{train,val,test}1.txt (`folder` = data_dir/dtd)."""
    data = folder / "dtd"
    listed = {"train1.txt": [], "val1.txt": [], "test1.txt": []}
    for cls in ("banded", "polka-dotted", "zigzagged"):
        for i, listing in enumerate(listed):
            listed[listing].append(f"{cls}/{cls}_{i:04d}.jpg")
            image(data / "images" / cls / f"{cls}_{i:04d}.jpg", i)
    for listing, lines in listed.items():
        (data / "labels" / listing).parent.mkdir(parents=True, exist_ok=True)
        (data / "labels" / listing).write_text("\n".join(lines) + "\n")
    return data


def write_sun397(folder: Path) -> None:
    """torchvision's SUN397/ (ClassName.txt, <letter>/<class>/sun_*.jpg) with Partitions/Training_01.txt, Testing_01.txt."""
    entries = ["/a/abbey", "/b/bakery/shop", "/j/jail/indoor", "/j/jail_cell"]
    (folder / "ClassName.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "ClassName.txt").write_text("\n".join(entries) + "\n")
    lines = {"Training_01.txt": [], "Testing_01.txt": []}
    for entry in entries:
        for i, listing in enumerate(lines):
            line = f"{entry}/sun_{entry.replace('/', '')}{i}.jpg"
            lines[listing].append(line)
            image(folder / line.lstrip("/"), i)
        image(folder / entry.lstrip("/") / "sun_unlisted.jpg")  # in neither list: not read
    (folder / "Partitions").mkdir()
    for listing, rows in lines.items():
        (folder / "Partitions" / listing).write_text("\n".join(rows) + "\n")


def write_stanford_cars(folder: Path, test_class: int = 196) -> None:
    """torchvision's stanford_cars/: devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat."""
    (folder / "devkit").mkdir(parents=True)
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array(names.CARS_NAMES, dtype=object)})
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    for annotations, images, rows in (
        (folder / "devkit" / "cars_train_annos.mat", folder / "cars_train", [("00001.jpg", 1), ("00002.jpg", 14)]),
        (folder / "cars_test_annos_withlabels.mat", folder / "cars_test", [("00001.jpg", test_class)]),
    ):
        table = np.zeros((1, len(rows)), dtype=fields)
        for i, (fname, cls) in enumerate(rows):
            table[0, i] = (1, 1, 3, 3, cls, fname)
            image(images / fname, i)
        scipy.io.savemat(annotations, {"annotations": table})


def write_resisc45(folder: Path) -> None:
    """task_vectors' resisc45/: NWPU-RESISC45/<class>/<class>_NNN.jpg and resisc45-{train,val,test}.txt."""
    lists = {"train": [], "val": [], "test": []}
    for cls in ("airplane", "baseball_diamond", "wetland"):
        for i, split in enumerate(("train", "train", "val", "test")):
            name = f"{cls}_{i + 1:03d}.jpg"
            image(folder / "NWPU-RESISC45" / cls / name, i)
            lists[split].append(name)
    for split, rows in lists.items():
        (folder / f"resisc45-{split}.txt").write_text("\n".join(rows) + "\n")


# --- names and templates, as task_vectors spells them -------------------------------------------------------------
def test_names_and_templates_are_task_vectors():
    # literal values read in mlfoundations/task_vectors' src/datasets/{gtsrb,eurosat,resisc45,templates}.py
    assert names.GTSRB_NAMES[0] == "red and white circle 20 kph speed limit"
    assert names.GTSRB_NAMES[14] == "stop"
    assert names.GTSRB_NAMES[42] == "white circle with gray strike bar indicating no passing for trucks has ended"
    assert names.EUROSAT_NAMES[0] == "annual crop land"
    assert names.EUROSAT_NAMES[2] == "brushland or shrubland"
    assert names.EUROSAT_NAMES[4] == "industrial buildings or commercial buildings"
    assert names.EUROSAT_NAMES[9] == "lake or sea"
    assert names.RESISC45_NAMES[2] == "baseball diamond"
    assert names.RESISC45_NAMES[43] == "thermal power station"
    assert names.DTD_NAMES[30] == "polka-dotted"
    assert names.CARS_NAMES[0] == "AM General Hummer SUV 2000"
    assert names.SUN397_NAMES[:2] == ("abbey", "airplane cabin")
    assert names.SUN397_NAMES.index("bakery shop") == 27
    # its folders sort "j_jail_cell" before "j_jail_indoor" (ClassName.txt has /j/jail/indoor first)
    assert names.SUN397_NAMES.index("jail cell") + 1 == names.SUN397_NAMES.index("jail indoor")
    counts = [len(n) for n in (names.EUROSAT_NAMES, names.GTSRB_NAMES, names.DTD_NAMES, names.SUN397_NAMES)]
    assert counts + [len(names.CARS_NAMES), len(names.RESISC45_NAMES)] == [10, 43, 47, 397, 196, 45]
    first = {d.name: (d.prompts[0], len(d.prompts)) for d in fd.FILE_DATASETS.values()}
    assert first == {
        "eurosat": ("a centered satellite photo of {}.", 3),
        "gtsrb": ('a zoomed in photo of a "{}" traffic sign.', 3),
        "dtd": ("a photo of a {} texture.", 8),
        "sun397": ("a photo of a {}.", 2),
        "stanford_cars": ("a photo of a {}.", 8),
        "resisc45": ("satellite imagery of {}.", 18),
    }
    assert names.DTD_PROMPTS[-1] == "a photo of the {} object."
    assert names.RESISC45_PROMPTS[-1] == "aerial view of the {}."
    assert names.CARS_PROMPTS[3] == "i love my {}!"
    assert names.EUROSAT_PROMPTS[1].format(names.EUROSAT_NAMES[8]) == "a centered satellite photo of a river."


def test_eurosat_folder_names_read_as_task_vectors_does():
    assert names.eurosat_words("HerbaceousVegetation") == "herbaceous vegetation"
    assert names.eurosat_words("Residential") == "residential area"
    assert names.eurosat_name("SeaLake") == "lake or sea"
    assert names.eurosat_name("Glacier") is None


# --- each reader on its own layout --------------------------------------------------------------------------------
def test_eurosat_torchvision_folder_gets_a_seeded_split_of_task_vectors_sizes(tmp_path):
    write_eurosat_2750(tmp_path)  # 30 images: 3 test, 3 left out (their validation), 24 train
    splits = fd.read_eurosat(tmp_path)
    assert (len(splits["train"]), len(splits["test"])) == (24, 3)
    assert not as_set(splits["train"]) & as_set(splits["test"])
    labels = {path.parent.name: label for path, label in splits["train"] + splits["test"]}
    assert labels == {"AnnualCrop": 0, "Industrial": 4, "SeaLake": 9}
    assert fd.read_eurosat(tmp_path) == splits  # fixed by its seed


def test_eurosat_splits_tree_reads_train_and_test(tmp_path):
    write_tree(tmp_path / "EuroSAT_splits", {"AnnualCrop": 0, "Highway": 0}, suffix=".jpg")
    for raw in ("AnnualCrop", "Highway"):
        image(tmp_path / "EuroSAT_splits" / "val" / raw / "unused.jpg")
    splits = fd.read_eurosat(tmp_path)
    assert (len(splits["train"]), len(splits["test"])) == (6, 4)
    assert {label for _, label in splits["test"]} == {0, 3}
    assert "unused.jpg" not in {path.name for path, _ in splits["train"] + splits["test"]}


def test_gtsrb_official_folders_and_test_csv(tmp_path):
    write_gtsrb(tmp_path)
    splits = fd.read_gtsrb(tmp_path)
    assert as_set(splits["train"]) == {("00000_00000.ppm", 0), ("00000_00001.ppm", 0)} | {
        ("00000_00000.ppm", 14),
        ("00000_00001.ppm", 14),
    }
    assert sorted(label for _, label in splits["train"]) == [0, 0, 14, 14]
    assert [(p.name, label) for p, label in splits["test"]] == [("00000.ppm", 14), ("00001.ppm", 0), ("00002.ppm", 42)]


def test_gtsrb_broken_copies_are_one_line(tmp_path):
    write_gtsrb(tmp_path)
    csv = tmp_path / "GT-final_test.csv"
    csv.write_text(csv.read_text().replace(";42\n", ";43\n"))
    refused(fd.read_gtsrb, tmp_path, "GT-final_test.csv", "ClassId 43", "0..42")
    csv.unlink()
    refused(fd.read_gtsrb, tmp_path, "missing", "GT-final_test.csv")


def test_dtd_partition_one_trains_on_train_and_val(tmp_path):
    write_dtd(tmp_path)
    splits = fd.read_dtd(tmp_path)
    classes = (("banded", 0), ("polka-dotted", 30), ("zigzagged", 46))
    assert as_set(splits["train"]) == {(f"{c}_{i:04d}.jpg", n) for c, n in classes for i in (0, 1)}
    assert as_set(splits["test"]) == {("banded_0002.jpg", 0), ("polka-dotted_0002.jpg", 30), ("zigzagged_0002.jpg", 46)}
    assert fd.read_dtd(tmp_path / "dtd") == splits  # the extracted dtd/ given itself
    (tmp_path / "dtd" / "labels" / "test1.txt").unlink()
    refused(fd.read_dtd, tmp_path, "missing", "test1.txt")


def test_sun397_official_partition(tmp_path):
    write_sun397(tmp_path / "SUN397")
    splits = fd.read_sun397(tmp_path / "SUN397")
    cell, indoor = names.SUN397_NAMES.index("jail cell"), names.SUN397_NAMES.index("jail indoor")
    assert as_set(splits["train"]) == {
        ("sun_aabbey0.jpg", 0),
        ("sun_bbakeryshop0.jpg", 27),
        ("sun_jjailindoor0.jpg", indoor),
        ("sun_jjail_cell0.jpg", cell),
    }
    assert {label for _, label in splits["test"]} == {0, 27, indoor, cell}
    assert fd.read_sun397(tmp_path) == splits  # data_dir given: torchvision's SUN397/ under it


def test_sun397_without_partition_or_with_an_unknown_class_is_refused(tmp_path):
    write_sun397(tmp_path / "SUN397")
    class_file = tmp_path / "SUN397" / "ClassName.txt"
    class_file.write_text(class_file.read_text() + "/z/zeppelin_hangar\n")
    refused(fd.read_sun397, tmp_path / "SUN397", "ClassName.txt", "'zeppelin_hangar' is none of the 397")
    for listing in ("Training_01.txt", "Testing_01.txt"):
        (tmp_path / "SUN397" / "Partitions" / listing).unlink()
    refused(fd.read_sun397, tmp_path / "SUN397", "Training_01.txt", "Testing_01.txt")


def test_stanford_cars_devkit_annotations(tmp_path):
    write_stanford_cars(tmp_path)
    splits = fd.read_stanford_cars(tmp_path)
    assert [(p.parent.name, p.name, label) for p, label in splits["train"]] == [
        ("cars_train", "00001.jpg", 0),
        ("cars_train", "00002.jpg", 13),
    ]
    assert [(p.parent.name, p.name, label) for p, label in splits["test"]] == [("cars_test", "00001.jpg", 195)]


def test_stanford_cars_label_out_of_range_is_one_line(tmp_path):
    write_stanford_cars(tmp_path, test_class=197)
    refused(fd.read_stanford_cars, tmp_path, "cars_test_annos_withlabels.mat", "class 197", "1..196")


def test_resisc45_split_lists(tmp_path):
    write_resisc45(tmp_path)
    splits = fd.read_resisc45(tmp_path)
    assert as_set(splits["train"]) == {
        (f"{c}_{i:03d}.jpg", n) for c, n in (("airplane", 0), ("baseball_diamond", 2), ("wetland", 44)) for i in (1, 2)
    }
    assert as_set(splits["test"]) == {("airplane_004.jpg", 0), ("baseball_diamond_004.jpg", 2), ("wetland_004.jpg", 44)}
    (tmp_path / "NWPU-RESISC45" / "wetland" / "wetland_004.jpg").unlink()
    refused(fd.read_resisc45, tmp_path, "resisc45-test.txt", "wetland_004.jpg")
    (tmp_path / "resisc45-train.txt").unlink()
    refused(fd.read_resisc45, tmp_path, "missing", "resisc45-train.txt")


# --- the ImageFolder tree, for every dataset ----------------------------------------------------------------------
TREES = {  # raw folder names as copies name them -> the label they must get
    "eurosat": {"AnnualCrop": 0, "Industrial": 4, "lake or sea": 9},
    "gtsrb": {"00000": 0, "00014": 14, "00042": 42},
    "dtd": {"banded": 0, "polka-dotted": 30},
    "sun397": {"a_abbey": 0, "b/bakery/shop": 27, "j/jail_cell": 206, "youth hostel": 396},
    "stanford_cars": {"AM General Hummer SUV 2000": 0, "Ram C/V Cargo Van Minivan 2012": 173},
    "resisc45": {"baseball_diamond": 2, "thermal power station": 43},
}


@pytest.mark.parametrize("name", sorted(TREES))
def test_image_folder_tree_of_each_dataset(tmp_path, name):
    dataset = fd.FILE_DATASETS[name]
    assert dataset.read(tmp_path) is None  # an empty folder is no layout
    write_tree(tmp_path, TREES[name], suffix=".ppm" if name == "gtsrb" else ".jpg")
    splits = dataset.read(tmp_path)
    for split, count in (("train", 3), ("test", 2)):
        got = {(path.relative_to(tmp_path / split).parent.as_posix(), label) for path, label in splits[split]}
        assert got == set(TREES[name].items())
        assert len(splits[split]) == count * len(TREES[name])
    for raw, label in TREES[name].items():
        assert dataset.class_names[label]  # a declared class, in range


@pytest.mark.parametrize("name", sorted(TREES))
def test_unknown_class_folder_is_one_line(tmp_path, name):
    write_tree(tmp_path, {next(iter(TREES[name])): 0, "not_a_class": 0})
    refused(fd.FILE_DATASETS[name].read, tmp_path, "'not_a_class' is none of the", str(tmp_path / "train"))


def test_task_vectors_val_folder_is_the_test_set_of_dtd_and_sun397(tmp_path):
    write_tree(tmp_path / "dtd", {"banded": 0}, test="val")
    write_tree(tmp_path / "sun397", {"a_abbey": 0, "a_apse_indoor": 0}, test="val")
    assert [label for _, label in fd.read_dtd(tmp_path / "dtd")["test"]] == [0, 0]
    assert {label for _, label in fd.read_sun397(tmp_path / "sun397")["test"]} == {0, 9}


def test_two_folders_of_one_class_are_refused(tmp_path):
    write_tree(tmp_path, {"00014": 0, "stop": 0})
    refused(fd.read_gtsrb, tmp_path, "'00014' and 'stop' are both class 'stop'")


# --- the table and downloads --------------------------------------------------------------------------------------
def test_table_declares_each_reader_and_torchvision_folder():
    assert {n: (d.folder, d.torchvision) for n, d in fd.FILE_DATASETS.items()} == {
        "eurosat": ("eurosat", "EuroSAT"),
        "gtsrb": ("gtsrb", "GTSRB"),
        "dtd": ("dtd", "DTD"),
        "sun397": ("SUN397", "SUN397"),
        "stanford_cars": ("stanford_cars", "StanfordCars"),
        "resisc45": ("resisc45", None),
    }
    for dataset in fd.FILE_DATASETS.values():
        assert dataset.read is getattr(fd, f"read_{dataset.name}")


def test_download_finds_a_present_copy_without_the_network(tmp_path):
    write_eurosat_2750(tmp_path / "eurosat")  # torchvision's EuroSAT sees 2750/ and downloads nothing
    folder = fd.download("eurosat", tmp_path)
    assert folder == tmp_path / "eurosat"
    assert len(fd.read_eurosat(folder)["test"]) == 3


def test_download_without_a_source_is_none_or_one_line(tmp_path, monkeypatch):
    assert fd.download("resisc45", tmp_path) is None
    assert "NWPU-RESISC45" in fd.FILE_DATASETS["resisc45"].fill_hint(tmp_path)
    # torchvision's StanfordCars refuses to download (its URL is gone): the message says what to put where
    with pytest.raises(DataError) as caught:
        fd.download("stanford_cars", tmp_path)
    assert "\n" not in str(caught.value) and str(tmp_path / "stanford_cars") in str(caught.value)
    assert "cars_meta" in str(caught.value)

    import torchvision.datasets

    def offline(**kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>\nmore")

    monkeypatch.setattr(torchvision.datasets, "GTSRB", offline)
    with pytest.raises(DataError) as caught:
        fd.download("gtsrb", tmp_path)
    assert "\n" not in str(caught.value) and "name resolution" in str(caught.value)
    assert str(tmp_path / "gtsrb") in str(caught.value) and "GT-final_test.csv" in str(caught.value)
