"""Launchers (gpu_pool, slurm) and the multi-seed report."""

import csv
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from music.launching import POOL_ENV, WORKERS_ENV
from music.report import main as report_main
from music.report import summarize

from conftest import CONFIGS, FAST, ROOT


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
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=gpu_pool", "experiment=pretrain", "seed=0,1",
               f"data.data_dir={mnist_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=none", *FAST]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert seeds == [0, 1]
    logs = "".join(p.read_text() for p in (tmp_path / "sweep").rglob("train.log"))
    assert logs.count("runs on cpu") == 2


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.partition, launcher.array_parallelism) == (1, "gpu", 64)


@pytest.mark.parametrize("preset", ["compare_classes", "music_paper", "align_pairs", "align_classes"])
def test_sweep_presets_compose(preset):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"sweep={preset}"], return_hydra_config=True)
    assert "seed" in cfg.hydra.sweeper.params


def write_run(folder, experiment, seed, acc, **extra):
    folder.mkdir(parents=True)
    metrics = {"experiment": experiment, "seed": seed, "dataset": "fashion_mnist", "tasks": [[1], [2]], "head": "shared",
               "test/acc": acc, "test/acc_seen": acc + 0.1, "test/acc_unseen": None, "val/acc": acc} | extra
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_means_intervals_and_paired_differences_by_hand(tmp_path):
    merged, sequential = [0.70, 0.72, 0.74], [0.80, 0.86, 0.83]
    for seed, (m, s) in enumerate(zip(merged, sequential)):
        write_run(tmp_path / f"{seed}_merged", "merged", seed, m)
        matrix = [[0.9, 0.1], [0.6, 0.8]]
        write_run(tmp_path / f"{seed}_sequential", "sequential", seed, s, forgetting=0.3 + 0.01 * seed, acc_matrix=matrix)
    write_run(tmp_path / "x_task_arithmetic", "task_arithmetic", 0, 0.9, lambda_curve=[{"lambda": 0.5, "val/acc": 0.9, "test/acc": 0.9}], **{"lambda": 0.5})

    rows = {r["method"]: r for r in summarize([json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")])}
    t = 4.302652729911275  # t_{0.975, 2}
    assert rows["merged"]["test/acc"] == pytest.approx(0.72)
    assert rows["merged"]["test/acc ci95"] == pytest.approx(t * 0.02 / 3**0.5)  # sd 0.02
    assert rows["sequential"]["test/acc"] == pytest.approx(0.83)
    assert rows["sequential"]["test/acc ci95"] == pytest.approx(t * 0.03 / 3**0.5)  # sd 0.03
    assert rows["sequential"]["forgetting"] == pytest.approx(0.31)
    # paired Δ vs merged on the same seeds: 0.10, 0.14, 0.09 -> mean 0.11, sd sqrt(0.0007)
    assert rows["sequential"]["Δ test/acc vs merged"] == pytest.approx(0.11)
    assert rows["sequential"]["Δ test/acc vs merged ci95"] == pytest.approx(t * 0.0007**0.5 / 3**0.5)
    assert rows["task_arithmetic"]["n"] == 1 and rows["task_arithmetic"]["test/acc ci95"] is None
    assert rows["merged"]["Δ test/acc vs merged"] is None and rows["merged"]["test/acc_unseen"] is None

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| sequential | 3 | 0.8300 ± 0.0745 | 0.9300 ± 0.0745 | – | 0.3100 ± 0.0248 | 0.1100 ± 0.0657 |" in table
    with (tmp_path / "report" / "report.csv").open() as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"merged", "sequential", "task_arithmetic"}
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["acc_matrix_0.png", "lambda_curves_0.png", "methods_0.png"]
