"""Accuracy figures derived from one confusion matrix, and continual-learning summaries of an accuracy matrix.

Everything is a pure function of tensors: overall, per-class, per-task and seen/unseen accuracy all come
from the same confusion matrix (rows: true class, columns: predicted class).
"""

import itertools

import torch
import torch.nn.functional as F
from torch import nn


def _ratio(correct: torch.Tensor, total: torch.Tensor) -> float | None:
    return None if int(total) == 0 else float(correct) / float(total)


def accuracy_metrics(confusion: torch.Tensor, tasks: list[list[int]]) -> dict[str, float | None]:
    """acc, acc_class_<c>, acc_task_<i>, acc_task_mean, acc_seen, acc_unseen; None where there is no sample (or no
    unseen class)."""
    correct, total = confusion.diagonal(), confusion.sum(dim=1)
    num_classes = len(total)

    def over(classes) -> float | None:
        idx = torch.as_tensor(sorted(classes), dtype=torch.long)
        return _ratio(correct[idx].sum(), total[idx].sum()) if len(idx) else None

    seen = {c for task in tasks for c in task}
    metrics = {"acc": _ratio(correct.sum(), total.sum())}
    metrics |= {f"acc_class_{c}": _ratio(correct[c], total[c]) for c in range(num_classes)}
    per_task = [over(task) for task in tasks]
    metrics |= {f"acc_task_{i}": acc for i, acc in enumerate(per_task)}
    # the merging literature's figure: each task's accuracy weighs the same, whatever its test set's size
    metrics["acc_task_mean"] = None if None in per_task or not per_task else sum(per_task) / len(per_task)
    metrics["acc_seen"] = over(seen)
    metrics["acc_unseen"] = over(set(range(num_classes)) - seen)
    return metrics


HEADS = ("shared", "per_task")


def allowed_classes(tasks: list[list[int]], head: str, num_classes: int) -> torch.Tensor:
    """The head protocol as a num_classes×num_classes mask: row c = the classes a sample of class c is scored over.

    shared: every class (class-incremental, one head over all classes). per_task: the classes of c's own task (the task id
    is known; each task's rows of the head act as its own head); a class in no task is scored over every class.
    """
    allowed = torch.ones(num_classes, num_classes, dtype=torch.bool)
    if head == "per_task":
        for task in tasks:
            for c in task:
                allowed[c] = False
                allowed[c, task] = True
    return allowed


def restrict(logits: torch.Tensor, allowed: torch.Tensor | None, fill: float = float("-inf")) -> torch.Tensor:
    """Logits with the classes a sample may not be scored over set to `fill` (allowed: one mask row per sample)."""
    return logits if allowed is None else logits.masked_fill(~allowed.to(logits.device), fill)


@torch.no_grad()
def predict(
    net: nn.Module, images: torch.Tensor, batch_size: int = 4096, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Predicted classes of `images` in one batched pass on the network's device (eval mode), each image scored
    over the classes its row of `allowed` permits (all classes when None)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    masks = allowed.split(batch_size) if allowed is not None else itertools.repeat(None)
    preds = torch.cat(
        [
            restrict(net(chunk.to(device)), None if m is None else m.to(device)).argmax(dim=1).cpu()
            for chunk, m in zip(images.split(batch_size), masks)
        ]
    )
    net.train(was_training)
    return preds


@torch.no_grad()
def predict_task_il(
    net: nn.Module, images: torch.Tensor, batch_size: int, allowed: torch.Tensor, own_task: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict`'s classes (each image over its `allowed` row) and, from the same logits, each image's class over
    its `own_task` row only (task-IL: its task id known at test, Mammoth's mask_classes), in one pass."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    class_il, task_il = [], []
    for chunk, a, t in zip(images.split(batch_size), allowed.split(batch_size), own_task.split(batch_size)):
        logits = net(chunk.to(device))
        class_il.append(restrict(logits, a.to(device)).argmax(dim=1).cpu())
        task_il.append(restrict(logits, t.to(device)).argmax(dim=1).cpu())
    net.train(was_training)
    return torch.cat(class_il), torch.cat(task_il)


def task_il_metrics(confusion: torch.Tensor, tasks: list[list[int]]) -> dict[str, float | None]:
    """`acc_task_il` (over the images of the tasks' classes) and `acc_task_il_<i>` from task-IL predictions'
    confusion matrix."""
    figures = accuracy_metrics(confusion, tasks)
    return {"acc_task_il": figures["acc_seen"]} | {
        f"acc_task_il_{i}": figures[f"acc_task_{i}"] for i in range(len(tasks))
    }


def dense_stem(net: nn.Module) -> int | None:
    """Position in `net.features` of its first module with parameters when that is an nn.Linear preceded only by
    modules without parameters or buffers (Flatten): a dense first layer, whose output is linear in its parameters.
    None otherwise."""
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential):
        for i, module in enumerate(features):
            if next(module.parameters(), None) is not None:
                return i if type(module) is nn.Linear else None
            if next(module.buffers(), None) is not None:
                return None
    return None


@torch.no_grad()
def predict_along(
    base: nn.Module,
    nets: list[nn.Module],
    lambdas: list[float],
    delta: dict[str, torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 4096,
    allowed: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """What `predict` gives for each of `nets`, the networks θ0 + λ·τ at `lambdas` (`base`: the network at θ0, with a
    dense_stem; τ = `delta`, keyed like their state dicts), sharing the work of the dense first layer: its output is
    affine in λ, h(λ) = (x·W0ᵀ + b0) + λ·(x·ΔWᵀ + Δb), so two matrix products serve the whole path instead of one
    per λ. On MNIST-sized images that layer is most of an MLP's compute. Equal to per-network predictions up to float
    rounding. All networks are left in eval mode."""
    position = dense_stem(base)
    stem = base.eval().features[position]
    device = stem.weight.device
    name = f"features.{position}."
    delta_w = delta.get(name + "weight", torch.zeros_like(stem.weight)).to(device)
    delta_b = None if stem.bias is None else delta.get(name + "bias", torch.zeros_like(stem.bias)).to(device)
    stems = []
    for chunk in images.split(batch_size):
        x = base.features[:position](chunk.to(device))
        stems.append((stem(x), F.linear(x, delta_w, delta_b)))
    masks = allowed.split(batch_size) if allowed is not None else [None] * len(stems)
    preds = []
    for net, lam in zip(nets, lambdas):
        rest = net.eval().features[position + 1 :]
        preds.append(
            torch.cat(
                [
                    restrict(net.head(rest(h + lam * dh)), None if m is None else m.to(device)).argmax(dim=1).cpu()
                    for (h, dh), m in zip(stems, masks)
                ]
            )
        )
    return preds


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: rows are true classes."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def forgetting(matrix: list[list[float]]) -> float | None:
    """Mean over earlier tasks of (best accuracy before the last stage − accuracy after the last stage)."""
    final = len(matrix) - 1
    if final < 1:
        return None
    drops = [max(matrix[stage][j] for stage in range(final)) - matrix[final][j] for j in range(final)]
    return sum(drops) / len(drops)


def backward_transfer(matrix: list[list[float]]) -> float | None:
    """Mean over earlier tasks of (accuracy after the last stage − accuracy right after learning the task)."""
    final = len(matrix) - 1
    if final < 1:
        return None
    return sum(matrix[final][j] - matrix[j][j] for j in range(final)) / final
