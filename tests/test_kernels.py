"""Merge kernels against values computed by hand on tiny tensors."""

import pytest
import torch
from torch import nn

from music.merging import TaskVector, adamerging, kernels, stack
from music.models import LinearizedNet
from music.models.statistics import diagonal_fisher, linear_input_grams

# three task vectors over four coordinates, with sign conflicts in columns 0, 1 and 3
TAU = torch.tensor(
    [
        [4.0, -1.0, 0.5, 0.0],
        [-1.0, -3.0, 2.0, 0.1],
        [-2.0, 2.0, 1.0, -0.2],
    ]
)


def test_task_arithmetic_and_average():
    assert kernels.task_arithmetic(TAU).tolist() == pytest.approx([1.0, -2.0, 3.5, -0.1])
    assert kernels.average(TAU).tolist() == pytest.approx([1 / 3, -2 / 3, 3.5 / 3, -0.1 / 3])


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    trimmed = kernels.trim(TAU, keep_fraction=0.5)  # top 2 of 4 by magnitude, per row
    assert trimmed.tolist() == [[4.0, -1.0, 0.0, 0.0], [0.0, -3.0, 2.0, 0.0], [-2.0, 2.0, 0.0, 0.0]]
    # column sums 2, −2, 2, 0 -> signs +, −, +, 0; column 0 keeps 4 (−2 disagrees), column 1 averages −1 and −3
    assert kernels.elect_sign(trimmed).tolist() == [1.0, -1.0, 1.0, 0.0]
    assert kernels.ties(TAU, keep_fraction=0.5).tolist() == [4.0, -2.0, 2.0, 0.0]
    # keeping everything: col 0: sum 1 > 0 -> mean of {4} ; col 1: sum −2 -> mean of {−1, −3}; col 3: sum −0.1 -> −0.2
    assert kernels.ties(TAU, keep_fraction=1.0).tolist() == pytest.approx([4.0, -2.0, 3.5 / 3, -0.2])


def test_sign_conflict_fraction():
    # coordinates with ≥ 2 non-zero entries: all four; conflicting: 0, 1, 3
    assert kernels.sign_conflict_fraction(TAU) == 0.75
    assert kernels.sign_conflict_fraction(kernels.trim(TAU, 0.5)) == 1.0  # columns 0 and 1 only


def test_dare_drops_with_a_known_mask_and_rescales():
    p, seed = 0.5, 3
    dropped = kernels.dare(TAU, p, torch.Generator().manual_seed(seed))
    keep = torch.rand(TAU.shape, generator=torch.Generator().manual_seed(seed)) >= p  # each entry's own draw
    assert torch.equal(dropped, torch.where(keep, TAU * 2, torch.zeros_like(TAU)))
    assert torch.equal(kernels.dare(TAU, 0.0, torch.Generator()), TAU)


def test_dare_is_unbiased_over_many_seeds():
    tau = torch.randn(2, 500, generator=torch.Generator().manual_seed(0))
    mean = torch.stack([kernels.dare(tau, 0.7, torch.Generator().manual_seed(s)) for s in range(4000)]).mean(dim=0)
    # per-entry std of the mean: |τ|·sqrt(p/(1−p)/4000) ≈ 0.024·|τ|
    assert (mean - tau).abs().max() <= 0.12 * tau.abs().max()


def test_fisher_weighted_average_by_hand():
    tau = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fishers = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    # column 0: (1·1 + 3·3)/4; column 1 has no Fisher mass: plain mean
    assert kernels.fisher_weighted(tau, fishers).tolist() == [2.5, 3.0]


def test_regmean_on_one_linear_layer_is_least_squares_on_the_concatenated_data():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(5, 3)
    theta0 = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    xs = [torch.randn(n, 5, generator=g) for n in (40, 60)]
    ys = [torch.randn(len(x), 3, generator=g) for x in xs]

    def least_squares(x, y):  # [W b] minimising ‖[x 1]·[W b]ᵀ − y‖
        augmented = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
        solution = torch.linalg.lstsq(augmented, y.double()).solution.T.float()
        return {"weight": solution[:, :-1], "bias": solution[:, -1]}

    vectors, grams = [], []
    for x, y in zip(xs, ys):
        vectors.append(TaskVector.between(theta0, least_squares(x, y)))
        grams.append(linear_input_grams(layer, x))  # the Gram matrix does not depend on the layer's weights
    merged = kernels.regmean(vectors, grams, alpha=1.0)
    expected = least_squares(torch.cat(xs), torch.cat(ys))
    assert torch.allclose(theta0["weight"] + merged.deltas["weight"], expected["weight"], atol=1e-4)
    assert torch.allclose(theta0["bias"] + merged.deltas["bias"], expected["bias"], atol=1e-4)


def test_regmean_shrinkage_scales_off_diagonal_entries():
    gram = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    assert kernels.shrink(gram, 0.25).tolist() == [[4.0, 0.5], [0.5, 9.0]]


def test_cosine_similarity_matrix():
    tau = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert kernels.cosine_similarity_matrix(tau).tolist() == [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]


def test_flatten_unflatten_and_stack():
    tv = TaskVector({"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0])})
    assert tv.flatten().tolist() == [0, 1, 2, 3, 4, 5, 7]
    back = tv.unflatten(tv.flatten() * 2)
    assert torch.equal(back.deltas["a"], tv.deltas["a"] * 2) and back.deltas["b"].shape == (1,)
    assert stack([tv, -tv]).shape == (2, 7)
    with pytest.raises(ValueError, match="7 values"):
        tv.unflatten(torch.zeros(6))


def test_diagonal_fisher_matches_the_exact_expectation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4))
    x = torch.randn(1, 3)
    names = ["0.weight", "0.bias"]
    exact = torch.zeros(16)
    probs = torch.softmax(net(x), dim=-1)[0]
    for y in range(4):
        net.zero_grad()
        torch.log_softmax(net(x), dim=-1)[0, y].backward()
        exact += probs[y] * torch.cat([net[0].weight.grad.reshape(-1), net[0].bias.grad]).square()
    estimate = diagonal_fisher(net, x.repeat(8000, 1), names, torch.Generator().manual_seed(1))
    assert torch.allclose(estimate, exact, rtol=0.1, atol=1e-3)


def test_linearized_net_is_exact_for_a_linear_model_and_first_order_otherwise():
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    linear = LinearizedNet(nn.Linear(5, 2))
    with torch.no_grad():
        for p in linear.net.parameters():
            p.add_(torch.randn_like(p))
    assert torch.allclose(linear(x), linear.net(x), atol=1e-5)  # f is linear in θ: the linearization is f

    mlp = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))
    lin = LinearizedNet(mlp)
    before = mlp(x).detach()
    assert torch.allclose(lin(x), before, atol=1e-6)  # at θ = θ0
    loss = lin(x).square().sum()
    loss.backward()  # gradients reach θ through θ − θ0, not the anchor θ0
    assert all(p.grad is not None for p in lin.net.parameters())
    assert all(p.grad is None for p in lin.anchor.parameters())


def test_adamerging_coefficients_combine_task_vectors_per_task_and_per_layer():
    theta0 = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    vectors = [
        TaskVector({"w": torch.eye(2), "b": torch.tensor([1.0, 0.0])}),
        TaskVector({"w": torch.full((2, 2), 2.0), "b": torch.tensor([0.0, 3.0])}),
    ]
    merged = adamerging.merged_parameters(theta0, vectors, torch.tensor([0.5, 0.25]))  # task-wise
    assert merged["w"].tolist() == [[2.0, 1.5], [1.5, 2.0]] and merged["b"].tolist() == [0.5, 0.75]
    layerwise = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # task 0 moves w only, task 1 moves b only
    merged = adamerging.merged_parameters(theta0, vectors, layerwise)
    assert merged["w"].tolist() == [[2.0, 1.0], [1.0, 2.0]] and merged["b"].tolist() == [0.0, 3.0]
    assert adamerging.weighted_sum(vectors, layerwise).deltas["b"].tolist() == [0.0, 3.0]


@pytest.mark.parametrize("layerwise", [False, True])
def test_adamerging_lowers_the_entropy_and_keeps_its_coefficients_in_bounds(layerwise):
    generator = torch.Generator().manual_seed(0)
    net = nn.Linear(4, 3)
    theta0 = {k: v.detach() for k, v in net.state_dict().items()}
    vectors = [
        TaskVector({k: torch.randn(v.shape, generator=generator) * 2 for k, v in theta0.items()}) for _ in range(2)
    ]
    images = [torch.randn(64, 4, generator=generator) for _ in range(2)]

    def logits(params, x, k):
        return torch.func.functional_call(net, params, (x,))

    coefficients, history = adamerging.adamerging(
        theta0, vectors, logits, images, layerwise, generator, steps=150, lr=0.02, batch_size=64
    )
    assert coefficients.shape == ((2, 2) if layerwise else (2,))
    assert float(coefficients.min()) >= 0.0 and float(coefficients.max()) <= 1.0
    assert sum(history[-10:]) / 10 < sum(history[:10]) / 10 - 0.05  # entropy went down
    full = adamerging.merged_parameters(theta0, vectors, coefficients)
    entropy_at = lambda params: sum(float(adamerging.entropy(logits(params, x, 0))) for x in images)  # noqa: E731
    assert entropy_at(full) < entropy_at(
        adamerging.merged_parameters(theta0, vectors, torch.full_like(coefficients, 0.3))
    )


def test_magmax_keeps_each_coordinates_largest_magnitude_with_its_sign():
    # columns: 4 (row 0) ; −3 (row 1) ; 2 (row 1) ; −0.2 (row 2)
    assert kernels.max_magnitude(TAU).tolist() == pytest.approx([4.0, -3.0, 2.0, -0.2])
    assert kernels.max_magnitude(TAU[:1]).tolist() == TAU[0].tolist()  # one task: itself


def test_adamerging_clamps_in_the_forward_pass_as_its_authors_do():
    """λ enters the merge as clamp(λ_raw, 0, 1) (EnnengYang/AdaMerging's `lambdas()`); Adam moves λ_raw. One task,
    θ(λ) = λ, two images whose entropy bumps sit at λ = −0.5 and 1.5: the entropy is lowest at λ = 0.5 and its gradient
    at λ = 1 points back inside. With lr = 1 the first step overshoots to λ_raw ≈ 1.3, where the clamp passes no
    gradient: Adam's momentum keeps λ_raw above 1, so λ stays at the bound. Projecting λ back after each step instead
    would let the next gradient pull it back inside."""
    theta0, vectors = {"w": torch.zeros(1)}, [TaskVector({"w": torch.ones(1)})]
    images = [torch.tensor([[-0.5], [1.5]])]

    def logits(params, x, k):
        margin = 8.0 * (params["w"] - x)  # N×1: the two classes' logit difference crosses 0 at λ = x
        return torch.cat([margin, torch.zeros_like(margin)], dim=1)

    generator = torch.Generator().manual_seed(0)
    coefficients, _ = adamerging.adamerging(
        theta0, vectors, logits, images, False, generator, steps=4, lr=1.0, batch_size=2
    )
    assert coefficients.tolist() == [1.0]

    # the projected variant, by hand: after the same first step, the gradient at λ = 1 pulls λ back below the bound
    raw = torch.full((1,), 0.3, requires_grad=True)
    optimizer = torch.optim.Adam([raw], lr=1.0)
    for _ in range(4):
        loss = sum(adamerging.entropy(logits(adamerging.merged_parameters(theta0, vectors, raw), x, 0)) for x in images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            raw.clamp_(0.0, 1.0)
    assert float(raw.detach()) < 0.99
