"""benchmarks/gpu_check.py, the script a lent GPU runs, at a CPU's budget (--tiny): every part runs and its JSON says
what it measured."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow  # slow (~70 s): the GPU script at a CPU budget; a lent GPU runs it whole
def test_the_gpu_check_runs_on_a_cpu_at_a_tiny_budget(tmp_path, fashion_dir):
    out = tmp_path / "gpu_check.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--device",
        "cpu",
        "--tiny",
        f"--data-dir={fashion_dir}",
        f"--out={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["tests"]["ran"] is False
    for figure in ("mlp_epoch", "resnet18_epoch"):
        assert report[figure]["plain_loop_s"] > 0 and report[figure]["ratio"] > 0
    cifar = report["seq_cifar10"]
    assert cifar["returncode"] == 0 and sorted(cifar["runs"]) == ["derpp", "er_mammoth", "merged", "sequential"]
    assert cifar["data"].startswith("synthetic") and all(0 <= r["test/acc"] <= 1 for r in cifar["runs"].values())
    eight = report["eight_tasks_streamed"]
    assert eight["returncode"] == 0 and sorted(eight["runs"]) == ["individual", "task_arithmetic"], eight
    assert sum(k.startswith("fit/individual") for k in eight["fit_seconds"]) == 2  # one fine-tune per dataset
