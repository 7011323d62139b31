"""Tasks that are datasets (a composite of declared datasets, per-task heads), θ0 from another dataset, and your own
image folders: the composite's arithmetic against closed forms, whole runs on real Fashion-MNIST beside test-written
MNIST and SVHN files, and a folder tree written here in PNG and JPEG."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT, make_cfg, write_mnist_files, write_svhn_files
from music.data.composite import conform, pooled_statistics
from music.data.pixels import Resize
from music.data.refs import Catalog, Composite, Pixels
from music.data.resolve import resolve
from music.data.task_data import TaskData
from music.errors import ConfigError, DataError
from music.run import run

MERGES = sorted(p.stem for p in (ROOT / "configs" / "merge").glob("*.yaml"))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    """MNIST's IDX files and SVHN's .mat files, written here (the real ones cannot be downloaded on this machine)."""
    root = tmp_path_factory.mktemp("digits")
    write_mnist_files(root, per_class_train=40, per_class_test=10)
    return write_svhn_files(root, per_class_train=40, per_class_test=10)


def plan(tmp_path, *overrides):
    return resolve(make_cfg(tmp_path, tmp_path, *overrides))


def test_tasks_naming_datasets_become_class_ids_of_their_composite(tmp_path):
    found = plan(tmp_path, "tasks=[fashion_mnist,{data:svhn,classes:[3,5]},[1,2]]")
    assert found.key == "fashion_mnist+svhn+mnist" and found.source == Composite(
        (Catalog("fashion_mnist"), Catalog("svhn"), Catalog("mnist"))
    )  # a typed value: nothing to parse
    assert found.tasks == [list(range(10)), [13, 15], [21, 22]]  # SVHN after Fashion-MNIST's 10, MNIST after SVHN's
    assert found.dataset_of([13, 15]) == "svhn" and found.dataset_of([9, 10]) is None
    same = plan(tmp_path, "tasks=[[0,1],[2,3]]")  # class lists of the data group's dataset: nothing to do
    assert (same.source, same.tasks) == (Catalog("mnist"), [[0, 1], [2, 3]])
    first = plan(tmp_path, "tasks=[[0,1]]", "data.pretrain.data=cifar100")  # θ0's dataset comes first
    assert (first.key, first.tasks, first.pretrain_classes) == ("cifar100+mnist", [[100, 101]], list(range(100)))
    with pytest.raises(ConfigError, match=r"tasks\[1\]\.classes"):
        plan(tmp_path, "tasks=[mnist,{data:svhn,classes:[10]}]")
    with pytest.raises(ConfigError, match=r"tasks\[0\]='imagenet' is not allowed: one of mnist"):
        plan(tmp_path, "tasks=[imagenet]")


def test_the_composite_declares_the_largest_shape_and_the_pooled_normalisation():
    spec = Composite((Catalog("fashion_mnist"), Catalog("svhn"))).declare(Pixels(None, Resize(32)))
    assert (spec.classes, spec.shape, spec.title) == (20, (3, 32, 32), "Fashion-MNIST + SVHN")
    assert spec.names[:2] == ("T-shirt/top", "trouser") and spec.names[10:12] == ("0", "1")
    # an equal mixture of two parts with exactly these statistics has exactly the pooled ones
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 200_000, generator=g)
    a = (a - a.mean()) / a.std(correction=0) * 0.3 + 0.2
    b = (b - b.mean()) / b.std(correction=0) * 0.1 + 0.6
    mean, std = pooled_statistics([(0.2,), (0.6,)], [(0.3,), (0.1,)], 1)
    both = torch.cat([a, b])
    assert mean[0] == pytest.approx(float(both.mean()), abs=1e-4)
    assert std[0] == pytest.approx(float(both.std(correction=0)), abs=1e-4)


def test_conform_repeats_grey_channels_and_resizes():
    grey = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2) * 60
    out = conform(grey, (3, 4, 4))
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0], out[:, 2])  # the one channel on all three
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(conform(flat, (3, 4, 4)), torch.full((2, 3, 4, 4), 77, dtype=torch.uint8))  # a constant stays


# slow (~130 s on 2 cores): every merge method; the default tier runs task arithmetic on datasets as tasks (test_presets)
@pytest.mark.slow
def test_every_merge_method_runs_on_datasets_as_tasks_with_per_task_heads(tmp_path, fashion_dir, digits_dir):
    """One multirun: real Fashion-MNIST, test-written MNIST and SVHN as three tasks; every merge method of the table;
    the head frozen (finetune.train=features), so λ = 0 is θ0 exactly; the report groups the runs as one setting."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "experiment=merge",
        f"merge={','.join(MERGES)}",
        "tasks=[{data:fashion_mnist,classes:[0,1]},mnist,svhn]",  # two of its classes: a shorter test
        "model.head=per_task",
        "finetune.train=features",
        f"data.data_dir={digits_dir}",
        "data.pretrain.num_samples=2000",
        "data.pretrain.fraction=null",
        "logger=none",
        "trainer=cpu",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
        *FAST,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert len(runs) == len(MERGES) and {r["merge_method"] for r in runs} >= {"ties", "tsv", "wudi", "emr", "magmax"}
    for metrics in runs:
        assert metrics["dataset"] == "fashion_mnist+mnist+svhn"
        assert metrics["tasks"] == [[0, 1], list(range(10, 20)), list(range(20, 30))]
        assert metrics["test/acc_task_mean"] == pytest.approx(sum(metrics[f"test/acc_task_{i}"] for i in range(3)) / 3)
        at_zero = [p for p in metrics.get("lambda_curve", []) if p["lambda"] == 0.0]
        if at_zero and not metrics["merge/task_id"]:
            assert at_zero[0]["test/acc"] == metrics["theta0/test/acc"], metrics["merge_method"]
    assert len({r["theta0/setting"] for r in runs}) == 1
    report = subprocess.run(
        [sys.executable, "-m", "music.report", str(sweep)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Fashion-MNIST + MNIST + SVHN" in report.stdout
    assert report.stdout.count("θ0") >= 1 and report.stdout.count("| θ0") == 1


def test_theta0_from_another_dataset_trains_on_it_alone(tmp_path, fashion_dir, digits_dir):
    common = ["experiment=task_arithmetic", "tasks=[fashion_mnist,mnist]", "model.head=per_task", *FAST]
    here = run(make_cfg(tmp_path / "here", digits_dir, *common, cache_dir=tmp_path / "cache"))
    elsewhere = run(
        make_cfg(tmp_path / "elsewhere", digits_dir, *common, "data.pretrain.data=svhn", cache_dir=tmp_path / "cache")
    )
    assert elsewhere["dataset"] == "svhn+fashion_mnist+mnist" and elsewhere["tasks"][0][0] == 10
    assert elsewhere["tasks_given"] == ["fashion_mnist", "mnist"]
    assert here["theta0/key"] != elsewhere["theta0/key"]
    # θ0 saw no Fashion-MNIST image: it scores its classes near chance; trained here it scores far above
    assert here["theta0/test/acc"] > 0.5 > elsewhere["theta0/test/acc"]
    # SVHN is θ0's data, no task: the run is judged on Fashion-MNIST and MNIST alone
    assert all(elsewhere[f"test/acc_class_{c}"] is None for c in range(10))
    assert elsewhere["test/acc"] == elsewhere["test/acc_seen"] and elsewhere["test/acc_unseen"] is None


def write_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 12, split: str | None = None) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            colour = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]][c % 3])
            pixels = (colour + torch.randint(-30, 30, (20, 24, 3), generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{k}.{'png' if k % 2 else 'jpg'}")
    return root


def folder_data(root: Path, size: int = 16, fraction: float = 0.25, **settings) -> TaskData:
    """data=image_folder as a run resolves and stores it (decoded in memory: no cache folder)."""
    cfg = make_cfg(root.parent, root.parent, "data=image_folder", f"data.root={root}", f"data.image_size={size}")
    cfg.data.test_fraction = fraction
    for key, value in settings.items():
        cfg.data[key] = value
    limit = {"max_image_pixels": settings["max_image_pixels"]} if "max_image_pixels" in settings else {}
    data = TaskData(image_size=size, test_fraction=fraction, plan=resolve(cfg), workers=0, **limit)
    data.setup()
    return data


def test_an_image_folder_declares_itself_from_its_tree(tmp_path):
    root = write_folder(tmp_path / "pets")
    data = folder_data(root)
    spec = data.spec
    assert (spec.classes, spec.shape, spec.names, spec.title) == (3, (3, 16, 16), ("cat", "dog", "owl"), "pets")
    train, train_labels, test_labels = data.train.images, data.train.labels, data.test.labels
    assert (len(train), len(test_labels)) == (27, 9)  # a quarter of each class's 12 images held out as the test set
    assert torch.bincount(test_labels).tolist() == [3, 3, 3]
    assert train.shape[1:] == (3, 16, 16) and train.dtype == torch.uint8
    red = train[train_labels == 0].float().mean((0, 2, 3))
    assert red[0] > 150 > red[1]  # the class folder "cat" holds the red images: labels follow the folder names
    mean, std = spec.mean, spec.std
    assert mean[0] == pytest.approx(float(train[:, 0].float().div(255).mean()), abs=1e-4)
    assert std[2] > 0
    split_root = write_folder(tmp_path / "split", split="train")
    write_folder(split_root, per_class=4, split="test")
    assert len(folder_data(split_root).test.labels) == 12  # its own test/ folder
    named = folder_data(root, class_names=["a cat", "a dog", "an owl"], prompts=["a snapshot of {}."])
    assert named.spec.class_prompts()[2] == ("a snapshot of an owl.",)  # data.class_names, data.prompts


def test_a_run_on_an_image_folder(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=20)
    metrics = run(make_cfg(tmp_path, tmp_path, "data=image_folder", f"data.root={root}", "experiment=merged", *FAST))
    assert metrics["dataset_title"] == "pets" and metrics["tasks"] == [[0], [1], [2]]
    assert metrics["test/acc"] == 1.0  # three colours: learnable


def write_bomb(path: Path) -> None:
    """A PNG whose header declares 40000 × 40000 pixels (1.6 G: above twice PIL's limit), its data tiny."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "tree, words",
    [
        ("missing", "no such folder"),
        ("one class", "an ImageFolder tree needs ≥ 2 class folders (only 'cat')"),
        ("empty class", "class folder 'dog' has no image file"),
        ("mismatch", "train/ and test/ name different classes (owl in one only)"),
        ("corrupt", "broken.png: not an image PIL can decode"),
        ("truncated", "cut.jpg: not an image PIL can decode"),
        ("bomb", "bomb.png: Image size (1600000000 pixels) exceeds limit"),
    ],
)
def test_a_wrong_tree_is_refused_in_one_line_before_training(tmp_path, tree, words):
    root = tmp_path / "tree"
    if tree == "one class":
        write_folder(root, classes=("cat",))
    elif tree == "empty class":
        write_folder(root, classes=("cat",))
        (root / "dog").mkdir()
    elif tree == "mismatch":
        write_folder(root, split="train")
        write_folder(root, classes=("cat", "dog"), split="test")
    elif tree == "corrupt":
        write_folder(root)
        (root / "dog" / "broken.png").write_bytes(b"not a png")
    elif tree == "truncated":
        write_folder(root)
        whole = (root / "dog" / "0.jpg").read_bytes()
        (root / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    elif tree == "bomb":
        write_folder(root)
        write_bomb(root / "owl" / "bomb.png")
    with pytest.raises(DataError) as error:
        folder_data(root, size=17)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_image_size_limit_is_a_setting(tmp_path):
    root = write_folder(tmp_path / "tree")  # 20 × 24 images: 480 pixels
    assert len(folder_data(root, max_image_pixels=1000).train.labels) == 27
    with pytest.raises(DataError, match="exceeds limit"):
        folder_data(root, size=18, max_image_pixels=200)  # PIL refuses above twice the limit


def test_a_wrong_tree_exits_2_from_the_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "data=image_folder",
            f"data.root={tmp_path / 'nowhere'}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: data.root="), result.stderr[-2000:]


def test_an_image_folder_without_its_root_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "data=image_folder", "logger=none"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "error: data.root=??? is not allowed: it has no default, set it (data.root=…)\n"


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ("data.image_size=4", "error: data.image_size=4 is not allowed: an integer in [8, 1024]\n"),
        ("data.test_fraction=1.5", "error: data.test_fraction=1.5 is not allowed: a number in (0, 1)\n"),
    ],
)
def test_an_image_folders_settings_are_refused_before_its_tree_is_read(tmp_path, bad, line):
    """The tree (no such folder here) would be read by the default tasks' resolver: the settings come first."""
    command = [sys.executable, str(ROOT / "train.py"), "data=image_folder", f"data.root={tmp_path / 'nowhere'}", bad]
    result = subprocess.run([*command, "logger=none"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr == line
