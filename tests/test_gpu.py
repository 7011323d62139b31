"""Checks that need a GPU: marked `gpu`, left out of `make test` (they never run without one) and run by
benchmarks/gpu_check.py on a lent GPU."""

import pytest
import torch

from conftest import FAST, make_cfg
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
    assert load_data(gpu_cfg).to(torch.device("cuda")).train_images.is_cuda


def test_augmentation_draws_on_the_gpu_and_repeats_with_its_seed():
    x = torch.randn(64, 3, 32, 32, device="cuda")
    settings = AugmentSettings(crop_padding=4, flip=True)
    a, b = (BatchAugment(settings, DATASETS["cifar10"], seed=3) for _ in range(2))
    first = a(x)
    assert first.is_cuda and torch.equal(first, b(x)) and not torch.equal(first, a(x))
