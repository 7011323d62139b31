"""Accuracy figures derived from one confusion matrix, and continual-learning summaries of an accuracy matrix.

Everything is a pure function of tensors: overall, per-class, per-task and seen/unseen accuracy all come
from the same confusion matrix (rows: true class, columns: predicted class).
"""

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_confusion_matrix


def _ratio(correct: torch.Tensor, total: torch.Tensor) -> float | None:
    return None if int(total) == 0 else float(correct) / float(total)


def accuracy_metrics(confusion: torch.Tensor, tasks: list[list[int]]) -> dict[str, float | None]:
    """acc, acc_class_<c>, acc_task_<i>, acc_seen, acc_unseen; None where there is no sample (or no unseen class)."""
    correct, total = confusion.diagonal(), confusion.sum(dim=1)
    num_classes = len(total)

    def over(classes) -> float | None:
        idx = torch.as_tensor(sorted(classes), dtype=torch.long)
        return _ratio(correct[idx].sum(), total[idx].sum()) if len(idx) else None

    seen = {c for task in tasks for c in task}
    metrics = {"acc": _ratio(correct.sum(), total.sum())}
    metrics |= {f"acc_class_{c}": _ratio(correct[c], total[c]) for c in range(num_classes)}
    metrics |= {f"acc_task_{i}": over(task) for i, task in enumerate(tasks)}
    metrics["acc_seen"] = over(seen)
    metrics["acc_unseen"] = over(set(range(num_classes)) - seen)
    return metrics


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Predicted classes of `images` in one batched pass on the network's device (eval mode)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    preds = torch.cat([net(chunk.to(device)).argmax(dim=1).cpu() for chunk in images.split(batch_size)])
    net.train(was_training)
    return preds


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    return multiclass_confusion_matrix(preds, labels, num_classes)


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
