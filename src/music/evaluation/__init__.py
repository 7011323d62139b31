from music.evaluation.metrics import accuracy_metrics, backward_transfer, confusion_matrix, forgetting, predict

__all__ = ["accuracy_metrics", "backward_transfer", "confusion_matrix", "forgetting", "predict"]
