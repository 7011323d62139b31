"""Checks that need a GPU: marked `gpu`, left out of `make test` (they never run without one) and run by
benchmarks/gpu_check.py on a lent GPU."""

import pytest
import torch

from conftest import FAST, backbone_overrides, make_cfg, write_mnist_files
from music.data.augment import AugmentSettings, BatchAugment
from music.data.sources import DATASETS

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a GPU (run them with benchmarks/gpu_check.py where one is lent)")


def test_a_run_on_the_gpu_keeps_its_data_there_and_matches_the_cpu(tmp_path, fashion_dir):
    from music.run import load_data, run

    common = ["data=fashion_mnist", "experiment=sequential", "tasks=[[0,1],[2,3]]", *FAST]
    gpu_cfg = make_cfg(tmp_path / "gpu", fashion_dir, *common, "trainer=gpu", cache_dir=tmp_path / "gpu_cache")
    gpu = run(gpu_cfg)
    cpu = run(make_cfg(tmp_path / "cpu", fashion_dir, *common, cache_dir=tmp_path / "cpu_cache"))
    assert abs(gpu["test/acc"] - cpu["test/acc"]) < 0.02 and len(gpu["acc_matrix"]) == 2
    assert load_data(gpu_cfg).to(torch.device("cuda")).train.images.is_cuda


def test_augmentation_draws_on_the_gpu_and_repeats_with_its_seed():
    x = torch.randn(64, 3, 32, 32, device="cuda")
    settings = AugmentSettings(crop_padding=4, flip=True)
    a, b = (BatchAugment(settings, DATASETS["cifar10"], seed=3) for _ in range(2))
    first = a(x)
    assert first.is_cuda and torch.equal(first, b(x)) and not torch.equal(first, a(x))


@pytest.mark.parametrize("backbone", ["timm", "clip"])
def test_a_pretrained_backbone_runs_on_the_gpu_and_matches_the_cpu(tmp_path, fashion_dir, weights, backbone):
    """The input adapter's resize and normalisation on the device, datasets as tasks with per-task heads: task
    arithmetic on the GPU gives the CPU's figures within a few test images."""
    from music.run import run

    model = backbone_overrides(backbone, weights)
    digits = write_mnist_files(tmp_path / "digits", per_class_train=40, per_class_test=10)
    (digits / "FashionMNIST").mkdir()
    (digits / "FashionMNIST" / "raw").symlink_to(fashion_dir)  # where a machine without Debian's copy finds it
    common = [
        "experiment=task_arithmetic",
        "tasks=[{data:fashion_mnist,classes:[0,1,2]},mnist]",
        "model.head=per_task",
        "pretrain=none",
        *model,
        *FAST,
    ]
    figures = {
        device: run(make_cfg(tmp_path / device, digits, *common, f"trainer={device}", cache_dir=tmp_path / device))
        for device in ("gpu", "cpu")
    }
    assert figures["gpu"]["dataset"] == "fashion_mnist+mnist"
    assert abs(figures["gpu"]["test/acc_task_mean"] - figures["cpu"]["test/acc_task_mean"]) < 0.03
    assert figures["gpu"]["theta0/test/acc"] == pytest.approx(figures["cpu"]["theta0/test/acc"], abs=0.01)
