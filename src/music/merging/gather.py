"""Step 1 of a merge: gather once what the method reads — θ0, the task vectors τ_i = θ_i − θ0 (of the per-task
fine-tunes, or of the sequential stages for MagMax), and the per-task statistics its table entry names."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call

from music.align.kernels import MASKED
from music.evaluation.metrics import restrict
from music.experiment import Run
from music.merging.methods import Method
from music.merging.task_vector import TaskVector
from music.models.statistics import diagonal_fisher, linear_input_grams

HEAD = "head."
State = dict[str, torch.Tensor]


def task_vectors(
    run: Run, tasks: list[list[int]], keys: list[str], include_head: bool = True, states: list[State] | None = None
) -> tuple[State, list[TaskVector]]:
    """θ0 and τ_i = θ_i − θ0 over `keys` for the per-task fine-tunes of `tasks`, or for given `states` (MagMax:
    sequential stages)."""
    theta0 = run.artifacts.theta0
    exclude = () if include_head else (HEAD,)
    states = states if states is not None else [run.artifacts.finetuned(task) for task in tasks]
    return theta0, [TaskVector.between(theta0, state, exclude, keys) for state in states]


def method_vectors(run: Run, method: Method, keys: list[str], include_head: bool) -> tuple[State, list[TaskVector]]:
    """The task vectors `method` merges: the per-task fine-tunes', or (MagMax) the sequential stages' θ_t − θ0 under
    the configured continual method, read from the cache like any other artifact."""
    artifacts = run.artifacts
    stages = artifacts.sequential_states(artifacts.continual_method()) if method.vectors == "sequential" else None
    return task_vectors(run, run.ctx.tasks, keys, include_head, stages)


@dataclass(frozen=True)
class EntropyData:
    """What AdaMerging reads: θ0, the network's logits as a function of (parameters, images, task index), and each
    task's unlabeled images."""

    theta0: State
    logits: Callable[[State, torch.Tensor, int], torch.Tensor]
    images: list[torch.Tensor]


def _samples(run: Run, purpose: str) -> list[torch.Tensor]:
    return [run.ctx.unlabeled_images(task, run.ctx.cfg.merge.num_samples, purpose) for task in run.ctx.tasks]


def fisher(run: Run, theta0: State, vectors: list[TaskVector], purpose: str) -> torch.Tensor:
    """Each fine-tune's diagonal Fisher on merge.num_samples unlabeled images of its task (T×P)."""
    names, generator = list(vectors[0].deltas), run.ctx.seeded("fisher")
    nets = [run.artifacts.load_net(run.artifacts.finetuned(task)) for task in run.ctx.tasks]
    return torch.stack([diagonal_fisher(net, x, names, generator) for net, x in zip(nets, _samples(run, purpose))])


def grams(run: Run, theta0: State, vectors: list[TaskVector], purpose: str) -> list:
    """Each fine-tune's linear layers' input Gram matrices on merge.num_samples unlabeled images of its task."""
    nets = [run.artifacts.load_net(run.artifacts.finetuned(task)) for task in run.ctx.tasks]
    return [linear_input_grams(net, x) for net, x in zip(nets, _samples(run, purpose))]


def entropy(run: Run, theta0: State, vectors: list[TaskVector], purpose: str) -> EntropyData:
    """Each task's validation images (their labels never read: AdaMerging's unlabeled data) and the logits of the
    network at given parameters, scored over the task's classes (per-task heads: the task id says which)."""
    net, masks = run.artifacts.load_net(theta0).eval(), run.ctx.task_masks()

    def logits(params, x, k):
        return restrict(functional_call(net, params, (x,)), masks[k].expand(len(x), -1), fill=MASKED)

    return EntropyData(theta0, logits, run.ctx.task_val_images())


# the statistics a method's table entry names (Method.statistics): estimated per task before merging
STATISTICS: dict[str, Callable] = {"fisher": fisher, "grams": grams, "entropy": entropy}


def statistics(run: Run, method: Method, theta0: State, vectors: list[TaskVector], name: str):
    return None if method.statistics is None else STATISTICS[method.statistics](run, theta0, vectors, name)
