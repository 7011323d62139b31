import pytest
import torch

from music.evaluation import accuracy_metrics, backward_transfer, confusion_matrix, forgetting


def test_accuracies_from_a_confusion_matrix():
    # 3 classes; rows = true class. class 0: 3/4 right, class 1: 1/2, class 2: 0/0 (no sample)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    preds = torch.tensor([0, 0, 0, 1, 1, 0])
    confusion = confusion_matrix(preds, labels, num_classes=3)
    assert confusion.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 0]]
    m = accuracy_metrics(confusion, tasks=[[1], [0, 2]])
    assert m["acc"] == pytest.approx(4 / 6)
    assert (m["acc_class_0"], m["acc_class_1"], m["acc_class_2"]) == (0.75, 0.5, None)
    assert m["acc_task_0"] == 0.5 and m["acc_task_1"] == 0.75
    assert m["acc_seen"] == pytest.approx(4 / 6) and m["acc_unseen"] is None
    # per-task accuracy is sample-weighted over the task's classes, not a mean of class accuracies
    assert accuracy_metrics(confusion, [[0, 1]])["acc_task_0"] == pytest.approx(4 / 6)
    assert accuracy_metrics(confusion, [[1]])["acc_unseen"] == 0.75


def test_forgetting_and_backward_transfer_by_hand():
    matrix = [
        [0.9, 0.1, 0.0],
        [0.6, 0.8, 0.1],
        [0.5, 0.7, 0.9],
    ]
    # forgetting: task 0: max(0.9, 0.6) − 0.5 = 0.4; task 1: 0.8 − 0.7 = 0.1 -> mean 0.25
    assert forgetting(matrix) == pytest.approx(0.25)
    # bwt: (0.5 − 0.9 + 0.7 − 0.8) / 2 = −0.25
    assert backward_transfer(matrix) == pytest.approx(-0.25)
    assert forgetting([[0.7]]) is None and backward_transfer([[0.7]]) is None
