"""Evaluation: one batched pass per split over the resident held-out tensors, predictions routed by task id, and
predictions turned into the `<split>/acc…` figures of metrics.json."""

from functools import cached_property

import torch
from torch import nn

from music.evaluation import accuracy_metrics, confusion_matrix, predict
from music.experiment.artifacts import Artifacts
from music.experiment.context import Context

Predictions = dict[str, torch.Tensor]  # split ("val", "test") -> predicted class per image


class Evaluation:
    def __init__(self, ctx: Context, artifacts: Artifacts):
        self.ctx, self.artifacts = ctx, artifacts

    def predictions(self, net: nn.Module) -> Predictions:
        net.to(self.ctx.device)
        batch, allowed = self.ctx.cfg.data.eval_batch_size, self.ctx.allowed
        return {
            split: predict(net, images, batch, allowed[labels])
            for split, (images, labels) in self.ctx.eval_sets.items()
        }

    @cached_property
    def theta0_predictions(self) -> Predictions:
        """θ0's predictions, once per run: the pretrain strategy's, `individual`'s fallback, every run's θ0 figures."""
        return self.predictions(self.artifacts.load_net(self.artifacts.theta0))

    def routed(self, default: Predictions, per_task: list[Predictions]) -> Predictions:
        """Each image of a task's classes as that task's predictions say (its task id known at test), every other
        image as `default` says."""
        out = {split: preds.clone() for split, preds in default.items()}
        for task, preds in zip(self.ctx.tasks, per_task):
            for split, (_, labels) in self.ctx.eval_sets.items():
                mine = torch.isin(labels, torch.tensor(task))
                out[split][mine] = preds[split][mine]
        return out

    def metrics(self, preds: Predictions, tasks: list[list[int]] | None = None) -> dict[str, float | None]:
        """`<split>/acc…` figures of predictions, per task of `tasks` (default: the configured tasks)."""
        out = {}
        for split, (_, labels) in self.ctx.eval_sets.items():
            confusion = confusion_matrix(preds[split], labels, self.ctx.num_classes)
            out |= {f"{split}/{k}": v for k, v in accuracy_metrics(confusion, tasks or self.ctx.tasks).items()}
        return out

    def evaluate(self, net: nn.Module) -> dict[str, float | None]:
        return self.metrics(self.predictions(net))
