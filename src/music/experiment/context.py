"""The run's context: its config, data and split, the tasks and head protocol, the device, the held-out sets every
evaluation reads, seeded draws of unlabeled task images, wall times and the loggers' tables."""

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from music.data import TaskData
from music.evaluation import allowed_classes

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger


def run_device(cfg: DictConfig) -> torch.device:
    """Where the run's data lives and its models are evaluated: the GPU the Trainer trains on (trainer.accelerator auto,
    gpu or cuda with one visible; the gpu_pool launcher makes its claimed GPU the only visible one), else the CPU."""
    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return torch.device("cuda") if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def stage_seed(seed: int, stage: str) -> int:
    """A seed per (run seed, stage): a stage trains the same whether or not earlier stages came from the cache."""
    return int(hashlib.sha256(f"{seed}/{stage}".encode()).hexdigest()[:8], 16)


@dataclass
class Context:
    cfg: DictConfig
    data: TaskData
    loggers: list["Logger"] = field(default_factory=list)
    # wall times in seconds, kept out of metrics.json (which must be identical across same-seed runs)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        cfg, data = self.cfg, self.data
        self.tasks: list[list[int]] = [list(t) for t in cfg.tasks]
        self.split = data.split
        self.head = cfg.model.get("head", "shared")
        self.num_classes = data.spec.classes
        self.allowed = allowed_classes(self.tasks, self.head, self.num_classes)
        self.device = run_device(cfg)
        data.to(self.device)  # once for the run: training batches, evaluations and λ searches read the images there
        val = self.split.val.to(self.device)
        test = torch.arange(len(data.test_labels), device=self.device)
        # tasks that are datasets (music.data.composite): judged on the tasks' classes alone, not on θ0's own dataset
        # (data.pretrain.data) nor on the classes a subset task leaves out
        if data.plan.pretrain_classes is not None or "tasks_given" in cfg:
            tasks_classes = torch.as_tensor(self.split.task_classes, device=self.device)
            val = val[torch.isin(data.train_labels[val], tasks_classes)]
            test = test[torch.isin(data.test_labels, tasks_classes)]
        # read lazily, batch by batch (music.data.store.Rows): an evaluation set need not fit in memory
        self.eval_sets = {
            "val": (data.train_rows(val), data.train_labels[val].cpu()),
            "test": (data.test_rows(test), data.test_labels[test].cpu()),
        }

    def seeded(self, purpose: str) -> torch.Generator:
        """A CPU generator seeded by the run's seed and `purpose`: the same draw whatever ran before it."""
        return torch.Generator().manual_seed(stage_seed(self.cfg.seed, purpose))

    def unlabeled_images(self, task: list[int], count: int, purpose: str) -> torch.Tensor:
        """`count` of a task's training images drawn at random (seeded by run seed, purpose and task): what
        alignment and merge statistics see of a task — images, never labels."""
        pool = self.split.train_of(task)
        chosen = pool[
            torch.randperm(len(pool), generator=self.seeded(f"{purpose}/" + "_".join(map(str, task))))[:count]
        ]
        return self.data.images(chosen).cpu()  # on the CPU, where statistics and alignment compute

    def task_val_images(self) -> list[torch.Tensor]:
        """Each task's held-out validation images (alignment's KL and AdaMerging read them; never their labels)."""
        return [self.data.train_rows(self.split.task_val(i)).materialize() for i in range(len(self.tasks))]

    def task_masks(self) -> list[torch.Tensor]:
        """Per task, the classes its images are scored over (every class of a task shares its row: known from the
        task id)."""
        return [self.allowed[task[0]] for task in self.tasks]

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key=key, columns=columns, data=rows)
