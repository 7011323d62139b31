"""Strategies that train: θ0 itself, one fine-tune on the union of tasks, task after task, and one per task."""

import torch
from omegaconf import OmegaConf

from music.config import instantiate_checked
from music.continual import ContinualMethod
from music.evaluation import backward_transfer, forgetting
from music.experiment import Experiment, stage_seed
from music.models.optimizer_state import split as split_optimizer_state


def pretrain(exp: Experiment) -> dict:
    """θ0 on the pretrain split."""
    return exp.metrics(exp.theta0_predictions)


def merged(exp: Experiment) -> dict:
    """θ0 fine-tuned once on the union of all tasks' training data (cached)."""
    data = {"classes": exp.split.task_classes} | (
        {"tasks": sorted(sorted(t) for t in exp.tasks)} if exp.head == "per_task" else {}
    )
    state = exp.trained("merged", data, exp.theta0, exp.split.union_train, "merged")
    return exp.evaluate(exp.model(state))


def continual_method(exp: Experiment) -> ContinualMethod | None:
    """The configured continual-learning method (`continual=<name>`), or None for plain fine-tuning."""
    node = exp.cfg.get("continual")
    return instantiate_checked("continual", node) if node and "_target_" in node else None


def sequential_states(exp: Experiment, method: ContinualMethod | None) -> list[dict[str, torch.Tensor]]:
    """θ_1 … θ_T: θ0 fine-tuned on task 1, then 2, … in config order, under the continual method's hooks.

    Each stage is cached under the ordered tasks so far (and the method), so a longer sequence reuses its prefix; a
    cached stage still runs the method's begin_stage and end_stage, which rebuild its state. Each stage's optimizer
    starts fresh (finetune.optimizer_state=fresh, as Mammoth) or from the previous stage's state (carry, as
    Avalanche); with carry a stage's cache entry keeps its optimizer's state too."""
    state, states = exp.theta0, []
    continual = {"continual": OmegaConf.to_container(exp.cfg.continual, resolve=True)} if method else {}
    carry = exp.cfg.finetune.optimizer_state == "carry"
    optimizer = {} if carry else None  # the state the next stage's optimizer starts from
    for i in range(len(exp.tasks)):
        prefix = (
            {"tasks": [sorted(t) for t in exp.tasks[: i + 1]]}
            | continual
            | ({"optimizer_state": "carry"} if carry else {})
        )
        if method:
            method.begin_stage(i, exp.model(state).to(exp.device))
        state = exp.trained(
            "sequential",
            prefix,
            state,
            exp.split.task_train(i),
            f"sequential/stage_{i}",
            continual=method,
            optimizer_state=optimizer,
        )
        if carry:
            state, optimizer = split_optimizer_state(state)
        if method:
            seen = exp.split.task_train(i)
            generator = torch.Generator().manual_seed(stage_seed(exp.cfg.seed, f"continual/stage_{i}"))
            method.end_stage(
                i, exp.model(state).to(exp.device), exp.data.train_images[seen], exp.data.train_labels[seen], generator
            )
        states.append(state)
    return states


def sequential(exp: Experiment) -> dict:
    """θ0 → task 1 → task 2 → … in config order (with `continual=<method>`: under its hooks); after every stage,
    test accuracy on every task."""
    method = continual_method(exp)
    n, matrix = len(exp.tasks), []
    for state in sequential_states(exp, method):
        metrics = exp.evaluate(exp.model(state))
        matrix.append([metrics[f"test/acc_task_{j}"] for j in range(n)])
    exp.log_table("sequential/acc_matrix", [f"task_{j}" for j in range(n)], matrix)
    kept = {
        "continual/method": type(method).__name__ if method else "none",
        "continual/memory": method.memory if method else "nothing",
        "continual/kept": method.kept() if method else 0,
    }
    return (
        metrics
        | kept
        | {
            "acc_matrix": matrix,
            "average_acc": sum(matrix[-1]) / n,
            "forgetting": forgetting(matrix),
            "bwt": backward_transfer(matrix),
        }
    )


def individual(exp: Experiment) -> dict:
    """One fine-tune per task (the task vectors' source), each judged on its own task's images.

    Contract metrics route every image of a task's classes to that task's fine-tuned model and every other
    image to θ0 (the usual "individual" upper bound of merging papers); `individual_acc_matrix[i][j]` is
    θ_i's test accuracy on task j.
    """
    per_task = [exp.predictions(exp.model(exp.finetuned(task))) for task in exp.tasks]
    matrix = [[exp.metrics(preds)[f"test/acc_task_{j}"] for j in range(len(exp.tasks))] for preds in per_task]
    exp.log_table("individual/acc_matrix", [f"task_{j}" for j in range(len(exp.tasks))], matrix)
    return exp.metrics(exp.routed(exp.theta0_predictions, per_task)) | {"individual_acc_matrix": matrix}
