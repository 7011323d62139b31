"""Launchers (gpu_pool, slurm) and sweep presets."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONFIGS, FAST, ROOT
from music.launching import POOL_ENV, WORKERS_ENV


def claim_and_work(args):
    """One job in a pool worker: claim the worker's GPU (once per worker), hold it for `seconds`."""
    from music.launching import claim_device

    lock_dir, seconds = args
    device = claim_device(lock_dir, poll_s=0.01)
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), device, os.environ["CUDA_VISIBLE_DEVICES"], start, time.monotonic()


def test_gpu_claims_never_put_two_live_jobs_on_one_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv(POOL_ENV, "0,1,2")  # a faked machine with three GPUs, inherited by the workers
    monkeypatch.setenv(WORKERS_ENV, "3")
    lengths = [0.3, 0.05, 0.2, 0.01, 0.4, 0.1, 0.02, 0.25, 0.05, 0.15, 0.01, 0.3]  # uneven: workers go free at random
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        jobs = pool.map(claim_and_work, [(str(tmp_path), s) for s in lengths], chunksize=1)
    by_worker = {}
    for pid, device, visible, _, _ in jobs:
        assert device == f"cuda:{visible}"
        by_worker.setdefault(pid, set()).add(device)
    assert all(len(devices) == 1 for devices in by_worker.values())  # a worker keeps its GPU for its lifetime
    assert len({d for devices in by_worker.values() for d in devices}) == len(by_worker)  # no two workers share one
    for i, (_, dev_a, _, start_a, end_a) in enumerate(jobs):
        for _, dev_b, _, start_b, end_b in jobs[i + 1 :]:
            assert dev_a != dev_b or end_a <= start_b or end_b <= start_a


def test_two_job_multirun_with_gpu_pool_on_cpu(tmp_path, mnist_dir):
    env = {k: v for k, v in os.environ.items() if k not in (POOL_ENV, WORKERS_ENV)} | {"CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=gpu_pool",
        "experiment=pretrain",
        "seed=0,1",
        f"data.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "logger=none",
        *FAST,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert seeds == [0, 1]
    logs = "".join(p.read_text() for p in (tmp_path / "sweep").rglob("train.log"))
    assert logs.count("runs on cpu") == 2


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.music_slurm.SlurmLauncher"  # hydra-submitit's, refusals as one line
    assert (launcher.gpus_per_node, launcher.partition, launcher.array_parallelism) == (1, "gpu", 64)


@pytest.mark.parametrize("preset", ["compare_classes", "compare_pairs", "music_paper", "align_pairs", "align_classes"])
def test_sweep_presets_compose(preset):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"sweep={preset}"], return_hydra_config=True)
    assert "seed" in cfg.hydra.sweeper.params


def test_the_dataset_presets_compose_to_datasets_as_tasks():
    from music.data.refs import Catalog
    from music.data.resolve import resolve

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        five = compose("train", overrides=["sweep=five_datasets"], return_hydra_config=True)
        eight = compose("train", overrides=["sweep=eight_tasks"], return_hydra_config=True)
    plan = resolve(five.copy())
    assert plan.key == "mnist+fashion_mnist+kmnist+svhn+cifar10" and plan.tasks[4] == list(range(40, 50))
    assert five.model.head == "per_task" and "tsv" in five.hydra.sweeper.params.experiment
    assert list(eight.tasks) == ["sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
    assert resolve(eight.copy()).source.parts[0] == Catalog("sun397")  # a typed value, never a string to parse
    assert eight.finetune.epochs_per_dataset.dtd == 76 and eight.finetune.scheduler_interval == "step"
    assert eight.trainer.gradient_clip_val == 1.0 and eight.finetune.scheduler.warmup_steps == 500
    assert (eight.model.net.name, eight.model.net.pretrained, eight.finetune.train) == (
        "ViT-B-32",
        "openai",
        "features",
    )
