"""Strategies that train: θ0 itself, one fine-tune on the union of tasks, task after task, and one per task."""

from music.evaluation import backward_transfer, forgetting
from music.experiment import Experiment


def pretrain(exp: Experiment) -> dict:
    """θ0 on the pretrain split."""
    return exp.evaluate(exp.load_net(exp.theta0))


def merged(exp: Experiment) -> dict:
    """θ0 fine-tuned once on the union of all tasks' training data (cached)."""
    data = {"classes": exp.split.task_classes} | ({"tasks": sorted(sorted(t) for t in exp.tasks)} if exp.head == "per_task" else {})
    state = exp.trained("merged", data, exp.theta0, exp.split.union_train, "merged")
    return exp.evaluate(exp.model(state))


def sequential(exp: Experiment) -> dict:
    """θ0 → task 1 → task 2 → … in config order; after every stage, test accuracy on every task.

    Each stage is cached under the ordered tasks so far, so a longer sequence reuses its prefix."""
    state, n, matrix = exp.theta0, len(exp.tasks), []
    for i in range(n):
        prefix = {"tasks": [sorted(t) for t in exp.tasks[: i + 1]]}
        state = exp.trained("sequential", prefix, state, exp.split.task_train(i), f"sequential/stage_{i}")
        metrics = exp.evaluate(exp.model(state))
        matrix.append([metrics[f"test/acc_task_{j}"] for j in range(n)])
    exp.log_table("sequential/acc_matrix", [f"task_{j}" for j in range(n)], matrix)
    return metrics | {"acc_matrix": matrix, "forgetting": forgetting(matrix), "bwt": backward_transfer(matrix)}


def individual(exp: Experiment) -> dict:
    """One fine-tune per task (the task vectors' source), each judged on its own task's images.

    Contract metrics route every image of a task's classes to that task's fine-tuned model and every other
    image to θ0 (the usual "individual" upper bound of merging papers); `individual_acc_matrix[i][j]` is
    θ_i's test accuracy on task j.
    """
    per_task = [exp.predictions(exp.model(exp.finetuned(task))) for task in exp.tasks]
    matrix = [[exp.metrics(preds)[f"test/acc_task_{j}"] for j in range(len(exp.tasks))] for preds in per_task]
    exp.log_table("individual/acc_matrix", [f"task_{j}" for j in range(len(exp.tasks))], matrix)
    return exp.metrics(exp.routed(exp.predictions(exp.load_net(exp.theta0)), per_task)) | {"individual_acc_matrix": matrix}
