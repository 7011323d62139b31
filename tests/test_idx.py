import gzip

import pytest
import torch

from conftest import write_idx
from music.data import load_dataset
from music.data.idx import read_idx
from music.errors import DataError


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_roundtrip(tmp_path, name):
    array = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / name, array)
    assert torch.equal(read_idx(tmp_path / name), array)


def test_truncated_and_wrong_magic_files_name_the_file(tmp_path):
    write_idx(tmp_path / "ok", torch.zeros(4, 3, 3, dtype=torch.uint8))
    truncated = tmp_path / "truncated"
    truncated.write_bytes((tmp_path / "ok").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated.*truncated"):
        read_idx(truncated)
    wrong = tmp_path / "wrong.gz"
    with gzip.open(wrong, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00not idx")
    with pytest.raises(DataError, match="wrong.gz: not an IDX file"):
        read_idx(wrong)


def test_flat_folder_of_gzipped_files_and_label_count_mismatch(tmp_path):
    labels = torch.arange(10)
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(10, 28, 28, dtype=torch.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    splits = load_dataset("fashion_mnist", tmp_path, download=False)
    assert splits["train"][0].shape == (10, 1, 28, 28) and splits["test"][1].tolist() == list(range(10))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:7])
    with pytest.raises(DataError, match="7 labels for 10 images"):
        load_dataset("fashion_mnist", tmp_path, download=False)
