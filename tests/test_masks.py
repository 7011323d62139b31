"""Mask-based merge kernels against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from music.merging import masks

# three tasks over eight coordinates; Σ τ_t = [5, −1, 3, 0, −1, 1, 3, 4]
TAU = torch.tensor(
    [
        [3.0, 1.0, 0.0, 2.0, -1.0, 1.0, 1.0, 4.0],
        [1.0, 1.0, 2.0, -2.0, -1.0, 0.0, 1.0, -1.0],
        [1.0, -3.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
    ]
)


def test_tall_masks_by_hand_for_two_tasks():
    tau = torch.tensor([[1.0, 2.0, -1.0, 0.5], [1.0, -1.0, 2.0, 0.0]])
    # τ_MTL = [2, 1, 1, 0.5]; with two tasks |τ_MTL − τ_1| = |τ_2| and vice versa
    assert masks.tall_masks(tau, 0.5).tolist() == [[True, True, False, True], [True, False, True, False]]
    # per-task λ: task 2 needs |τ_2| > 1.5·|τ_1|, true only at coordinate 2 (2 > 1.5)
    assert masks.tall_masks(tau, [0.5, 1.5]).tolist() == [[True, True, False, True], [False, False, True, False]]
    # strict inequality as in the authors' code: coordinate 2 of task 1 has 1 = 0.5·2 and is dropped
    assert masks.tall_task_vectors(tau, 0.5).tolist() == [[2.0, 1.0, 0.0, 0.5], [2.0, 0.0, 1.0, 0.0]]


def test_tall_masks_by_hand_for_three_tasks():
    # m_t = |τ_t| > 0.4·|Σ_j τ_j − τ_t|
    # task 1: |τ_1| = [3,1,0,2,1,1,1,4] vs 0.4·[2,2,3,2,0,0,2,0]
    # task 2: |τ_2| = [1,1,2,2,1,0,1,1] vs 0.4·[4,2,1,2,0,1,2,5]
    # task 3: |τ_3| = [1,3,1,0,1,0,1,1] vs 0.4·[4,2,2,0,2,1,2,3]
    expected = [
        [True, True, False, True, True, True, True, True],
        [False, True, True, True, True, False, True, False],
        [False, True, True, False, True, False, True, False],
    ]
    assert masks.tall_masks(TAU, 0.4).tolist() == expected


def test_consensus_keeps_coordinates_enough_masks_agree_on():
    # mask counts per coordinate at λ = 0.4: [1, 3, 2, 2, 3, 1, 3, 1]
    assert masks.consensus(TAU, 0.4, k=3).tolist() == [0.0, -1.0, 0.0, 0.0, -1.0, 0.0, 3.0, 0.0]  # every mask
    assert masks.consensus(TAU, 0.4).tolist() == [0.0, -1.0, 3.0, 0.0, -1.0, 0.0, 3.0, 0.0]  # k = 2
    assert masks.consensus(TAU, 0.4, k=1).tolist() == [5.0, -1.0, 3.0, 0.0, -1.0, 1.0, 3.0, 4.0]
    assert masks.consensus(TAU, 0.4, k=4).tolist() == [0.0] * 8


def test_consensus_with_k_one_and_lambda_zero_is_task_arithmetic():
    tau = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    tau[:, :5] = 0  # coordinates no task moves: no mask keeps them, and their sum is 0 anyway
    assert torch.equal(masks.consensus(tau, 0.0, k=1), tau.sum(dim=0))


def test_consensus_applies_the_mask_to_a_given_multi_task_vector():
    other = torch.arange(8.0)
    # masks are built against `other`; m_t = |τ_t| > 10·|other − τ_t| holds only where other = τ_t ≠ 0
    tau = torch.tensor([[0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    assert masks.consensus(tau, 10.0, k=1, multi_task=other).tolist() == [0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert masks.consensus(tau, 10.0, k=2, multi_task=other).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


EMR_TAU = torch.tensor(
    [
        [4.0, -1.0, 0.5, 0.0],
        [-1.0, -3.0, 2.0, 0.1],
        [-2.0, 2.0, 1.0, -0.2],
    ]
)


def test_emr_elects_masks_and_rescales():
    unified, task_masks, rescalers = masks.emr(EMR_TAU)
    # Σ τ_t = [1, −2, 3.5, −0.1]: signs +, −, +, −; largest agreeing magnitudes 4, 3 (of 1, 3), 2, 0.2
    assert unified.tolist() == pytest.approx([4.0, -3.0, 2.0, -0.2])
    assert task_masks.tolist() == [[True, True, True, False], [False, True, True, False], [False, False, True, True]]
    # Σ|τ_t| / Σ|m_t ⊙ τ_uni|
    assert rescalers.tolist() == pytest.approx([5.5 / 9, 6.1 / 5, 5.2 / 2.2])
    vectors = masks.emr_task_vectors(EMR_TAU)
    assert vectors[0].tolist() == pytest.approx([4 * 5.5 / 9, -3 * 5.5 / 9, 2 * 5.5 / 9, 0.0])
    assert vectors[2].tolist() == pytest.approx([0.0, 0.0, 2 * 5.2 / 2.2, -0.2 * 5.2 / 2.2])


def test_emr_rescalers_sum_per_layer_means():
    # layers of sizes 1 and 3: r_t = (Σ_l mean_l |τ_t|) / (Σ_l mean_l |m_t ⊙ τ_uni|)
    _, _, rescalers = masks.emr(EMR_TAU, sizes=[1, 3])
    expected = [(4 + 1.5 / 3) / (4 + 5 / 3), (1 + 5.1 / 3) / (5 / 3), (2 + 3.2 / 3) / (2.2 / 3)]
    assert rescalers.tolist() == pytest.approx(expected)


def test_emr_breaks_a_zero_sum_to_the_negative_sign_as_the_authors_do():
    unified, task_masks, rescalers = masks.emr(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    assert unified.tolist() == [-1.0, 2.0]
    assert task_masks.tolist() == [[False, True], [True, False]]
    assert rescalers.tolist() == pytest.approx([3 / 2, 1.0])


def test_emr_of_one_task_is_that_task():
    tau = torch.tensor([[0.3, -1.2, 0.0, 2.5, -0.7]])
    unified, task_masks, rescalers = masks.emr(tau)
    assert torch.equal(unified, tau[0])
    assert task_masks.tolist() == [[True, True, False, True, True]]
    assert rescalers.tolist() == [1.0]
    assert torch.equal(masks.emr_task_vectors(tau), tau)


def test_pcb_by_hand():
    tau = [
        [0.8, -0.1, 0.4, 0.2, -0.5, 0.05, 0.3, -0.6],
        [0.2, 0.3, -0.4, 0.1, -0.2, 0.6, 0.05, 0.1],
    ]
    n, width = 2, 8
    # clip = 0.01 with P = 8: floor at sorted rank int(0.08) = 0 (the minimum, no change), ceiling at sorted
    # rank int(8·0.99 − 1) = 6, the second largest: 0.8 -> 0.6 in task 1, 0.6 -> 0.4 in task 2
    magnitude = [
        [0.6, 0.1, 0.4, 0.2, 0.5, 0.05, 0.3, 0.6],
        [0.2, 0.3, 0.4, 0.1, 0.2, 0.4, 0.05, 0.1],
    ]
    clipped = [[math.copysign(m, t) for m, t in zip(ms, ts)] for ms, ts in zip(magnitude, tau)]
    total = [a + b for a, b in zip(*tau)]
    weights = []
    for t in range(n):
        low, high = min(magnitude[t]), max(magnitude[t])
        intra = [math.exp(n * ((m - low) / (high - low)) ** 2) for m in magnitude[t]]
        inter = [math.tanh(x * s) for x, s in zip(tau[t], total)]
        score = [a * b for a, b in zip(intra, inter)]
        floor = sorted(score)[int(width * (1 - 0.5))]  # ratio 0.5: rank 4 of 8; it and all below weigh 0
        top = max(score)
        weights.append([(max(s, floor) - floor) / (top - floor) for s in score])
    expected = [
        sum(weights[t][i] * clipped[t][i] for t in range(n)) / max(sum(weights[t][i] for t in range(n)), 1e-12)
        for i in range(width)
    ]
    assert sum(w > 0 for w in weights[0]) == 3 and sum(w > 0 for w in weights[1]) == 3
    merged = masks.pcb(torch.tensor(tau, dtype=torch.float64), ratio=0.5)
    assert merged.tolist() == pytest.approx(expected, abs=1e-12)
    # kept by task 2 alone: its clipped value (0.6 -> 0.4); by task 1 alone: −0.6; by neither: 0; coordinate 0
    # mixes task 1 (weight 1) and task 2 (weight ≈ 0.046): (0.6 + 0.046·0.2) / 1.046 ≈ 0.5824
    assert merged[[1, 2, 3, 5, 6, 7]].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.4, 0.0, -0.6])
    assert merged[0].item() == pytest.approx(0.5824, abs=1e-4)


def test_pcb_weights_a_shared_coordinate_by_the_scores():
    # two identical tasks: identical scores, so the weighted mean is the clipped vector where any is kept
    row = torch.tensor([0.5, -0.4, 0.3, -0.2, 0.1, 0.05, -0.02, 0.01], dtype=torch.float64)
    merged = masks.pcb(torch.stack([row, row]), ratio=0.5, clip=0.0)
    # scores exp(2·x²)·tanh(2τ²) rise with |τ|: rank 4 of 8 is the fourth largest, so the top 3 are kept
    assert merged.tolist() == pytest.approx([0.5, -0.4, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])


def test_breadcrumbs_keeps_the_middle_band_per_layer():
    tau = torch.tensor(
        [
            [1.0, -6.0, 3.0, 2.0, -5.0, 4.0, 0.1, -0.4, 0.3, 0.2],
            [-2.0, 1.0, 0.5, 3.0, 0.0, -4.0, 1.0, 2.0, -3.0, 4.0],
        ]
    )
    # layer of 6: drop the int(1.2) = 1 largest, keep the next int(3) = 3; layer of 4: drop 0, keep 2
    kept = masks.breadcrumbs(tau, keep_fraction=0.5, drop_top_fraction=0.2, sizes=[6, 4])
    assert torch.equal(
        kept,
        torch.tensor(
            [
                [0.0, 0.0, 3.0, 0.0, -5.0, 4.0, 0.0, -0.4, 0.3, 0.0],
                [-2.0, 1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, -3.0, 4.0],
            ]
        ),
    )
    # one segment of 10: drop the 2 largest, keep the next 5
    whole = masks.breadcrumbs(tau, keep_fraction=0.5, drop_top_fraction=0.2)
    assert torch.equal(whole[0], torch.tensor([1.0, 0.0, 3.0, 2.0, 0.0, 4.0, 0.0, -0.4, 0.0, 0.0]))
    with pytest.raises(ValueError):
        masks.breadcrumbs(tau, sizes=[6, 3])


def test_breadcrumbs_defaults_drop_the_outliers_and_keep_fifteen_percent():
    tau = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    kept = masks.breadcrumbs(tau)
    for row, original in zip(kept, tau):
        ranked = original.abs().argsort(descending=True)
        assert (row[ranked[:6]] == 0).all()  # the int(1000·0.006) = 6 largest go
        assert torch.equal(row[ranked[6:156]], original[ranked[6:156]])  # the next int(1000·0.15) = 150 stay
        assert (row[ranked[156:]] == 0).all()
