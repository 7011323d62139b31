"""One training epoch of the default MLP on 60k Fashion-MNIST images: the project's Trainer path next to a
plain PyTorch loop on the same model, data and batch size, measured in the same process.

    python benchmarks/epoch.py [--repeats 5] [--out logs/bench/epoch.json]
"""

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from music.models import Classifier

warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
ROOT = Path(__file__).resolve().parents[1]


def plain_epoch(net, images, labels, batch_size, lr) -> float:
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for rows in torch.randperm(len(labels)).split(batch_size):
        loss = F.cross_entropy(net(images[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def trainer_epoch(cfg, data, indices) -> float:
    module = Classifier(instantiate(cfg.model), instantiate(cfg.pretrain.optimizer), tasks=[list(t) for t in cfg.tasks])
    trainer = instantiate(cfg.trainer, max_epochs=1, logger=False, limit_val_batches=0)
    loader = data.loader(indices, shuffle=True)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(ROOT / "logs" / "bench" / "epoch.json"))
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["data=fashion_mnist", f"data.data_dir={args.data_dir}", "logger=none", "paths.output_dir=/tmp/music-bench"])
    data = instantiate(cfg.data, _convert_="all")
    data.setup()
    indices = torch.arange(len(data.train_labels))
    images, labels = data.train_images, data.train_labels
    lr, batch_size = cfg.pretrain.optimizer.lr, cfg.data.batch_size

    plain, project = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        plain.append(plain_epoch(instantiate(cfg.model), images, labels, batch_size, lr))
        project.append(trainer_epoch(cfg, data, indices))
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "images": len(labels),
        "batch_size": batch_size,
        "repeats": args.repeats,
        "plain_loop_epoch_s": statistics.median(plain),
        "trainer_epoch_s": statistics.median(project),
        "ratio_trainer_over_plain": statistics.median(project) / statistics.median(plain),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
