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

POOL_ENV = "MUSIC_GPU_POOL"  # the parent's visible GPU ids, "0,1,…" ("" for none), read by the workers
_claimed: dict = {}  # this process's claim: {"device": "cuda:<id>" | "cpu", "lock": FileLock}


def pool_size(cpu_workers: int) -> int:
    """Resolver for the launcher's n_jobs: one worker per visible GPU, else `cpu_workers` CPU workers.

    Counts GPUs in the launching process (which never trains) and exports their ids for the workers, which
    must not touch CUDA before choosing their device.
    """
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in visible.split(",") if i.strip()][:count] if visible else [str(i) for i in range(count)]
    os.environ[POOL_ENV] = ",".join(ids)
    return len(ids) or int(cpu_workers)


def run_group(fallback: str) -> str:
    """Resolver for the W&B group: the sweep's folder name in a multirun (all its jobs in one group), else `fallback`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return fallback


def register_resolvers() -> None:
    for name, resolver in (("music.pool_size", pool_size), ("music.run_group", run_group)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def claim_device(lock_dir: str | Path, n_workers: int, poll_s: float = 0.2) -> str:
    """Claim this worker's device once: a free GPU of the pool (blocking until one is), or the CPU with the
    machine's threads split between the workers. Returns "cuda:<id>" or "cpu"."""
    if _claimed:
        return _claimed["device"]
    gpus = [g for g in os.environ.get(POOL_ENV, "").split(",") if g]
    if not gpus:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
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
