from music.evaluation.metrics import (
    HEADS,
    accuracy_metrics,
    allowed_classes,
    backward_transfer,
    confusion_matrix,
    dense_stem,
    forgetting,
    predict,
    predict_along,
    predict_task_il,
    restrict,
    task_il_metrics,
)

__all__ = [
    "HEADS",
    "accuracy_metrics",
    "allowed_classes",
    "backward_transfer",
    "confusion_matrix",
    "dense_stem",
    "forgetting",
    "predict",
    "predict_along",
    "predict_task_il",
    "restrict",
    "task_il_metrics",
]
