"""The same seed gives the same metrics.json, for every experiment, before and after a change of the code's shape.

`tests/golden/every_experiment.json` holds what one small multirun over every experiment wrote on real Fashion-MNIST
(written by `python tests/test_same_metrics.py` on the commit before a redesign, committed with it); this test runs
the same multirun and compares every figure. On the machine that wrote the file (same CPU, same torch) the figures
must be equal to the last bit; elsewhere a float kernel may round differently, so figures must agree within a few
test images (and everything that is not a number, exactly).
"""

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import torch

from conftest import FASHION_MNIST, ROOT

GOLDEN = Path(__file__).parent / "golden" / "every_experiment.json"
EXPERIMENTS = [
    "adamerging",
    "adamerging_taskwise",
    "agem",
    "average",
    "breadcrumbs",
    "consensus",
    "dare",
    "emr",
    "ewc",
    "fisher",
    "ft_classifier",
    "individual",
    "iso_c",
    "iso_cts",
    "lwf",
    "magmax",
    "merged",
    "negation",
    "pcb",
    "pretrain",
    "regmean",
    "replay",
    "sequential",
    "tall_masks",
    "tangent",
    "task_arithmetic",
    "ties",
    "tsv",
    "wudi",
]
OVERRIDES = [
    "data=fashion_mnist",
    "tasks=[[1,2],[3,4]]",
    "data.pretrain.fraction=null",
    "data.pretrain.num_samples=2000",
    "pretrain.epochs=1",
    "finetune.epochs=1",
    "data.batch_size=128",
    "merge.lambdas=[0.0,0.5,1.0]",
    "logger=none",
]
NEAR = 3e-3  # off the machine that wrote the file: 3 of 1000 test images of a class may fall the other way


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    return f"{platform.machine()} {cpu} torch {torch.__version__} threads {torch.get_num_threads()}"


def every_experiment(folder: Path, data_dir: Path = FASHION_MNIST) -> dict[str, dict]:
    """{experiment: its metrics.json} of the multirun, written under `folder`."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"experiment={','.join(EXPERIMENTS)}",
        f"data.data_dir={data_dir}",
        *OVERRIDES,
        f"paths.log_dir={folder / 'logs'}",
        f"hydra.sweep.dir={folder / 'sweep'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for path in sorted((folder / "sweep").rglob("metrics.json")):
        name = path.parent.name.split("_", 1)[1]  # <job number>_<experiment_name>
        runs[name] = json.loads(path.read_text())
    return runs


def differences(expected, got, exact: bool, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(got, dict):
        keys = sorted(expected)  # a run may add keys (metrics.json's contract); it may not drop or change one
        return [
            d
            for k in keys
            for d in differences(expected.get(k, "<absent>"), got.get(k, "<absent>"), exact, f"{where}/{k}")
        ]
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [d for i, (e, g) in enumerate(zip(expected, got)) for d in differences(e, g, exact, f"{where}[{i}]")]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (expected, got))
    if numbers and not exact and isinstance(expected, float) and math.isclose(expected, got, rel_tol=0, abs_tol=NEAR):
        return []
    return [] if expected == got else [f"{where}: {expected!r} → {got!r}"]


def test_every_experiment_gives_the_figures_it_gave_before(tmp_path, fashion_dir):
    golden = json.loads(GOLDEN.read_text())
    runs = every_experiment(tmp_path, fashion_dir)
    exact = golden["machine"] == machine()
    found = differences(golden["runs"], runs, exact)
    assert not found, (
        f"{len(found)} figures differ ({'exact' if exact else f'within {NEAR}'}, written on {golden['machine']}):\n"
        + "\n".join(found[:40])
    )


if __name__ == "__main__":  # write the golden file from this checkout
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        runs = every_experiment(Path(folder))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(
        json.dumps({"machine": machine(), "overrides": OVERRIDES, "runs": runs}, indent=1, sort_keys=True) + "\n"
    )
    print(f"{len(runs)} runs -> {GOLDEN}")
