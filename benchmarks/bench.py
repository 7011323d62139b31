"""The performance figures, each the median of several runs, written as JSON with the machine's description.

    python benchmarks/bench.py [--device cpu|cuda] [--repeats 15] [--h2h-repeats 3] [--continual-repeats 5]
                               [--out logs/bench/bench.json]

- epoch: one training epoch of the default MLP on 60k Fashion-MNIST images through the project's Trainer path,
  next to a plain PyTorch loop on the same model, data and batch size, the data resident on --device (cpu, or cuda
  where there is a GPU: the default there), measured in this process in back-to-back pairs, alternating which runs
  first (ratio: the median of the pairs' ratios);
- resnet18_epoch: the same pair for ResNet-18 (CIFAR variant, width 64) with crop+flip augmentation on the device in
  both paths, its first --resnet-batches batches (4 on a CPU);
- ties: TIES-merging of 10 task vectors of 1M parameters;
- head_to_head: one seed of the whole comparison as one multirun process (start-up included), with a cold
  and then a warm cache, and its peak resident memory;
- merge_step: each merge method's whole merge step (statistics, coefficient learning, the search over its grid) on
  per-class Fashion-MNIST tasks, from its run's timings.json, with task arithmetic's beside it;
- continual: the class-incremental protocol (sweep=class_incremental, one seed, nothing cached): the training seconds
  of plain `sequential` and of each continual method, and a plain PyTorch loop doing sequential's work (each stage
  one epoch of its task, then one pass over the validation images, as the Trainer validates), in this process in
  rounds of every path, alternating their order (ratios: the median of the rounds' ratios).
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from music.cache import ArtifactCache
from music.data.augment import training_augment
from music.experiment import Run
from music.experiment.training import quiet_lightning
from music.instantiation import build_network
from music.merging import kernels
from music.merging.methods import METHODS
from music.models.classifier import Classifier
from music.run import load_data

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
ROOT = Path(__file__).resolve().parents[1]
HEAD_TO_HEAD = "pretrain,individual,merged,sequential,task_arithmetic,ties,dare,ft_classifier"
# the ResNet-18 epoch figure: as CIFAR trains, crops and flips on the device in both paths (bench, gpu_check)
RESNET_EPOCH = ("model=resnet18", "augment=crop_flip")
TARGETS = {
    "epoch_ratio": 1.2,
    "head_to_head_cold_s": 30.0,
    "head_to_head_warm_s": 12.0,
    "ties_s": 0.5,
    "peak_rss_gb": 2.0,
    "merge_step_s": 10.0,
    "sequential_vs_plain": 1.3,
    "continual_vs_sequential": 1.5,
    "resnet18_epoch_ratio": 1.2,
}
# plain sequential and every continual method (configs/continual/<name>.yaml, each run as experiment=<name>)
CONTINUAL = ["sequential"] + sorted(p.stem for p in (ROOT / "configs" / "continual").glob("*.yaml") if p.stem != "none")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "cpu": model,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


ACCELERATOR = {"cpu": "cpu", "cuda": "gpu"}  # --device -> trainer.accelerator


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_config(data_dir: str, device: torch.device, *overrides: str):
    """The root config on Fashion-MNIST for a measurement in this process, training on `device`."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "data=fashion_mnist",
                f"data.data_dir={data_dir}",
                "logger=none",
                "paths.output_dir=/tmp/music-bench",
                f"trainer.accelerator={ACCELERATOR[device.type]}",
                *overrides,
            ],
        )


def alternating(paths: dict, rounds: int, warmup: int = 0) -> dict[str, list[float]]:
    """Each path's seconds over `rounds` rounds that run every path once, the order reversed every other round (drift
    and order hit all paths alike; ratios are then taken within a round), after `warmup` rounds not counted."""
    runs = {name: [] for name in paths}
    for i in range(warmup + rounds):
        for name in list(paths)[:: 1 if i % 2 == 0 else -1]:
            seconds = paths[name]()
            if i >= warmup:
                runs[name].append(seconds)
    return runs


def plain_epoch(net, images, labels, batch_size, lr, batches: int | None = None, augment=None) -> float:
    """One epoch (or its first `batches` batches) of a plain loop, on the device the images are on (each batch
    augmented by `augment` when given, as the project's path does)."""
    net = net.to(images.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    synchronize(images.device)
    start = time.perf_counter()
    for rows in torch.randperm(len(labels), device=images.device).split(batch_size)[:batches]:
        x = images[rows] if augment is None else augment(images[rows])
        loss = F.cross_entropy(net(x), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(images.device)
    return time.perf_counter() - start


def trainer_epoch(cfg, data, batches: int | None = None) -> float:
    quiet_lightning()  # as a run's training stages are
    module = Classifier(
        build_network(cfg, data.spec),
        instantiate(cfg.pretrain.optimizer),
        tasks=[list(t) for t in cfg.tasks],
        num_classes=data.spec.classes,
        augment=training_augment(cfg.augment, data.spec, seed=0),
        normalize=data.normalize,
    )
    callbacks = [instantiate(node) for node in cfg.callbacks.values()]  # the project's own: its progress bar
    trainer = instantiate(
        cfg.trainer, max_epochs=1, logger=False, limit_val_batches=0, limit_train_batches=batches, callbacks=callbacks
    )
    loader = data.loader(torch.arange(len(data.train_labels)), shuffle=True)
    start = time.perf_counter()
    trainer.fit(module, loader)
    synchronize(data.train.device)
    return time.perf_counter() - start


def epoch_figures(
    data_dir: str, repeats: int, device: torch.device, model: tuple[str, ...] = (), batches: int | None = None
) -> dict:
    """Median epoch seconds of both paths, the data resident on `device`, and the median of their paired ratios (the
    baseline is measured here, not a constant); `model` overrides the network, `batches` limits the epoch."""
    cfg = bench_config(data_dir, device, *model)
    data = load_data(cfg).to(device)
    paths = {
        "plain": lambda: plain_epoch(
            build_network(cfg, data.spec),
            data.images(torch.arange(len(data.train))),
            data.train_labels,
            cfg.data.batch_size,
            cfg.pretrain.optimizer.lr,
            batches,
            training_augment(cfg.augment, data.spec, seed=0),
        ),
        "project": lambda: trainer_epoch(cfg, data, batches),
    }
    runs = alternating(paths, repeats)  # back-to-back pairs, each path first in every other pair
    plain, project = runs["plain"], runs["project"]
    # the ratio is taken within each pair: this shared machine's speed drifts by ±20% over a minute
    images = len(data.train_labels) if batches is None else min(len(data.train_labels), batches * cfg.data.batch_size)
    return {
        "device": str(device),
        "model": cfg.model.net._target_,
        "images": images,
        "batch_size": cfg.data.batch_size,
        "plain_loop_s": statistics.median(plain),
        "trainer_s": statistics.median(project),
        "ratio": statistics.median(t / p for t, p in zip(project, plain)),
        "ratio_of_medians": statistics.median(project) / statistics.median(plain),
        "plain_loop_runs_s": plain,
        "trainer_runs_s": project,
    }


def ties_figure(repeats: int) -> dict:
    tau = torch.randn(10, 1_000_000, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernels.ties(tau, keep_fraction=0.2)
        runs.append(time.perf_counter() - start)
    return {
        "vectors": 10,
        "parameters": 1_000_000,
        "keep_fraction": 0.2,
        "median_s": statistics.median(runs),
        "runs_s": runs,
    }


def head_to_head(data_dir: str, repeats: int, device: torch.device) -> dict:
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for times in (cold, warm):  # the same cache: first empty, then full
                command = [
                    sys.executable,
                    str(ROOT / "train.py"),
                    "-m",
                    f"experiment={HEAD_TO_HEAD}",
                    "data=fashion_mnist",
                    f"data.data_dir={data_dir}",
                    "logger=none",
                    f"cache.dir={tmp}/cache",
                    f"paths.log_dir={tmp}/logs",
                    f"trainer.accelerator={ACCELERATOR[device.type]}",
                ]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=tmp)
                times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child: one multirun process
    return {
        "device": str(device),
        "experiments": HEAD_TO_HEAD.split(","),
        "cold_s": statistics.median(cold),
        "warm_s": statistics.median(warm),
        "cold_runs_s": cold,
        "warm_runs_s": warm,
        "peak_rss_gb": peak_kb / 2**20,
    }


def merge_steps(data_dir: str) -> dict:
    """Seconds of each method's merge step (merge/statistics + merge/search in timings.json), one seed, 10 per-class
    tasks, the fine-tunes already in the cache (one multirun over every method)."""
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            "data=fashion_mnist",
            f"data.data_dir={data_dir}",
            "logger=none",
            f"cache.dir={tmp}/cache",
            f"paths.log_dir={tmp}/logs",
        ]
        subprocess.run(
            [sys.executable, str(ROOT / "train.py"), "experiment=individual", *common],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        sweep = Path(tmp) / "sweep"
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            f"experiment={','.join(METHODS)}",
            *common,
            f"hydra.sweep.dir={sweep}",
        ]
        subprocess.run(command, check=True, capture_output=True, cwd=tmp)
        seconds = {}
        for timings in sweep.glob("*/timings.json"):
            metrics = json.loads((timings.parent / "metrics.json").read_text())
            times = json.loads(timings.read_text())
            seconds[metrics["merge_method"]] = times["merge/statistics_s"] + times["merge/search_s"]
    return {
        "tasks": "10 × one class",
        "seconds": dict(sorted(seconds.items())),
        "task_arithmetic_s": seconds["task_arithmetic"],
        "slowest": max(seconds, key=seconds.get),
    }


def continual_figures(data_dir: str, repeats: int, device: torch.device) -> dict:
    """Training seconds (the sum of each stage's fit) of sequential and each continual method under
    sweep=class_incremental, nothing cached, and of a plain loop doing sequential's work; measured in this process in
    rounds after one warm-up round, each round running every path once in an order that alternates (the ratios: the
    median of the rounds' ratios, as the epoch figure's)."""
    configs = {
        name: bench_config(data_dir, device, "sweep=class_incremental", f"experiment={name}", "cache.enabled=false")
        for name in CONTINUAL
    }
    cfg = configs["sequential"]
    data = load_data(cfg).to(device)

    def project(name: str) -> float:
        quiet_lightning()
        run = Run.open(configs[name], data, ArtifactCache("/tmp/music-bench/cache", enabled=False), [])
        run.artifacts.sequential_states(run.artifacts.continual_method())
        return sum(v for k, v in run.ctx.timings.items() if k.startswith("fit/sequential/"))

    def plain() -> float:
        net, val = build_network(cfg, data.spec), data.images(data.split.val)
        start = time.perf_counter()
        for i in range(len(cfg.tasks)):
            rows = data.split.task_train(i)
            plain_epoch(net, data.images(rows), data.train_labels[rows], cfg.data.batch_size, cfg.finetune.optimizer.lr)
            with torch.no_grad():
                net(val).argmax(dim=1)
        synchronize(device)
        return time.perf_counter() - start

    paths = {"plain": plain} | {name: (lambda name=name: project(name)) for name in CONTINUAL}
    runs = alternating(paths, repeats, warmup=1)
    seq = runs["sequential"]
    return {
        "seconds": {k: statistics.median(v) for k, v in runs.items() if k != "plain"},
        "plain_loop_s": statistics.median(runs["plain"]),
        "sequential_vs_plain": statistics.median(s / p for s, p in zip(seq, runs["plain"])),
        "vs_sequential": {
            k: statistics.median(t / s for t, s in zip(v, seq))
            for k, v in runs.items()
            if k not in ("plain", "sequential")
        },
        "runs_s": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--h2h-repeats", type=int, default=3)
    parser.add_argument("--continual-repeats", type=int, default=5)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(ROOT / "logs" / "bench" / "bench.json"))
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        choices=list(ACCELERATOR),
        help="where the epochs, the head-to-head and the ResNet-18 epoch run, the data resident there",
    )
    parser.add_argument(
        "--resnet-batches",
        type=int,
        default=None,
        help="batches of the ResNet-18 epoch (default: 4 on a CPU, all on a GPU)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    resnet_batches = args.resnet_batches or (
        4 if device.type == "cpu" else None
    )  # a whole epoch takes ~10 min on 2 CPU cores

    result = {"machine": machine(), "targets": TARGETS, "device": str(device)}
    result["epoch"] = epoch_figures(args.data_dir, args.repeats, device)
    result["ties"] = ties_figure(args.repeats)
    result["head_to_head"] = head_to_head(args.data_dir, args.h2h_repeats, device)
    result["merge_step"] = merge_steps(args.data_dir)
    result["continual"] = continual_figures(args.data_dir, args.continual_repeats, device)
    # last: it grows this process to ~2.3 GB, which a child forked afterwards would count in its own peak memory
    result["resnet18_epoch"] = epoch_figures(args.data_dir, 3, device, RESNET_EPOCH, resnet_batches)
    result["meets"] = {
        "epoch_ratio": result["epoch"]["ratio"] <= TARGETS["epoch_ratio"],
        "head_to_head_cold_s": result["head_to_head"]["cold_s"] <= TARGETS["head_to_head_cold_s"],
        "head_to_head_warm_s": result["head_to_head"]["warm_s"] <= TARGETS["head_to_head_warm_s"],
        "ties_s": result["ties"]["median_s"] <= TARGETS["ties_s"],
        "peak_rss_gb": result["head_to_head"]["peak_rss_gb"] <= TARGETS["peak_rss_gb"],
        "merge_step_s": max(result["merge_step"]["seconds"].values()) <= TARGETS["merge_step_s"],
        "sequential_vs_plain": result["continual"]["sequential_vs_plain"] <= TARGETS["sequential_vs_plain"],
        "continual_vs_sequential": max(result["continual"]["vs_sequential"].values())
        <= TARGETS["continual_vs_sequential"],
        "resnet18_epoch_ratio": result["resnet18_epoch"]["ratio"] <= TARGETS["resnet18_epoch_ratio"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
