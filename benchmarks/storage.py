"""Resident vs streamed images (music.data.store), written as JSON with the machine's description.

    python benchmarks/storage.py [--images 3000] [--big-images 12000] [--device cpu|cuda] [--out logs/bench/storage.json]

- throughput_workers_<n>: an image folder of --images JPEGs (10 classes, 320 × 256 px) stored at 224 px (decoded once into the
  disk cache), then one shuffled training epoch of uint8 batches (batch 128) normalised on --device, through
  data.storage=resident and data.storage=streamed on the same pixels, in alternating rounds (images/s, the median of
  each; ratio: the median of the rounds' streamed/resident ratios; target ≥ 0.8), with data.workers' default and
  with none;
- peak_rss: `python train.py experiment=merged` on an image folder of --big-images JPEGs at 224 px with a resident
  budget far below its size (data.resident_max_gb=0.25: streamed), a small MLP, one epoch of θ0 and one of the merged
  fine-tune: the run's peak resident memory (its process and its DataLoader workers, the largest of them) beside the
  set's size as uint8 and as float32.
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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.8


def write_folder(root: Path, count: int, classes: int = 10) -> Path:
    """`count` JPEGs (320 × 256, a colour per class plus noise) as an ImageFolder tree."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(count):
        c = i % classes
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = torch.tensor([(37 * c) % 256, (91 * c + 40) % 256, (13 * c + 200) % 256]).view(1, 1, 3)
        pixels = (base + torch.randint(-40, 40, (256, 320, 3), generator=g)).clamp(0, 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.jpg", quality=90)
    return root


def stored(root: Path, cache: Path, storage: str, device: torch.device, workers: int = 4):
    from music.data.pixels import Resize
    from music.data.refs import ImageFolder, Pixels
    from music.data.resolve import DataPlan
    from music.data.task_data import TaskData

    source, pixels = ImageFolder(str(root), 0.1), Pixels(None, Resize(224))
    plan = DataPlan(source, source.declare(pixels), pixels, [[c] for c in range(10)], None)
    data = TaskData(plan=plan, storage=storage, cache_dir=str(cache), batch_size=128, image_size=224, workers=workers)
    data.setup()
    return data.to(device)


def epoch_images_per_second(data, device: torch.device, workers: int) -> float:
    rows = torch.arange(len(data.train))
    start = time.perf_counter()
    seen = 0
    for images, labels in data.train.loader(rows, 128, shuffle=True, seed=0, workers=workers):
        x = data.normalize(images.to(device, non_blocking=True))
        seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert x.dtype == torch.float32
    return seen / (time.perf_counter() - start)


def throughput(folder: Path, cache: Path, device: torch.device, rounds: int, workers: int) -> dict:
    resident, streamed = (stored(folder, cache, s, device, workers) for s in ("resident", "streamed"))
    assert torch.equal(resident.train.images.cpu(), streamed.train.images.all())  # the same pixels both ways
    figures = {"resident": [], "streamed": []}
    for r in range(rounds + 1):  # round 0 warms both (the file's pages, the workers' start)
        order = ("resident", "streamed") if r % 2 else ("streamed", "resident")
        done = {
            name: epoch_images_per_second(resident if name == "resident" else streamed, device, workers)
            for name in order
        }
        if r:
            for name, value in done.items():
                figures[name].append(value)
    ratios = [s / r for s, r in zip(figures["streamed"], figures["resident"])]
    return {
        "images": len(resident.train),
        "resident_images_per_s": statistics.median(figures["resident"]),
        "streamed_images_per_s": statistics.median(figures["streamed"]),
        "streamed_over_resident": statistics.median(ratios),
        "target": f">= {TARGET_RATIO}",
        "workers": workers,
    }


def peak_rss(folder: Path, tmp: Path) -> dict:
    count = sum(1 for _ in folder.rglob("*.jpg"))
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=merged",
        "data=image_folder",
        f"data.root={folder}",
        "data.image_size=224",
        "data.test_fraction=0.1",
        "data.resident_max_gb=0.25",
        "data.batch_size=128",
        "data.eval_batch_size=256",  # 4096 images of 224 px as floats would be 2.5 GB per evaluation batch
        "model=mlp",
        "model.net.hidden=[32]",
        "pretrain.epochs=1",
        "finetune.epochs=1",
        "logger=none",
        "trainer=cpu",
        f"paths.log_dir={tmp / 'logs'}",
        f"hydra.run.dir={tmp / 'run'}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child: the run or a worker
    uint8 = count * 3 * 224 * 224
    return {
        "images": count,
        "set_uint8_gb": round(uint8 / 1e9, 3),
        "set_float32_gb": round(4 * uint8 / 1e9, 3),
        "peak_rss_gb": round(peak / 1e9, 3),
        "peak_over_float32": round(peak / (4 * uint8), 3),
        "streamed": "streamed from a disk cache" in (tmp / "run" / "train.log").read_text(),
        "run_seconds": round(seconds, 1),
        "test_acc": json.loads((tmp / "run" / "metrics.json").read_text())["test/acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--big-images", type=int, default=12000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(ROOT / "logs" / "bench" / "storage.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="music-storage-") as tmp:
        tmp = Path(tmp)
        result = {
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpus": __import__("os").cpu_count(),
            },
            "device": str(device),
        }
        small = write_folder(tmp / "small", args.images)
        # the training loaders' workers at data.workers' default (4, two cores kept for the trainer), one, and none:
        # the batches read in the training process
        from music.data.store import training_workers

        for workers in sorted({training_workers(4), 1, 0}, reverse=True):
            result[f"throughput_workers_{workers}"] = throughput(small, tmp / "cache", device, args.rounds, workers)
        result["peak_rss"] = peak_rss(write_folder(tmp / "big", args.big_images), tmp / "big_run")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
