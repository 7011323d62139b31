from music.evaluation.metrics import (
    HEADS,
    accuracy_metrics,
    allowed_classes,
    backward_transfer,
    confusion_matrix,
    forgetting,
    dense_stem,
    predict,
    predict_along,
    restrict,
)

__all__ = ["HEADS", "accuracy_metrics", "allowed_classes", "backward_transfer", "confusion_matrix", "forgetting", "dense_stem", "predict", "predict_along", "restrict"]
