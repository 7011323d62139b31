import pytest
import torch

from music.evaluation import (
    accuracy_metrics,
    allowed_classes,
    backward_transfer,
    confusion_matrix,
    dense_stem,
    forgetting,
    predict,
    predict_along,
)
from music.merging import TaskVector
from music.models.networks import CNN, MLP


def test_accuracies_from_a_confusion_matrix():
    # 3 classes; rows = true class. class 0: 3/4 right, class 1: 1/2, class 2: 0/0 (no sample)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    preds = torch.tensor([0, 0, 0, 1, 1, 2])
    confusion = confusion_matrix(preds, labels, num_classes=3)
    assert confusion.tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 0]]
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


@pytest.mark.parametrize("excluded", [(), ("head.",), ("features.1.",)])
def test_predictions_along_a_lambda_path_equal_each_models_own(excluded):
    """predict_along shares the dense first layer across λ; it must give what predicting with each θ0 + λ·τ gives,
    whichever parameters τ leaves out (the head; the first layer itself), under per-task masks, over several chunks."""
    torch.manual_seed(0)
    net = MLP(10, [1, 28, 28], hidden=[32, 16])
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}
    tau = TaskVector({k: torch.randn_like(v) * 0.3 for k, v in theta0.items() if not k.startswith(excluded)})
    images, labels = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    allowed = allowed_classes([[0, 1], [2, 3, 4]], "per_task", num_classes=10)[labels]
    lambdas = [0.5, 0.0, 1.0, 3.0]

    def net_at(lam):
        model = MLP(10, [1, 28, 28], hidden=[32, 16])
        model.load_state_dict(tau.apply_to(theta0, lam))
        return model

    expected = [predict(net_at(lam), images, 128, allowed) for lam in lambdas]
    got = predict_along(net_at(0.0), [net_at(lam) for lam in lambdas], lambdas, tau.deltas, images, 128, allowed)
    assert all(torch.equal(e, g) for e, g in zip(expected, got))
    assert len({tuple(p.tolist()) for p in got}) > 1  # the models differ: the check compares distinct predictions
    assert all(((p >= 2) == (labels >= 2))[labels <= 4].all() for p in got)  # each sample scored within its task


def test_dense_stem_finds_a_leading_linear_layer_only():
    assert dense_stem(MLP(10, [1, 28, 28], hidden=[8])) == 1  # after Flatten
    assert dense_stem(CNN(10, [1, 28, 28], channels=[4], hidden=8)) is None  # opens with a convolution
    normalized = MLP(10, [1, 28, 28], hidden=[8])
    normalized.features.insert(1, torch.nn.BatchNorm1d(784, affine=False))  # no parameters, but running statistics
    assert dense_stem(normalized) is None
