"""Shared fixtures: small datasets written in their real on-disk formats (MNIST's IDX files, CIFAR's pickled batches,
SVHN's .mat files, in torchvision's layouts), real Fashion-MNIST, composed configs."""

import gzip
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def write_idx(path: str | Path, array: torch.Tensor) -> None:
    """A uint8 tensor as an IDX file, the MNIST family's format (gzipped when the name ends in .gz)."""
    path = Path(path)
    array = array.to(torch.uint8).contiguous()
    payload = struct.pack(f">BBBB{array.dim()}I", 0, 0, 0x08, array.dim(), *array.shape) + array.numpy().tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(payload)


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


def synthetic_colour_images(labels: torch.Tensor, seed: int, classes: int) -> torch.Tensor:
    """N×3×32×32 uint8 images: a random prototype per class plus noise."""
    prototypes = torch.rand(classes, 3, 32, 32, generator=torch.Generator().manual_seed(4321)) * 255
    noise = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 60
    return (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8)


def _labels(classes: int, per_class: int, seed: int) -> torch.Tensor:
    labels = torch.arange(classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def _pickle(path: Path, entry: dict) -> None:
    import pickle

    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the format the CIFAR files were written in (Python 2's cPickle)


def write_cifar_files(root: Path, classes: int = 10, per_class_train: int = 20, per_class_test: int = 5) -> Path:
    """CIFAR-10's (five data_batch_i, test_batch, batches.meta) or CIFAR-100's (train, test, meta) pickled batches,
    as torchvision extracts them under root/cifar-10-batches-py or root/cifar-100-python: rows of 3072 bytes."""
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    key = "labels" if classes == 10 else "fine_labels"
    train, test = _labels(classes, per_class_train, 1), _labels(classes, per_class_test, 2)
    parts = (
        list(zip([f"data_batch_{i}" for i in range(1, 6)], train.tensor_split(5)))
        if classes == 10
        else [("train", train)]
    )
    for name, labels in [*parts, ("test_batch" if classes == 10 else "test", test)]:
        seed = 3 + len(name)
        entry = {
            "batch_label": name,
            key: labels.tolist(),
            "data": synthetic_colour_images(labels, seed, classes).reshape(len(labels), -1).numpy(),
            "filenames": [f"{i}.png" for i in range(len(labels))],
        }
        if classes == 100:
            entry["coarse_labels"] = (labels // 5).tolist()
        _pickle(folder / name, entry)
    _pickle(
        folder / ("batches.meta" if classes == 10 else "meta"),
        {"label_names" if classes == 10 else "fine_label_names": [str(c) for c in range(classes)]},
    )
    return root


def write_svhn_files(root: Path, per_class_train: int = 20, per_class_test: int = 5) -> Path:
    """SVHN's train_32x32.mat and test_32x32.mat (MATLAB v5: X is 32×32×3×N, y is N×1 with 10 for the digit 0)."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, per_class, seed in (("train", per_class_train, 1), ("test", per_class_test, 2)):
        labels = _labels(10, per_class, seed)
        images = synthetic_colour_images(labels, seed, 10).permute(2, 3, 1, 0).numpy()
        savemat(
            root / f"{name}_32x32.mat",
            {"X": images, "y": torch.where(labels == 0, 10, labels).numpy().astype("uint8")[:, None]},
        )
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    return write_cifar_files(tmp_path_factory.mktemp("cifar10"))


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
                "trainer=cpu",  # tests never depend on a GPU, even where one is visible
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


FAST = ["pretrain.epochs=2", "finetune.epochs=1", "data.batch_size=64", "merge.lambdas=[0.0,0.5,1.0]"]


# A tiny OpenCLIP architecture for the tests (registered under its file's name, music-tiny-clip).
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> dict[str, Path]:
    """timm's test_vit as .safetensors and .pth, and a tiny OpenCLIP model (its config JSON and its weights)."""
    import open_clip
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(7)
    vit = timm.create_model("test_vit", pretrained=False)
    save_file(vit.state_dict(), folder / "test_vit.safetensors")
    torch.save(vit.state_dict(), folder / "test_vit.pth")
    config = folder / "music-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(config))
    clip = open_clip.create_model("music-tiny-clip")
    torch.save(
        {"epoch": 1, "state_dict": clip.state_dict()}, folder / "tiny_clip.pt"
    )  # an OpenCLIP training checkpoint
    return {
        "vit": folder / "test_vit.safetensors",
        "vit_pth": folder / "test_vit.pth",
        "clip_config": config,
        "clip": folder / "tiny_clip.pt",
        "vit_state": vit.state_dict(),
        "clip_state": clip.state_dict(),
    }


def backbone_overrides(backbone: str, weights: dict[str, Path]) -> list[str]:
    """The tests' pretrained backbones from the `weights` files: timm's test_vit (all of it fine-tunes), or the tiny
    OpenCLIP model whose zero-shot head stays (finetune.train=features, the papers' protocol)."""
    if backbone == "timm":
        return ["model=timm", "model.net.name=test_vit", f"model.net.weights={weights['vit']}"]
    return [
        "model=clip",
        "model.net.name=music-tiny-clip",
        f"model.net.pretrained={weights['clip']}",
        f"model.net.model_config={weights['clip_config']}",
        "finetune.train=features",
    ]
