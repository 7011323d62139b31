"""Every shipped preset loads its data (not only composes): each dataset written here in its real on-disk format, the
preset resolved and stored as a run does; and sweep=eight_tasks runs end to end on test-written copies of its eight
datasets (a tiny OpenCLIP model standing in for ViT-B/32)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONFIGS, ROOT, backbone_overrides, write_cifar_files, write_mnist_files, write_svhn_files
from music.data import prompts_eight
from music.data.resolve import resolve
from music.run import load_data

PRESETS = sorted(p.stem for p in (CONFIGS / "sweep").glob("*.yaml"))
EIGHT = ["sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
# a few classes of each image-file dataset, under the names their official folders use
TREES = {
    "sun397": ["a_abbey", "b_bakery_shop", "j_jail_cell"],
    "stanford_cars": ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"],
    "resisc45": ["airplane", "wetland"],
    "eurosat": ["AnnualCrop", "SeaLake"],
    "gtsrb": ["00000", "00014"],
    "dtd": ["banded", "zigzagged"],
}


def write_trees(root: Path, per_class: int) -> None:
    """Each image-file dataset as a train/ + test/ tree of coloured images (a colour per class: learnable)."""
    from PIL import Image

    for name, classes in TREES.items():
        for c, folder in enumerate(classes):
            for split, count in (("train", per_class), ("test", max(2, per_class // 3))):
                for i in range(count):
                    colour = ((70 * c + 40) % 256, (150 * c + 90 + i) % 256, (30 * c + 200) % 256)
                    path = root / name / split / folder / f"{i}.jpg"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (40 + c, 30), colour).save(path)


@pytest.fixture(scope="module")
def every_dataset(tmp_path_factory) -> Path:
    """MNIST, Fashion-MNIST and KMNIST (IDX), CIFAR-10/100 (pickled batches), SVHN (.mat) and the six image-file
    datasets (train/test trees) in one data folder, each small."""
    root = tmp_path_factory.mktemp("every_dataset")
    for folder in ("MNIST", "FashionMNIST", "KMNIST"):  # MNIST enough for music_paper's 2,000 images of θ0
        write_mnist_files(root, per_class_train=250 if folder == "MNIST" else 12, per_class_test=3, folder=folder)
    write_cifar_files(root, per_class_train=10, per_class_test=2)
    write_cifar_files(root, classes=100, per_class_train=4, per_class_test=1)
    write_svhn_files(root, per_class_train=12, per_class_test=3)
    write_trees(root, per_class=10)
    return root


@pytest.fixture(scope="module")
def eight_dir(tmp_path_factory) -> Path:
    """The eight datasets alone, smaller: MNIST and SVHN files, the six image-file datasets as trees."""
    root = tmp_path_factory.mktemp("eight")
    write_mnist_files(root, per_class_train=8, per_class_test=3)
    write_svhn_files(root, per_class_train=8, per_class_test=3)
    write_trees(root, per_class=6)
    return root


def preset_cfg(preset: str, data_dir: Path, tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"sweep={preset}",
                f"data.data_dir={data_dir}",
                "data.download=false",
                "data.workers=0",
                f"cache.dir={tmp_path / 'cache'}",
                *overrides,
            ],
        )
    if "eight_tasks" in cfg:
        cfg.eight_tasks.folders = str(data_dir)
    return cfg


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_its_data(preset, every_dataset, tmp_path):
    cfg = preset_cfg(preset, every_dataset, tmp_path)
    plan = resolve(cfg)
    data = load_data(cfg, plan)
    assert data.train.images.dtype == torch.uint8 and len(data.train) > 0 and len(data.test) > 0
    assert tuple(data.train.images.shape[1:]) == data.spec.shape
    assert 0 <= int(data.train.labels.min()) <= int(data.train.labels.max()) < data.spec.classes
    assert all(len(data.split.task_train(i)) > 0 for i in range(len(plan.tasks))), preset
    if preset == "eight_tasks":  # open_clip's preprocess: every dataset stored at ViT-B/32's 224 px
        assert plan.key == "+".join(EIGHT) and data.spec.shape == (3, 224, 224)
        assert data.spec.classes == 397 + 196 + 45 + 10 + 10 + 43 + 10 + 47
        prompts = data.spec.class_prompts()
        gtsrb = sum((397, 196, 45, 10, 10))  # GTSRB's first class after the four datasets before it
        assert prompts[gtsrb][0] == f'a zoomed in photo of a "{prompts_eight.GTSRB_NAMES[0]}" traffic sign.'  # theirs
        assert prompts_eight.GTSRB_NAMES[0] == "red and white circle 20 kph speed limit"  # not "00000"


def test_eight_tasks_runs_end_to_end(eight_dir, tmp_path, weights):
    """sweep=eight_tasks as a multirun (individual fine-tunes with warmup + cosine stepped per step, clipping; task
    arithmetic over them), a tiny OpenCLIP model in place of ViT-B/32 and one epoch per dataset (the papers' epochs:
    test_each_task_trains_its_datasets_epochs), streamed from the disk cache (data.storage=streamed), and its report
    with the paper's column."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "sweep=eight_tasks",
        f"eight_tasks.folders={eight_dir}",
        "finetune.epochs_per_dataset=null",
        "finetune.epochs=1",
        "experiment=individual,task_arithmetic",
        *backbone_overrides("clip", weights),
        "data.storage=streamed",
        "data.workers=1",
        "data.download=false",
        "finetune.scheduler.warmup_steps=5",
        "merge.lambdas=[0.0,0.3]",
        "logger=none",
        "trainer=cpu",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {json.loads(p.read_text())["experiment"]: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}
    assert set(runs) == {"individual", "task_arithmetic"}
    merged = runs["task_arithmetic"]
    assert merged["dataset"] == "+".join(EIGHT) and len(merged["tasks"]) == 8
    assert merged["reference"]["figures"]["task_arithmetic"]["test/acc_task_mean"] == 0.708
    at_zero = next(p for p in merged["lambda_curve"] if p["lambda"] == 0.0)
    assert at_zero["test/acc"] == merged["theta0/test/acc"]  # λ = 0 is θ0, the zero-shot model, exactly
    assert all(merged[f"test/acc_task_{i}"] is not None for i in range(8))
    timings = [json.loads(p.read_text()) for p in sweep.rglob("timings.json")]
    assert sum(k.startswith("fit/individual") for t in timings for k in t) == 8  # trained once, then from the cache
    images = list((tmp_path / "logs" / "cache" / "images").glob("train-*/images.u8"))
    assert len(images) == 1  # stored once, shared by both jobs
    report = subprocess.run(
        [sys.executable, "-m", "music.report", str(sweep)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "paper" in report.stdout


def test_each_task_trains_its_datasets_epochs(every_dataset, tmp_path, weights):
    """finetune.epochs_per_dataset: each individual fine-tune trains its own dataset's epochs (as many optimizer steps
    as epochs × batches), and the per-step schedule's warmup reaches the base rate."""
    from music.cache import ArtifactCache
    from music.experiment import Run

    cfg = preset_cfg(
        "eight_tasks",
        every_dataset,
        tmp_path,
        *backbone_overrides("clip", weights),
        "tasks=[eurosat,dtd]",
        "finetune.epochs_per_dataset={eurosat:2,dtd:3}",
        "data.batch_size=8",
        "logger=none",
        "trainer=cpu",
    )
    cfg.paths.output_dir = str(tmp_path / "run")
    cfg.experiment_name = cfg.strategy = "individual"
    data = load_data(cfg)
    run = Run.open(cfg, data, ArtifactCache(cfg.cache.dir, False), [])
    for task, epochs in zip(data.plan.tasks, (2, 3)):
        assert run.artifacts.budget(task).epochs == epochs
    assert run.artifacts.budget([c for t in data.plan.tasks for c in t]).epochs == cfg.finetune.epochs  # two datasets


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ("data.storage=disk", "error: data.storage='disk' is not allowed: one of auto, resident, streamed"),
        ("data.resident_max_gb=0", "error: data.resident_max_gb=0 is not allowed: a number in (0, inf)"),
        ("data.workers=-1", "error: data.workers=-1 is not allowed: an integer in [0, 64]"),
        ("data.max_image_pixels=0", "error: data.max_image_pixels=0 is not allowed: an integer in [1, inf) or null"),
        (
            "finetune.scheduler_interval=batch",
            "error: finetune.scheduler_interval='batch' is not allowed: one of epoch",
        ),
        ("finetune.epochs_per_dataset={mnist:0}", "error: finetune.epochs_per_dataset.mnist=0 is not allowed"),
        ("finetune.epochs_per_dataset={imagenet:3}", "error: finetune.epochs_per_dataset='imagenet' is not allowed"),
        (
            "finetune.scheduler={_target_:music.models.schedules.WarmupCosine,_partial_:true,warmup_steps:0}",
            "error: finetune.scheduler.warmup_steps=0 is not allowed",
        ),
    ],
)
def test_a_new_setting_refuses_a_bad_value_in_one_line(tmp_path, bad, line):
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=merged",
        bad,
        "logger=none",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "cache").exists()  # before any work


def test_an_image_folders_names_and_prompts_are_checked_in_one_line(tmp_path):
    from test_datasets_as_tasks import write_folder

    root = write_folder(tmp_path / "pets", per_class=4)
    for bad, line in [
        ("data.class_names=[a,b]", "error: data.class_names=['a', 'b'] is not allowed: 3 names, one per class folder"),
        ("data.prompts=3", "error: data.prompts=3 is not allowed: a list of strings or null"),
    ]:
        command = [sys.executable, str(ROOT / "train.py"), "data=image_folder", f"data.root={root}", bad, "logger=none"]
        result = subprocess.run([*command, f"paths.log_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.startswith(line) and result.stderr.count("\n") == 1
