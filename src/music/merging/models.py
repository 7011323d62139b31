"""The models a merge makes: θ0 + λ·direction with BatchNorm's running statistics re-estimated (or merged and
clamped), and their predictions along a λ path — what the search evaluates and the strategy keeps."""

from functools import cached_property

import torch
from torch import nn

from music.evaluation import dense_stem, predict_along
from music.experiment import Predictions, Run
from music.merging.task_vector import TaskVector
from music.models.networks import batchnorm_layers, recompute_batchnorm

State = dict[str, torch.Tensor]


class MergedModels:
    def __init__(self, run: Run):
        self.run = run
        self.ctx, self.cfg = run.ctx, run.ctx.cfg

    @cached_property
    def merge_keys(self) -> list[str]:
        """What task vectors cover: the network's parameters and, under merge.batchnorm=merge, BatchNorm's running
        statistics; integer buffers (num_batches_tracked) never. What they do not cover stays θ0's."""
        net = self.run.artifacts.new_net()
        keys = [name for name, _ in net.named_parameters()]
        if self.cfg.merge.batchnorm == "merge":
            keys += [name for name, b in net.named_buffers() if b.is_floating_point()]
        return keys

    @cached_property
    def recomputes_batchnorm(self) -> bool:
        """Whether merged models get their BatchNorm statistics re-estimated (merge.batchnorm=recompute, a network with
        BatchNorm, not linearized): the merge then reads unlabeled task images."""
        linearized = self.cfg.finetune.get("linearized", False)
        has_batchnorm = bool(batchnorm_layers(self.run.artifacts.new_net()))
        return self.cfg.merge.batchnorm == "recompute" and has_batchnorm and not linearized

    def batchnorm_images_of(self, tasks: list[list[int]]) -> torch.Tensor:
        """The unlabeled images a merged model's BatchNorm statistics are re-estimated on: merge.num_samples training
        images of each of `tasks`, on the run's device."""
        count = self.cfg.merge.num_samples
        return torch.cat([self.ctx.unlabeled_images(task, count, "batchnorm") for task in tasks]).to(self.ctx.device)

    @cached_property
    def batchnorm_images(self) -> torch.Tensor:
        return self.batchnorm_images_of(self.ctx.tasks)

    def merged_model(self, state: State, theta0: State, images: torch.Tensor | None = None) -> nn.Module:
        """The model θ = `state` a merge made. Under merge.batchnorm=recompute its BatchNorm running statistics are
        re-estimated on unlabeled task images (`images`, default every task's: batchnorm_images), unless its parameters
        are θ0's (λ = 0 is θ0 exactly); a tangent model normalises with θ0's statistics by construction. Under
        merge.batchnorm=merge a running variance the merge drove below 0 is clamped to 0."""
        model = self.run.artifacts.model(state).to(self.ctx.device)
        if self.recomputes_batchnorm:
            if any(not torch.equal(state[name], theta0[name]) for name, _ in model.named_parameters()):
                batch = self.cfg.data.eval_batch_size
                recompute_batchnorm(model, self.batchnorm_images if images is None else images, batch)
        elif self.cfg.merge.batchnorm == "merge":
            for layer in batchnorm_layers(model):
                if layer.running_var is not None:  # None: a layer that tracks no statistics
                    layer.running_var.clamp_(min=0)
        return model

    def predictions_along(
        self, theta0: State, direction: TaskVector, lambdas: list[float], batchnorm_images: torch.Tensor | None = None
    ) -> list[Predictions]:
        """Predictions of the models θ0 + λ·direction for each λ: what a λ search evaluates (sharing the dense first
        layer's work across λ where the network has one; see predict_along)."""
        models = [self.merged_model(direction.apply_to(theta0, lam), theta0, batchnorm_images) for lam in lambdas]
        if dense_stem(models[0]) is None:  # e.g. a CNN, or a linearized network
            return [self.run.evaluation.predictions(model) for model in models]
        base, batch = self.run.artifacts.model(theta0).to(self.ctx.device), self.cfg.data.eval_batch_size
        along = {
            split: predict_along(base, models, lambdas, direction.deltas, images, batch, self.ctx.allowed[labels])
            for split, (images, labels) in self.ctx.eval_sets.items()
        }
        return [{split: preds[i] for split, preds in along.items()} for i in range(len(lambdas))]
