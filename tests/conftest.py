"""Shared fixtures: small IDX datasets written in torchvision's MNIST layout, real Fashion-MNIST, composed configs."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from music.data.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def synthetic_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """28×28 uint8 images: a fixed random prototype per class plus noise, so classes are learnable."""
    prototypes = torch.rand(10, 28, 28, generator=torch.Generator().manual_seed(1234)) * 255
    noise = torch.randn(len(labels), 28, 28, generator=torch.Generator().manual_seed(seed)) * 60
    return (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8)


def write_mnist_files(root: Path, per_class_train: int = 60, per_class_test: int = 20, folder: str = "MNIST") -> Path:
    """The four MNIST IDX files (uncompressed, as torchvision extracts them) under root/<folder>/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, per_class, seed in (("train", per_class_train, 1), ("t10k", per_class_test, 2)):
        labels = torch.arange(10).repeat_interleave(per_class)
        labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", synthetic_images(labels, seed))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    return write_mnist_files(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real-data tests need Fashion-MNIST in {FASHION_MNIST}: apt-get install -y dataset-fashion-mnist")
    return FASHION_MNIST


def make_cfg(tmp_path: Path, data_dir: Path, *overrides: str, cache_dir: Path | None = None) -> DictConfig:
    """The root config as `python train.py` composes it, with outputs, cache and data under the test's folders."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"data.data_dir={data_dir}",
                f"paths.log_dir={tmp_path / 'logs'}",
                f"cache.dir={cache_dir or tmp_path / 'cache'}",
                "logger=none",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


FAST = ["pretrain.epochs=2", "finetune.epochs=1", "data.batch_size=64", "merge.lambdas=[0.0,0.5,1.0]"]
