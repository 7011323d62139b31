"""Resident and streamed storage serve the same pixels in the same batches for one seed; auto picks by size; the disk
cache is written once and keyed by what determines its pixels."""

from pathlib import Path

import pytest
import torch

from music.cache import cache_key
from music.data.image_folder import read_tree
from music.data.pixels import Resize
from music.data.refs import ImageFolder, Pixels
from music.data.resolve import DataPlan
from music.data.task_data import TaskData
from test_datasets_as_tasks import write_folder


def stored(root: Path, cache: Path, size: int = 16, **settings) -> TaskData:
    source, pixels = ImageFolder(str(root), 0.25), Pixels(None, Resize(size))
    plan = DataPlan(source, source.declare(pixels), pixels, [[0], [1], [2]], None)
    data = TaskData(plan=plan, cache_dir=str(cache), batch_size=5, image_size=size, workers=1, **settings)
    data.setup()
    return data


def test_resident_and_streamed_give_the_same_batches(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=10)
    resident = stored(root, tmp_path / "cache", storage="resident")
    streamed = stored(root, tmp_path / "cache", storage="streamed")
    assert not resident.streamed and streamed.streamed
    assert len(list((tmp_path / "cache" / "images").glob("train-*/meta.json"))) == 1  # one disk entry serves both
    assert torch.equal(resident.train.images, streamed.train.images.all())
    assert resident.spec.mean == streamed.spec.mean  # measured once, when the entry was written
    rows = resident.split.task_train(1)
    for (a, y), (b, z) in zip(resident.loader(rows, shuffle=True, seed=3), streamed.loader(rows, shuffle=True, seed=3)):
        assert torch.equal(a, b) and torch.equal(y, z) and a.dtype == torch.uint8
    picked = torch.tensor([7, 0, 19, 3])  # any order, read in file order, given back in this one
    assert torch.equal(streamed.images(picked), resident.images(picked))
    chunks = [c for c in streamed.train_rows(picked).split(3)]
    assert [len(c) for c in chunks] == [3, 1] and torch.equal(torch.cat(chunks), resident.images(picked))


def test_auto_streams_what_exceeds_the_resident_budget_and_the_key_follows_the_pixels(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6)
    assert not stored(root, tmp_path / "cache", storage="auto").streamed  # a few kB
    assert stored(root, tmp_path / "cache", storage="auto", resident_max_gb=1e-6).streamed
    stored(root, tmp_path / "cache", size=20, storage="streamed")  # another resolution: another entry
    assert len(list((tmp_path / "cache" / "images").glob("train-*/meta.json"))) == 2
    (root / "cat" / "0.jpg").unlink()  # other files: another entry
    read_tree.cache_clear()  # a process lists a tree once
    stored(root, tmp_path / "cache", storage="streamed")
    assert len(list((tmp_path / "cache" / "images").glob("train-*/meta.json"))) == 3


def test_a_damaged_cache_file_is_one_line(tmp_path):
    from music.errors import DataError

    root = write_folder(tmp_path / "pets", per_class=6)
    data = stored(root, tmp_path / "cache", storage="streamed")
    path = data.train.images.path
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="shorter than its"):
        data.images(torch.tensor([len(data.train) - 1]))


def test_a_zero_shot_heads_names_and_prompts_are_in_theta0s_key(tmp_path, weights):
    """CLIP's zero-shot head is built from the dataset's class names and prompts: other ones, another θ0 (and cache
    entry); a network that does not read them (an MLP) keeps its key."""
    from conftest import backbone_overrides, make_cfg
    from music.experiment.artifacts import theta0_material

    root = write_folder(tmp_path / "pets", per_class=4)
    folder = ["data=image_folder", f"data.root={root}"]
    clip = [*folder, *backbone_overrides("clip", weights)]
    keys = {
        name: cache_key(theta0_material(make_cfg(tmp_path, tmp_path, *overrides), "fp"))
        for name, overrides in {
            "clip": clip,
            "clip, own names": [*clip, "data.class_names=[a cat,a dog,an owl]"],
            "clip, own prompts": [*clip, "data.prompts=['a snapshot of {}.']"],
            "mlp": folder,
            "mlp, own names": [*folder, "data.class_names=[a cat,a dog,an owl]"],
        }.items()
    }
    assert len({keys["clip"], keys["clip, own names"], keys["clip, own prompts"]}) == 3
    assert keys["mlp"] == keys["mlp, own names"]
