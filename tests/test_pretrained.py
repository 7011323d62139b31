"""Backbones pretrained elsewhere, from local files in their libraries' own formats (no network here): timm's smallest
test model saved as .safetensors and .pth, a tiny OpenCLIP model from a config JSON saved as OpenCLIP saves state
dicts; the input adapter and the zero-shot head against values computed here; the offline error; runs end to end."""

import os
import subprocess
import sys
from pathlib import Path

import open_clip  # the dev extras install both: a missing one fails here, never skips
import pytest
import torch

from conftest import FAST, ROOT, backbone_overrides, make_cfg, write_mnist_files, write_svhn_files
from music.data.pixels import resized
from music.data.refs import Catalog, Composite, Pixels
from music.data.sources import DATASETS
from music.errors import ConfigError
from music.models.pretrained import Clip, InputAdapter, Timm
from music.run import run

EXPERIMENTS = "task_arithmetic,ties,tsv,sequential"
SMALL = [*FAST[1:], "pretrain=none"]  # θ0 is the backbone


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_mnist_files(root, per_class_train=30, per_class_test=10)
    return write_svhn_files(root, per_class_train=30, per_class_test=10)


@pytest.mark.parametrize("file", ["vit", "vit_pth"])
def test_timm_loads_a_local_weights_file(weights, file):
    net = Timm(10, [1, 28, 28], DATASETS["mnist"], name="test_vit", weights=str(weights[file]))
    loaded = net.features[1].state_dict()
    for key, value in weights["vit_state"].items():
        if not key.startswith("head."):  # timm drops its own classifier (num_classes=0); ours is `head`
            assert torch.equal(loaded[key], value), key
    assert net.head.in_features == 64 and net.head.out_features == 10
    assert net.features[0].size == (160, 160)  # test_vit's input size, from its own config
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_the_input_adapter_restores_pixels_and_applies_the_backbones_normalisation():
    spec = DATASETS["mnist"]
    adapter = InputAdapter(spec, (28, 28), (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    pixels = torch.rand(2, 1, 28, 28)
    out = adapter((pixels - 0.1307) / 0.3081)  # as the run holds MNIST: standardised with its declared statistics
    for c, (m, s) in enumerate(zip((0.5, 0.4, 0.3), (0.2, 0.2, 0.25))):
        assert torch.allclose(out[:, c], (pixels[:, 0] - m) / s, atol=1e-5)
    assert adapter.state_dict() == {}  # nothing of it enters a task vector


def test_clip_loads_its_checkpoint_and_starts_zero_shot(weights):
    spec = DATASETS["fashion_mnist"]
    net = Clip(10, [1, 28, 28], spec, "music-tiny-clip", str(weights["clip"]), str(weights["clip_config"]))
    visual = net.features[1].state_dict()
    for key, value in visual.items():
        assert torch.equal(value, weights["clip_state"][f"visual.{key}"]), key
    reference = open_clip.create_model("music-tiny-clip")
    reference.load_state_dict(weights["clip_state"])
    tokenizer = open_clip.get_tokenizer("music-tiny-clip")
    with torch.no_grad():  # per class: its prompts' normalised embeddings averaged, normalised, × logit scale
        rows = []
        for c, name in enumerate(spec.names):
            assert spec.class_prompts()[c][0] == f"a photo of a {name}."
            text = reference.encode_text(tokenizer(list(spec.class_prompts()[c])))
            mean = (text / text.norm(dim=-1, keepdim=True)).mean(0)
            rows.append(mean / mean.norm())
        expected = torch.stack(rows) * reference.logit_scale.exp()
    assert torch.allclose(net.head.weight, expected, atol=1e-5) and not net.head.bias.any()
    # the network's logits are CLIP's: scaled cosines of the image and class-name embeddings
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        image = reference.encode_image(net.features[0](images))
        clip_logits = image / image.norm(dim=-1, keepdim=True) @ expected.T
        assert torch.allclose(net.eval()(images), clip_logits, atol=1e-4)
    random = Clip(10, [1, 28, 28], spec, "music-tiny-clip", str(weights["clip"]), head_init="random")
    assert not torch.allclose(random.head.weight, expected)


def test_a_weights_file_of_another_network_is_one_line(tmp_path, weights):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="model.net.weights=.* is not allowed: a test_vit weights file") as error:
        Timm(10, [1, 28, 28], DATASETS["mnist"], name="test_vit", weights=str(tmp_path / "other.safetensors"))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="model.net.pretrained=.* is not allowed: music-tiny-clip weights") as error:
        Clip(10, [1, 28, 28], DATASETS["mnist"], "music-tiny-clip", str(tmp_path / "other.safetensors"))
    assert "\n" not in str(error.value)


def test_each_part_of_a_composite_keeps_its_own_prompts():
    composite = Composite((Catalog("mnist"), Catalog("cifar10")))
    prompts = composite.declare(Pixels(None, Clip.eval_resize("ViT-B-32"))).class_prompts()
    assert prompts[3] == ('a photo of the number: "3".',)
    assert len(prompts[13]) == 18 and prompts[13][1] == "a blurry photo of a cat."  # task_vectors' CIFAR templates
    assert prompts[13][-1] == "a photo of the big cat."


def test_unknown_names_are_one_line():
    with pytest.raises(ConfigError, match="model.net.name='no_such_net' is not allowed: a timm model name"):
        Timm(10, [1, 28, 28], DATASETS["mnist"], name="no_such_net")
    with pytest.raises(ConfigError, match="model.net.name='no-such-clip' is not allowed: an OpenCLIP model"):
        Clip(10, [1, 28, 28], DATASETS["mnist"], name="no-such-clip")


@pytest.mark.parametrize(
    "model, words",
    [
        ("model=timm", "timm.create_model('resnet18', pretrained=True)"),
        ("model=clip", "open_clip.create_model('ViT-B-32', pretrained='openai')"),
    ],
)
def test_weights_not_on_disk_are_one_line_naming_the_cache_and_the_command(tmp_path, model, words):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache, no network
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), model, "pretrain=none", "logger=none", "data=fashion_mnist"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model.net.pretrained=") and words in line and str(tmp_path / "hf") in line


@pytest.mark.parametrize("backbone", ["timm", "clip"])
def test_merges_and_sequential_run_end_to_end_on_a_pretrained_backbone(tmp_path, weights, digits_dir, backbone):
    model = backbone_overrides(backbone, weights)
    found = {}
    for experiment in EXPERIMENTS.split(","):
        cfg = make_cfg(
            tmp_path / experiment,
            digits_dir,
            f"experiment={experiment}",
            "tasks=[mnist,svhn]",
            "model.head=per_task",
            *model,
            *SMALL,
            cache_dir=tmp_path / "cache",
        )
        found[experiment] = run(cfg)
    for experiment, metrics in found.items():
        assert metrics["dataset"] == "mnist+svhn" and 0 <= metrics["test/acc_task_mean"] <= 1, experiment
    assert len({m["theta0/key"] for m in found.values()}) == 1  # one θ0: the backbone and its head
    if backbone == "clip":  # the head stays zero-shot: only the image tower trains
        curve = {p["lambda"]: p["test/acc"] for p in found["task_arithmetic"]["lambda_curve"]}
        assert curve[0.0] == found["task_arithmetic"]["theta0/test/acc"]


def test_finetune_train_keeps_the_frozen_part_as_theta0(tmp_path, digits_dir):
    """With BatchNorm in the features: a linear probe (train=head) keeps their running statistics as θ0's too."""
    for part, frozen in (("head", "features."), ("features", "head.")):
        cfg = make_cfg(
            tmp_path / part,
            digits_dir,
            "experiment=individual",
            "data=mnist",
            "model=cnn_bn",
            "tasks=[[0,1],[2,3]]",
            f"finetune.train={part}",
            *FAST[1:],
            "pretrain.epochs=1",
            cache_dir=tmp_path / "cache",
        )
        from music.cache import ArtifactCache
        from music.experiment import Run
        from music.run import load_data

        data = load_data(cfg)
        parts = Run.open(cfg, data, ArtifactCache(cfg.cache.dir, True), [])
        theta0, tuned = parts.artifacts.theta0, parts.artifacts.finetuned([0, 1])
        assert all(torch.equal(theta0[k], tuned[k]) for k in theta0 if k.startswith(frozen)), part
        assert any(not torch.equal(theta0[k], tuned[k]) for k in theta0 if not k.startswith(frozen)), part


def _photo(width: int, height: int):
    from PIL import Image

    g = torch.Generator().manual_seed(width)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy())


@pytest.mark.parametrize("size", [(300, 200), (150, 400), (224, 224)])
def test_images_are_stored_through_the_backbones_own_eval_transform(size):
    """The stored pixels are exactly what open_clip's preprocess and timm's eval transform make of the original image
    (before their normalisation, which the network's input adapter applies): bicubic shorter side, centre crop."""
    import open_clip
    import timm
    from timm.data import create_transform, resolve_data_config

    image = _photo(*size)
    clip = open_clip.image_transform(224, is_train=False)  # ViT-B-32's: 224 px, bicubic, resize_mode shortest
    theirs = clip(image)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    ours = resized(image, Clip.eval_resize("ViT-B-32")).float().div(255)
    assert torch.allclose(theirs * std + mean, ours, atol=1e-6)
    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg("resnet18").to_dict())
    theirs = create_transform(**config)(image)  # 224 px from a 235 px shorter side (crop_pct 0.95), bicubic
    mean, std = (torch.tensor(config[k]).view(3, 1, 1) for k in ("mean", "std"))
    resize = Timm.eval_resize("resnet18")
    assert (resize.size, resize.scale, resize.interpolation) == (224, 235, "bicubic")
    assert torch.allclose(theirs * std + mean, resized(image, resize).float().div(255), atol=1e-6)
