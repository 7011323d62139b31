"""Training-time augmentation of whole batches (music.data.augment): per-image crops and flips, seeded per stage, on
the batch's device; memories keep images as they were; evaluation never augments."""

from pathlib import Path

import torch

from conftest import FAST, make_cfg
from music.continual.der import DER
from music.data.augment import AugmentSettings, BatchAugment, random_crop, random_flip
from music.data.sources import DATASETS


def batch(n: int = 16, channels: int = 3, size: int = 8) -> torch.Tensor:
    return torch.arange(n * channels * size * size, dtype=torch.float32).view(n, channels, size, size)


def test_each_crop_is_a_window_of_the_padded_image_filled_with_a_zero_pixel():
    x, fill = batch(), torch.tensor([-1.0, -2.0, -3.0])
    out = random_crop(x, 2, fill, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x - fill.view(1, 3, 1, 1), (2,) * 4) + fill.view(1, 3, 1, 1)
    offsets = []
    for image, source in zip(out, padded):
        windows = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(source[:, dy : dy + 8, dx : dx + 8], image)
        ]
        assert len(windows) == 1
        offsets.append(windows[0])
    assert len(set(offsets)) > 5  # each image its own offset, not one for the batch
    assert (padded[:, :, :2] == fill.view(1, 3, 1, 1)).all()  # the border is the normalised zero pixel


def test_each_image_is_flipped_or_not_on_its_own():
    x = batch(64)
    out = random_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x)) and 16 < sum(flipped) < 48


def test_draws_differ_from_batch_to_batch_and_repeat_with_the_seed():
    settings, spec = AugmentSettings(crop_padding=4, flip=True), DATASETS["cifar10"]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a, b = BatchAugment(settings, spec, seed=5), BatchAugment(settings, spec, seed=5)
    first, second = a(x), a(x)
    assert not torch.equal(first, second) and torch.equal(first, b(x)) and torch.equal(second, b(x))
    assert not torch.equal(BatchAugment(settings, spec, seed=6)(x), first)
    assert BatchAugment(AugmentSettings(), spec, seed=5)(x) is x  # none: the batch itself


def test_datasets_declare_their_augmentation():
    cifar, svhn, fashion = (
        make_cfg(Path("/tmp/aug"), Path("/tmp"), f"data={d}") for d in ("cifar10", "svhn", "fashion_mnist")
    )
    assert (cifar.augment.crop_padding, cifar.augment.flip) == (4, True)
    assert (svhn.augment.crop_padding, svhn.augment.flip) == (4, False)  # a flipped digit is another glyph
    assert (fashion.augment.crop_padding, fashion.augment.flip) == (0, False)  # today's figures, unchanged


def test_a_memory_keeps_images_as_they_were_and_augments_what_it_draws():
    der = DER(memory_size=4, minibatch_size=4)
    der.augment = lambda images: images + 100.0
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    raw = torch.arange(16.0).view(4, 1, 2, 2)
    der.penalty(net, der.augment(raw), torch.zeros(4, dtype=torch.long), torch.zeros(4, 2), raw=raw)
    assert sorted(der.buffer.fields["images"].flatten().tolist()) == raw.flatten().tolist()
    assert der.buffer.draw(4, "cpu", der.augment)["images"].min() >= 100.0


def test_a_crop_run_on_real_fashion_mnist_trains_and_evaluates_unaugmented(tmp_path, fashion_dir, monkeypatch):
    from music.run import run

    calls = []
    original = BatchAugment.__call__
    monkeypatch.setattr(BatchAugment, "__call__", lambda self, x: calls.append(len(x)) or original(self, x))
    common = ["data=fashion_mnist", "experiment=sequential", "tasks=[[0,1],[2,3]]", *FAST, "data.batch_size=256"]
    cropped = run(make_cfg(tmp_path / "crop", fashion_dir, *common, "augment=crop", cache_dir=tmp_path / "cache"))
    steps = len(calls)
    assert steps > 0 and all(n <= 256 for n in calls)  # training batches only: evaluation passes are 4096 images
    plain = run(make_cfg(tmp_path / "none", fashion_dir, *common, "augment=none", cache_dir=tmp_path / "cache"))
    assert len(calls) == steps  # nothing augmented without augmentation
    assert cropped["acc_matrix"][0][0] > 0.9 and cropped["acc_matrix"] != plain["acc_matrix"]
    assert len(list((tmp_path / "cache").glob("theta0-*.safetensors"))) == 2  # part of the cache key
