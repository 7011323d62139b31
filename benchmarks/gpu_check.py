"""The GPU check, one script for a lent GPU (about 8 minutes on one): the tests marked `gpu`, the epoch figures of
`bench.py` (the default MLP, and ResNet-18 against a plain resident loop) on the device, and the seq-CIFAR-10 preset
(sweep=seq_cifar10_mammoth) for naive fine-tuning, ER-500, DER++-500 and joint training on one seed, and a reduced
sweep=eight_tasks (two datasets, ViT-B/32 shapes, random weights) streamed from the disk cache — written as JSON.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--cifar-dir DIR] [--epochs 5] [--tiny] [--out FILE]

Without `--cifar-dir` (a machine with no network has no CIFAR-10) the preset runs on CIFAR-10 files written here in
their real format with synthetic images: the data path is exercised, the accuracies mean nothing (the JSON says
which). `--tiny` is the same script at a budget a CPU affords in CI time (2 tasks, 1 epoch, a narrow ResNet).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' writer of CIFAR-10's files, for a machine without them
sys.path.insert(0, str(ROOT / "benchmarks"))

METHODS = ["sequential", "er_mammoth", "derpp", "merged"]  # naive, ER-500 (Mammoth's ER), DER++-500, joint


def run(command: list[str], timeout: int) -> tuple[int, float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    return result.returncode, time.perf_counter() - start, (result.stdout + result.stderr)[-2000:]


def gpu_tests(device: str) -> dict:
    if device != "cuda":
        return {"ran": False, "why": "no GPU: the tests marked gpu need one"}
    code, seconds, tail = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], 600)
    return {"ran": True, "passed": code == 0, "seconds": seconds, "tail": tail.splitlines()[-1:]}


def epochs(device: torch.device, data_dir: str, tiny: bool) -> dict:
    from bench import RESNET_EPOCH, epoch_figures

    resnet = RESNET_EPOCH + (("model.net.width=8",) if tiny else ())
    return {
        "mlp_epoch": epoch_figures(data_dir, 1 if tiny else 5, device, batches=4 if tiny else None),
        "resnet18_epoch": epoch_figures(data_dir, 1 if tiny else 3, device, resnet, 2 if tiny else None),
    }


def seq_cifar10(device: str, cifar_dir: str | None, epochs: int, tiny: bool, folder: Path) -> dict:
    synthetic = cifar_dir is None
    if synthetic:
        from conftest import write_cifar_files

        cifar_dir = str(
            write_cifar_files(folder / "cifar", per_class_train=40 if tiny else 500, per_class_test=10 if tiny else 100)
        )
    overrides = [
        f"data.data_dir={cifar_dir}",
        "data.download=false",
        f"finetune.epochs={epochs}",
        "logger=none",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"paths.log_dir={folder / 'logs'}",
        f"hydra.sweep.dir={folder / 'sweep'}",
        "seed=0",
        f"experiment={','.join(METHODS)}",
    ]
    if tiny:
        overrides += ["tasks=[[0,1],[2,3]]", "model.net.width=8"]
    command = [sys.executable, "train.py", "-m", "sweep=seq_cifar10_mammoth", *overrides]
    code, seconds, tail = run(command, 3000)
    found = {}
    for path in (folder / "sweep").rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        found[metrics["experiment"]] = {"test/acc": metrics["test/acc"], "forgetting": metrics.get("forgetting")}
    return {
        "data": "synthetic CIFAR-10 files (accuracies mean nothing)" if synthetic else cifar_dir,
        "epochs_per_task": epochs,
        "returncode": code,
        "seconds": seconds,
        "runs": found,
        **({"tail": tail} if code else {}),
    }


def eight_tasks_streamed(device: str, tiny: bool, folder: Path) -> dict:
    """sweep=eight_tasks reduced: two of its datasets (EuroSAT and DTD as train/test trees of JPEGs written here, a few
    hundred images each), CLIP ViT-B/32's shapes with random weights (no weights travel; --tiny: a 32-px OpenCLIP
    model), streamed from the disk cache (data.storage=streamed), individual fine-tunes then task arithmetic."""
    from test_presets import write_trees

    write_trees(folder / "eight", per_class=8 if tiny else 150)
    model = ["model.net.pretrained=null"]
    if tiny:
        from conftest import TINY_CLIP

        config = folder / "music-tiny-clip.json"
        config.write_text(json.dumps(TINY_CLIP))
        model += ["model.net.name=music-tiny-clip", f"model.net.model_config={config}"]
    overrides = [
        f"eight_tasks.folders={folder / 'eight'}",
        "tasks=[eurosat,dtd]",
        *model,
        "data.storage=streamed",
        "finetune.epochs_per_dataset=null",
        "finetune.epochs=1",
        "finetune.scheduler.warmup_steps=10",
        "logger=none",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"paths.log_dir={folder / 'logs8'}",
        f"hydra.sweep.dir={folder / 'sweep8'}",
        "experiment=individual,task_arithmetic",
    ]
    code, seconds, tail = run([sys.executable, "train.py", "-m", "sweep=eight_tasks", *overrides], 1800)
    found = {}
    for path in (folder / "sweep8").rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        found[metrics["experiment"]] = {"test/acc_task_mean": metrics["test/acc_task_mean"]}
    fits = [json.loads(p.read_text()) for p in (folder / "sweep8").rglob("timings.json")]
    return {
        "data": "EuroSAT and DTD trees of synthetic JPEGs, random weights (accuracies mean nothing)",
        "returncode": code,
        "seconds": seconds,
        "fit_seconds": {k: round(v, 2) for t in fits for k, v in t.items() if k.startswith("fit/")},
        "runs": found,
        **({"tail": tail} if code else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST, for the epochs")
    parser.add_argument("--cifar-dir", default=None, help="CIFAR-10 (torchvision's cifar-10-batches-py under it)")
    parser.add_argument("--epochs", type=int, default=5, help="per task (the paper's protocol: 50)")
    parser.add_argument("--tiny", action="store_true", help="a CPU's budget: 2 tasks, 1 epoch, ResNet width 8")
    parser.add_argument("--out", default=str(ROOT / "logs" / "gpu_check" / "gpu_check.json"))
    args = parser.parse_args()
    epochs_per_task = 1 if args.tiny else args.epochs
    result = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(part: dict) -> None:  # after each part, so a run stopped at its limit still leaves what it measured
        result.update(part)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(part, indent=2), flush=True)

    save({"tests": gpu_tests(args.device)})
    save(epochs(torch.device(args.device), args.data_dir, args.tiny))
    with tempfile.TemporaryDirectory() as folder:
        save({"seq_cifar10": seq_cifar10(args.device, args.cifar_dir, epochs_per_task, args.tiny, Path(folder))})
        save({"eight_tasks_streamed": eight_tasks_streamed(args.device, args.tiny, Path(folder))})
    # a failed part is a failed check (its JSON says which and why)
    parts = (result["seq_cifar10"], result["eight_tasks_streamed"])
    if result["tests"].get("passed") is False or any(part["returncode"] != 0 for part in parts):
        sys.exit(1)


if __name__ == "__main__":
    main()
