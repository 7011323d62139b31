from music.evaluation.metrics import (
    HEADS,
    accuracy_metrics,
    allowed_classes,
    backward_transfer,
    confusion_matrix,
    forgetting,
    predict,
    restrict,
)

__all__ = ["HEADS", "accuracy_metrics", "allowed_classes", "backward_transfer", "confusion_matrix", "forgetting", "predict", "restrict"]
