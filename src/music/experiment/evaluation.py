"""Evaluation: one batched pass per split over the resident held-out tensors, predictions routed by task id, and
predictions turned into the `<split>/acc…` figures of metrics.json."""

from functools import cached_property

import torch
from torch import nn

from music.evaluation import (
    accuracy_metrics,
    allowed_classes,
    confusion_matrix,
    predict,
    predict_task_il,
    task_il_metrics,
)
from music.experiment.artifacts import Artifacts
from music.experiment.context import Context

Predictions = dict[str, torch.Tensor]  # split ("val", "test") -> predicted class per image
TASK_IL = "test_task_il"  # beside the splits: the test images' classes over their own task's classes only


class Evaluation:
    def __init__(self, ctx: Context, artifacts: Artifacts):
        self.ctx, self.artifacts = ctx, artifacts

    def predictions(self, net: nn.Module) -> Predictions:
        net.to(self.ctx.device)
        batch, allowed = self.ctx.cfg.data.eval_batch_size, self.ctx.allowed
        preds = {
            split: predict(net, images, batch, allowed[labels])
            for split, (images, labels) in self.ctx.eval_sets.items()
            if split != "test" or self.ctx.head != "shared"
        }
        if self.ctx.head == "shared":  # class-IL, and task-IL from the same logits (per_task heads are task-IL)
            images, labels = self.ctx.eval_sets["test"]
            own = allowed_classes(self.ctx.tasks, "per_task", self.ctx.num_classes)[labels]
            preds["test"], preds[TASK_IL] = predict_task_il(net, images, batch, allowed[labels], own)
        return {split: preds[split] for split in (*self.ctx.eval_sets, TASK_IL) if split in preds}

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
            if TASK_IL in out:  # routed too, or dropped when a model has none (θ0's would stand in for it)
                if TASK_IL not in preds:
                    del out[TASK_IL]
                    continue
                mine = torch.isin(self.ctx.eval_sets["test"][1], torch.tensor(task))
                out[TASK_IL][mine] = preds[TASK_IL][mine]
        return out

    def metrics(self, preds: Predictions, tasks: list[list[int]] | None = None) -> dict[str, float | None]:
        """`<split>/acc…` figures of predictions, per task of `tasks` (default: the configured tasks)."""
        out = {}
        for split, (_, labels) in self.ctx.eval_sets.items():
            confusion = confusion_matrix(preds[split], labels, self.ctx.num_classes)
            out |= {f"{split}/{k}": v for k, v in accuracy_metrics(confusion, tasks or self.ctx.tasks).items()}
        if TASK_IL in preds:
            confusion = confusion_matrix(preds[TASK_IL], self.ctx.eval_sets["test"][1], self.ctx.num_classes)
            out |= {f"test/{k}": v for k, v in task_il_metrics(confusion, tasks or self.ctx.tasks).items()}
        return out

    def evaluate(self, net: nn.Module) -> dict[str, float | None]:
        return self.metrics(self.predictions(net))
