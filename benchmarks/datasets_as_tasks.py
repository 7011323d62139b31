"""Real Fashion-MNIST as one task among several datasets: tasks [fashion_mnist, mnist, svhn] with per-task heads, θ0
trained here (on half of each dataset's training images) or on another dataset (data.pretrain.data=cifar10), and
merged, sequential, task arithmetic and TSV-M from each — a multirun, its report, and a JSON of every run's figures
and seconds.

    python benchmarks/datasets_as_tasks.py [--device cpu|cuda] [--model mlp] [--seeds 3] [--out logs/datasets_as_tasks]

MNIST, SVHN and CIFAR-10 cannot be downloaded on the machines this project is built on: their files are written here
in their real formats with synthetic images (class prototypes plus noise: learnable, but their accuracies say nothing
about the real datasets). Fashion-MNIST is the real one (--fashion-dir; Debian's dataset-fashion-mnist by default).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' writers of the datasets' real file formats

EXPERIMENTS = "merged,sequential,task_arithmetic,tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="mlp", help="a configs/model name, e.g. reduced_resnet18 on a GPU")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(ROOT / "logs" / "datasets_as_tasks"))
    args = parser.parse_args()
    from conftest import write_cifar_files, write_mnist_files, write_svhn_files

    out = Path(args.out)
    data = out / "data"
    write_mnist_files(data, per_class_train=600, per_class_test=100)
    write_svhn_files(data, per_class_train=600, per_class_test=100)
    write_cifar_files(data, per_class_train=600, per_class_test=100)
    fashion = data / "FashionMNIST" / "raw"  # torchvision's layout under data_dir
    fashion.mkdir(parents=True, exist_ok=True)
    for file in Path(args.fashion_dir).glob("*-ubyte.gz"):
        shutil.copy(file, fashion / file.name)
    sweep = out / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"experiment={EXPERIMENTS}",
        "tasks=[fashion_mnist,mnist,svhn]",
        "model.head=per_task",
        f"model={args.model}",
        "data.pretrain.data=null,cifar10",
        f"seed={','.join(map(str, range(args.seeds)))}",
        f"data.data_dir={data}",
        "logger=none",
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"paths.log_dir={out / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    report = subprocess.run(
        [sys.executable, "-m", "music.report", str(sweep)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    (out / "report.md").write_text(report.stdout)
    runs = []
    for path in sorted(sweep.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        timings = json.loads((path.parent / "timings.json").read_text())
        runs.append(
            {
                "experiment": metrics["experiment"],
                "seed": metrics["seed"],
                "theta0": "cifar10 (elsewhere)" if metrics["dataset"].startswith("cifar10+") else "trained here",
                "fashion_mnist_acc": metrics["test/acc_task_0"],
                "task_mean_acc": metrics["test/acc_task_mean"],
                "theta0_test_acc": metrics["theta0/test/acc"],
                # training this run did itself (a stage another run trained first comes from the cache)
                "fit_seconds": sum(v for k, v in timings.items() if k.startswith("fit/")),
                "lambda": metrics.get("lambda"),
            }
        )
    summary = {"command": " ".join(command), "sweep_seconds": seconds, "device": args.device, "runs": runs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report.stdout)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
