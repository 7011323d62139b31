"""The multi-seed report: grouping, variants, means with confidence intervals, paired differences, plots."""

import csv
import json

import pytest

from music.report import main as report_main
from music.report import summarize


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
