"""Strategies that train: θ0 itself, one fine-tune on the union of tasks, task after task, and one per task."""

from music.evaluation import backward_transfer, forgetting
from music.experiment import Run


def pretrain(run: Run) -> dict:
    """θ0 on the pretrain split."""
    return run.evaluation.metrics(run.evaluation.theta0_predictions)


def merged(run: Run) -> dict:
    """θ0 fine-tuned once on the union of all tasks' training data (cached)."""
    ctx, artifacts = run.ctx, run.artifacts
    tasks = {"tasks": sorted(sorted(t) for t in ctx.tasks)} if ctx.head == "per_task" else {}
    state = artifacts.trained(
        "merged", {"classes": ctx.split.task_classes} | tasks, artifacts.theta0, ctx.split.union_train, "merged"
    )
    return run.evaluation.evaluate(artifacts.model(state))


def sequential(run: Run) -> dict:
    """θ0 → task 1 → task 2 → … in config order (with `continual=<method>`: under its hooks); after every stage,
    test accuracy on every task."""
    ctx, artifacts = run.ctx, run.artifacts
    method = artifacts.continual_method()
    n, matrix, task_il = len(ctx.tasks), [], []
    for state in artifacts.sequential_states(method):
        metrics = run.evaluation.evaluate(artifacts.model(state, method))  # scored as it trained
        matrix.append([metrics[f"test/acc_task_{j}"] for j in range(n)])
        task_il.append([metrics.get(f"test/acc_task_il_{j}") for j in range(n)])
    ctx.log_table("sequential/acc_matrix", [f"task_{j}" for j in range(n)], matrix)
    kept = {
        "continual/method": type(method).__name__ if method else "none",
        "continual/memory": method.memory if method else "nothing",
        "continual/kept": method.kept() if method else 0,
    }
    summary = {"average_acc": sum(matrix[-1]) / n, "forgetting": forgetting(matrix), "bwt": backward_transfer(matrix)}
    if "test/acc_task_il" in metrics:  # a shared head: the same summaries of the task-IL accuracy matrix
        summary |= {"acc_matrix_task_il": task_il, "forgetting_task_il": forgetting(task_il)}
    return metrics | kept | {"acc_matrix": matrix} | summary


def individual(run: Run) -> dict:
    """One fine-tune per task (the task vectors' source), each judged on its own task's images.

    Contract metrics route every image of a task's classes to that task's fine-tuned model and every other
    image to θ0 (the usual "individual" upper bound of merging papers); `individual_acc_matrix[i][j]` is
    θ_i's test accuracy on task j.
    """
    ctx, evaluation = run.ctx, run.evaluation
    per_task = [evaluation.predictions(run.artifacts.model(run.artifacts.finetuned(task))) for task in ctx.tasks]
    matrix = [[evaluation.metrics(preds)[f"test/acc_task_{j}"] for j in range(len(ctx.tasks))] for preds in per_task]
    ctx.log_table("individual/acc_matrix", [f"task_{j}" for j in range(len(ctx.tasks))], matrix)
    return evaluation.metrics(evaluation.routed(evaluation.theta0_predictions, per_task)) | {
        "individual_acc_matrix": matrix
    }
