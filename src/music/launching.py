"""Running many jobs on one machine: a pool of workers, one GPU each, claimed for the worker's lifetime.

Hydra's joblib launcher hands the next job to whichever worker is free, so `job.num % n_gpus` can put two
live jobs on one GPU. Instead each worker process claims a free GPU once (a file lock per GPU, held until
the worker exits) and sets CUDA_VISIBLE_DEVICES before CUDA starts; every job it runs then uses that GPU.
"""

import os
import time
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import OmegaConf

POOL_ENV = "MUSIC_GPU_POOL"  # the launching process's visible GPU ids, "0,1,…" ("" for none), for the workers
WORKERS_ENV = "MUSIC_POOL_WORKERS"  # how many workers the pool has
_claimed: dict = {}  # this process's claim: {"device": "cuda:<id>" | "cpu", "lock": FileLock}


def pool_size(cpu_workers: int) -> int:
    """Resolver for the launcher's n_jobs: one worker per visible GPU, else `cpu_workers` CPU workers.

    Counts GPUs once, in the launching process (which never trains), and exports the answer; the workers
    inherit it and so never touch CUDA before choosing their device (nor when Hydra resolves this again there).
    """
    if POOL_ENV not in os.environ:
        import torch

        count = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = (
            [i.strip() for i in visible.split(",") if i.strip()][:count] if visible else [str(i) for i in range(count)]
        )
        os.environ[POOL_ENV] = ",".join(ids)
        os.environ[WORKERS_ENV] = str(len(ids) or int(cpu_workers))
    return int(os.environ[WORKERS_ENV])


def run_group(fallback: str) -> str:
    """Resolver for the W&B group: the sweep's folder name in a multirun (all its jobs in one group), else `fallback`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return fallback


def register_resolvers() -> None:
    from music.data.sources import dataset_augment, one_task_per_class

    for name, resolver in (
        ("music.pool_size", pool_size),
        ("music.run_group", run_group),
        ("music.one_task_per_class", one_task_per_class),
        ("music.dataset_augment", dataset_augment),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def claim_device(lock_dir: str | Path, poll_s: float = 0.2) -> str | None:
    """Claim this worker's device once: a free GPU of the pool (blocking until one is), or the CPU with the
    machine's threads split between the workers. Returns "cuda:<id>", "cpu", or None when the pool was not
    sized by `music.pool_size` (hydra.launcher.n_jobs set by hand): devices are then left alone."""
    if _claimed:
        return _claimed["device"]
    if POOL_ENV not in os.environ:
        return None
    gpus = [g for g in os.environ[POOL_ENV].split(",") if g]
    if not gpus:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get(WORKERS_ENV, "1"))))
        _claimed["device"] = "cpu"
        return "cpu"
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in gpus:
            lock = FileLock(str(Path(lock_dir) / f"gpu{gpu}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts in this process
            _claimed.update(device=f"cuda:{gpu}", lock=lock)
            return _claimed["device"]
        time.sleep(poll_s)
