import pytest
import torch

from music.merging import TaskVector, kernels, stack

THETA0 = {"w": torch.tensor([1.0, 2.0, 3.0]), "head.b": torch.tensor([0.5])}
THETA_A = {"w": torch.tensor([2.0, 2.0, 1.0]), "head.b": torch.tensor([1.5])}
THETA_B = {"w": torch.tensor([1.0, 4.0, 3.0]), "head.b": torch.tensor([0.0])}


def test_task_vectors_and_their_arithmetic_match_hand_computed_values():
    tau_a, tau_b = TaskVector.between(THETA0, THETA_A), TaskVector.between(THETA0, THETA_B)
    assert torch.equal(tau_a.deltas["w"], torch.tensor([1.0, 0.0, -2.0]))
    assert torch.equal((tau_a + tau_b).deltas["w"], torch.tensor([1.0, 2.0, -2.0]))
    assert torch.equal((tau_a - tau_b).deltas["head.b"], torch.tensor([1.5]))
    assert torch.equal((-tau_b).deltas["w"], torch.tensor([0.0, -2.0, 0.0]))
    assert torch.equal(sum([tau_a, tau_b]).deltas["head.b"], torch.tensor([0.5]))
    # θ0 + 0.5·(τ_a + τ_b) = [1.5, 3.0, 2.0] and 0.5 + 0.5·(1.0 − 0.5) = 0.75
    merged = tau_a.unflatten(kernels.task_arithmetic(stack([tau_a, tau_b]))).apply_to(THETA0, 0.5)
    assert torch.equal(merged["w"], torch.tensor([1.5, 3.0, 2.0]))
    assert torch.equal(merged["head.b"], torch.tensor([0.75]))
    # λ = 1 with one vector gives back the fine-tuned model; negation moves the other way
    assert torch.equal(tau_a.apply_to(THETA0)["w"], THETA_A["w"])
    assert torch.equal(tau_a.apply_to(THETA0, -1.0)["w"], torch.tensor([0.0, 2.0, 5.0]))


def test_excluded_head_is_left_as_theta0():
    tau = TaskVector.between(THETA0, THETA_A, exclude=("head.",))
    assert set(tau.deltas) == {"w"}
    assert torch.equal(tau.apply_to(THETA0)["head.b"], THETA0["head.b"])


def test_mismatched_parameter_names_are_rejected():
    with pytest.raises(KeyError, match="missing"):
        TaskVector.between(THETA0, {"w": THETA_A["w"]})
    with pytest.raises(KeyError, match="differ"):
        TaskVector.between(THETA0, THETA_A) + TaskVector({"w": torch.zeros(3)})
    with pytest.raises(KeyError, match="lacks"):
        TaskVector({"other": torch.zeros(1)}).apply_to(THETA0)
