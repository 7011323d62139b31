"""Datasets beyond 28×28 grey images: CIFAR-10/100 and SVHN read from their real on-disk formats (files the tests
write), torchvision's download path, and the ResNet-18 / ViT networks end to end on them."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg, write_cifar_files, write_svhn_files
from music.data import DATASETS, load_dataset
from music.data.task_data import TaskData
from music.errors import DataError
from music.run import run


@pytest.mark.parametrize(
    ("name", "classes", "write"),
    [
        ("cifar10", 10, write_cifar_files),
        ("cifar100", 100, partial(write_cifar_files, classes=100, per_class_test=1)),
        ("svhn", 10, write_svhn_files),
    ],
)
def test_colour_datasets_read_from_their_real_formats(tmp_path, name, classes, write):
    write(tmp_path)
    splits = load_dataset(name, tmp_path, download=False)
    images, labels = splits["train"]
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, 32, 32) == DATASETS[name].shape
    assert sorted(labels.unique().tolist()) == list(range(classes)) == list(range(DATASETS[name].classes))
    assert len(splits["test"][1]) == classes * (1 if name == "cifar100" else 5)


def test_cifar_rows_are_channel_major_and_svhn_zero_is_labelled_ten(tmp_path):
    import pickle

    import numpy as np
    from scipy.io import savemat

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1024 + 32 * 5 + 7] = 200  # green channel, row 5, column 7
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": row, "labels": [3]}, f, protocol=2)
    images, labels = load_dataset("cifar10", tmp_path, download=False)["train"]
    assert (
        images.shape == (5, 3, 32, 32)
        and images[0, 1, 5, 7] == 200
        and images.sum() == 5 * 200
        and labels.tolist() == [3] * 5
    )
    x = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    x[4, 9, 2, 1] = 77  # image 1, blue channel, row 4, column 9
    (tmp_path / "svhn").mkdir()
    for split in ("train", "test"):
        savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": np.array([[10], [4]], dtype=np.uint8)})
    images, labels = load_dataset("svhn", tmp_path / "svhn", download=False)["test"]
    assert labels.tolist() == [0, 4] and images[1, 2, 4, 9] == 77 and images.sum() == 77


def test_images_are_stored_as_uint8_and_standardised_with_the_declared_statistics(tmp_path):
    write_cifar_files(tmp_path)
    raw = load_dataset("cifar10", tmp_path, download=False)["train"][0]
    data = TaskData("cifar10", str(tmp_path), download=False)
    data.setup()
    assert data.train.images.dtype == torch.uint8 and torch.equal(data.train.images, raw)  # 4× less than floats
    normalized = data.images(torch.arange(len(raw)))
    raw = raw.float() / 255
    spec = DATASETS["cifar10"]
    for c in range(3):
        assert torch.allclose(normalized[:, c], (raw[:, c] - spec.mean[c]) / spec.std[c], atol=1e-6)


def test_a_cifar_download_moves_into_torchvisions_layout_and_offline_names_the_folder(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeCIFAR10:  # torchvision's contract: the batches land in <root>/cifar-10-batches-py (the archive beside it)
        def __init__(self, root, train, download):
            write_cifar_files(Path(root), per_class_train=5, per_class_test=1)
            (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"archive")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    splits = load_dataset("cifar10", tmp_path / "data", download=True)
    assert len(splits["train"][1]) == 50 and sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "cifar-10-batches-py"
    ]
    monkeypatch.undo()
    monkeypatch.setattr(
        torchvision.datasets.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz"
    )  # nothing listens there
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", tmp_path / "offline", download=True)
    assert "download failed" in str(err.value) and str(tmp_path / "offline" / "cifar-100-python") in str(err.value)
    assert not (tmp_path / "offline").exists()


def test_tasks_are_checked_against_the_datasets_classes(tmp_path):
    from music.config import validate
    from music.errors import ConfigError
    from music.strategies import STRATEGIES

    with pytest.raises(
        ConfigError,
        match=r"tasks\[0\]=\[10\] is not allowed: class ids are integers in 0..9 \(cifar10 has 10 classes\)",
    ):
        validate(make_cfg(tmp_path, tmp_path, "data=cifar10", "tasks=[[10]]"), STRATEGIES)
    validate(make_cfg(tmp_path, tmp_path, "data=cifar100", "tasks=[[10],[99]]"), STRATEGIES)


def test_default_tasks_are_one_per_class_of_the_dataset_and_a_bad_network_setting_is_named(tmp_path):
    from music.config import validate
    from music.errors import ConfigError
    from music.strategies import STRATEGIES

    assert make_cfg(tmp_path, tmp_path, "data=cifar100").tasks == [[c] for c in range(100)]
    assert make_cfg(tmp_path, tmp_path, "data=svhn").tasks == [[c] for c in range(10)]
    with pytest.raises(
        ConfigError, match=r"^model.net.heads=3 is not allowed: music.models.ViT refuses it: .*divisible"
    ):
        validate(
            make_cfg(tmp_path, tmp_path, "data=cifar10", "model=vit_small", "model.net.dim=16", "model.net.heads=3"),
            STRATEGIES,
        )


SMALL = {
    "resnet18": ["model=resnet18", "model.net.width=4"],
    "vit_small": [
        "model=vit_small",
        "model.net.dim=16",
        "model.net.mlp_dim=32",
        "model.net.layers=1",
        "model.net.heads=2",
        "model.net.patch=8",
    ],
}


@pytest.mark.parametrize("model", SMALL)
@pytest.mark.parametrize("experiment", ["sequential", "task_arithmetic", "ties", "ewc"])
def test_resnet_and_vit_run_end_to_end_on_cifar(tmp_path, tmp_path_factory, cifar10_dir, model, experiment):
    cache = tmp_path_factory.getbasetemp() / f"cifar-cache-{model}"  # θ0 and the fine-tunes shared by a model's runs
    cfg = make_cfg(
        tmp_path,
        cifar10_dir,
        "data=cifar10",
        f"experiment={experiment}",
        "tasks=[[0,1],[2,3]]",
        *SMALL[model],
        *FAST,
        "data.download=false",
        "data.batch_size=16",
        cache_dir=cache,
    )
    metrics = run(cfg)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"] == "cifar10"
    assert metrics["experiment"] == experiment and 0 <= metrics["test/acc"] <= 1
    # 5 test images per class: every accuracy is a multiple of 1/50 (overall) and of 1/5 (per class)
    assert round(metrics["test/acc"] * 50, 6).is_integer() and all(
        round(metrics[f"test/acc_class_{c}"] * 5, 6).is_integer() for c in range(10)
    )
    if experiment in ("sequential", "ewc"):
        assert len(metrics["acc_matrix"]) == 2 and len(metrics["acc_matrix"][0]) == 2
    else:  # λ = 0 is θ0 itself: its point on the curve is θ0's validation accuracy
        zero = [p for p in metrics["lambda_curve"] if p["lambda"] == 0]
        assert all(p["val/acc"] == metrics["theta0/val/acc"] for p in zero)


@pytest.mark.parametrize(("name", "lr"), [("derpp", 0.03), ("er_mammoth", 0.1), ("merged", 0.1)])
def test_the_mammoth_preset_composes_with_each_methods_rate_and_runs_a_stage(tmp_path, cifar10_dir, name, lr):
    """sweep=seq_cifar10_mammoth on test-written CIFAR-10 files: SGD at the method's best-args rate, crop + flip, one
    shared head, θ0 from scratch; one stage of one epoch here (the preset trains 5 × 50 on a GPU)."""
    cfg = make_cfg(tmp_path, cifar10_dir, "sweep=seq_cifar10_mammoth", f"experiment={name}", "tasks=[[0,1]]",
                   "finetune.epochs=1", "model.net.width=8")  # fmt: skip
    assert cfg.finetune.optimizer._target_ == "torch.optim.SGD" and cfg.finetune.optimizer.lr == lr
    assert (cfg.augment.crop_padding, cfg.augment.flip, cfg.data.batch_size, cfg.pretrain.train) == (4, True, 32, False)
    metrics = run(cfg)
    assert metrics["dataset"] == "cifar10" and 0.0 <= metrics["test/acc"] <= 1.0 and metrics["tasks"] == [[0, 1]]


def test_channels_last_and_bf16_are_options_that_train_the_same_network(tmp_path, cifar10_dir):
    """model.channels_last (NHWC memory order) changes where numbers sit, not what is computed; trainer.precision=
    bf16-mixed (Lightning's autocast) trains in bfloat16. Off, the default, runs are as before (the golden figures)."""
    common = ["data=cifar10", "model=resnet18", "model.net.width=8", "experiment=merged", "tasks=[[0,1]]", *FAST]
    plain = run(make_cfg(tmp_path / "plain", cifar10_dir, *common))
    nhwc = run(make_cfg(tmp_path / "nhwc", cifar10_dir, *common, "model.channels_last=true"))
    assert abs(nhwc["test/acc"] - plain["test/acc"]) <= 0.02 and nhwc["theta0/key"] != plain["theta0/key"]
    bf16 = run(make_cfg(tmp_path / "bf16", cifar10_dir, *common, "trainer.precision=bf16-mixed"))
    assert 0.0 <= bf16["test/acc"] <= 1.0 and bf16["theta0/key"] != plain["theta0/key"]  # precision: in the cache key
