"""What a strategy works with, in four parts it receives explicitly (`Run`): the run's context (config, data, device,
seeded draws), training (Lightning's Trainer for one stage), the cached artifacts (θ0, fine-tunes, sequential
stages) and evaluation (predictions and their figures)."""

from dataclasses import dataclass

from omegaconf import DictConfig

from music.cache import ArtifactCache
from music.data import TaskData
from music.experiment.artifacts import Artifacts
from music.experiment.context import Context, stage_seed
from music.experiment.evaluation import Evaluation, Predictions
from music.experiment.training import Training


@dataclass(frozen=True)
class Run:
    ctx: Context
    training: Training
    artifacts: Artifacts
    evaluation: Evaluation

    @classmethod
    def open(cls, cfg: DictConfig, data: TaskData, cache: ArtifactCache, loggers: list) -> "Run":
        ctx = Context(cfg, data, loggers)
        training = Training(ctx)
        artifacts = Artifacts(ctx, training, cache)
        return cls(ctx, training, artifacts, Evaluation(ctx, artifacts))


__all__ = ["Artifacts", "Context", "Evaluation", "Predictions", "Run", "Training", "stage_seed"]
