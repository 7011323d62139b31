"""Spectral merge kernels against closed forms and hand-computed values on tiny matrices."""

import math

import pytest
import torch

from music.merging import spectral


def seeded(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def orthonormal(n: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(seeded(n, n, seed=seed)).Q


def test_polar_factor_is_the_nearest_orthonormal_matrix():
    a = seeded(5, 3)
    # independent formula for a full-column-rank a: a (aᵀa)^(−1/2)
    eigenvalues, q = torch.linalg.eigh(a.T @ a)
    expected = a @ q @ torch.diag(eigenvalues.rsqrt()) @ q.T
    assert torch.allclose(spectral.polar(a), expected, atol=1e-12)
    assert torch.allclose(spectral.polar(a).T @ spectral.polar(a), torch.eye(3, dtype=a.dtype), atol=1e-12)


def test_tsv_merge_of_tasks_on_disjoint_blocks_is_their_sum():
    taus = torch.zeros(2, 8, 8, dtype=torch.float64)
    taus[0, :4, :4], taus[1, 4:, 4:] = seeded(4, 4, seed=1), seeded(4, 4, seed=2)
    # r = 8, T = 2 -> each task keeps k = 4 = its full rank, and the kept U's (V's) are already orthonormal
    assert torch.allclose(spectral.tsv_merge(taus), taus.sum(dim=0), atol=1e-12)


def test_tsv_merge_orthogonalises_two_rank_one_tasks_by_hand():
    # τ1 = 2·u1 e1ᵀ, τ2 = 1·u2 e2ᵀ with u1, u2 at 0° and 60°: the polar factor of [u1 u2] rotates them
    # symmetrically about their bisector (30°) to −15° and 75°; the V's (e1, e2) are already orthonormal
    def unit(degrees):
        return torch.tensor([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))], dtype=torch.float64)

    e1, e2 = torch.eye(2, dtype=torch.float64)
    taus = torch.stack([2 * torch.outer(unit(0), e1), torch.outer(unit(60), e2)])
    expected = 2 * torch.outer(unit(-15), e1) + torch.outer(unit(75), e2)
    assert torch.allclose(spectral.tsv_merge(taus), expected, atol=1e-12)


def test_tsv_merge_equals_the_authors_zero_padded_layout():
    taus, count = seeded(3, 7, 6, seed=3), 3
    k = 6 // count  # r = 6 -> k = 2 per task, filling all 6 slots
    u, s, vh = torch.linalg.svd(taus, full_matrices=False)
    sum_u, sum_s, sum_vh = torch.zeros_like(u[0]), torch.zeros_like(s[0]), torch.zeros_like(vh[0])
    for i in range(count):
        slots = slice(i * k, (i + 1) * k)
        sum_u[:, slots], sum_s[slots], sum_vh[slots] = u[i, :, :k], s[i, :k], vh[i, :k]
    pu, _, qu = torch.linalg.svd(sum_u, full_matrices=False)
    pv, _, qv = torch.linalg.svd(sum_vh, full_matrices=False)
    expected = pu @ qu @ torch.diag(sum_s) @ pv @ qv
    assert torch.allclose(spectral.tsv_merge(taus), expected, atol=1e-10)
    # keep_fraction 0.5 keeps 3 per task (9 > r columns, the "lossless"-style overflow): still well defined
    assert spectral.tsv_merge(taus, keep_fraction=0.5).shape == (7, 6)
    assert not torch.allclose(spectral.tsv_merge(taus, keep_fraction=0.5), expected, atol=1e-3)


def test_iso_c_flattens_the_spectrum_of_the_sum_to_its_mean():
    u, v = orthonormal(5, seed=4)[:, :4], orthonormal(4, seed=5)
    s = torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    total = u @ torch.diag(s) @ v.T
    noise = seeded(5, 4, seed=6)
    taus = torch.stack([total / 2 + noise, total / 2 - noise])  # Σ τ = total; the mean would be total / 2
    merged = spectral.iso_c(taus)
    assert torch.allclose(merged, 3.75 * u @ v.T, atol=1e-12)
    assert torch.allclose(torch.linalg.svdvals(merged), torch.full((4,), 3.75, dtype=torch.float64), atol=1e-12)


def test_iso_cts_by_hand_on_diagonal_tasks():
    # r = 4, fraction 0.5: c = 2 common directions (M = diag(6, 4, 1.3, 0.4) -> e1, e2), d = 1 per task.
    # Residuals: τ1 -> diag(0, 0, 1, −0.2), top e3 with s 1; τ2 -> diag(0, 0, 0.3, 0.6), top e4 with s 0.6.
    # Concatenated s = (6, 4, 1, 0.6), mean 2.9, directions e1..e4 -> 2.9·I; Iso-C would give mean(M's s) = 2.925.
    taus = torch.stack([torch.diag(torch.tensor(d, dtype=torch.float64)) for d in ([3, 2, 1, -0.2], [3, 2, 0.3, 0.6])])
    eye = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(spectral.iso_cts(taus, common_fraction=0.5), 2.9 * eye, atol=1e-12)
    assert torch.allclose(spectral.iso_c(taus), 2.925 * eye, atol=1e-12)


def test_iso_cts_is_isotropic_and_reduces_to_iso_c():
    taus = seeded(4, 20, 24, seed=7)  # r = 20: 16 common + 4·1 task-specific directions at the default 0.8
    values = torch.linalg.svdvals(spectral.iso_cts(taus))
    assert torch.allclose(values, values.mean().expand(20), atol=1e-10)
    assert torch.allclose(spectral.iso_cts(taus[:1], common_fraction=1.0), spectral.iso_c(taus[:1]), atol=1e-10)
    # a fraction of 1 leaves no task-specific directions, for any T
    assert torch.allclose(spectral.iso_cts(taus, common_fraction=1.0), spectral.iso_c(taus), atol=1e-10)
    assert not torch.allclose(spectral.iso_cts(taus), spectral.iso_c(taus), atol=1e-3)


def test_wudi_minimiser_by_hand():
    # 1×2 tasks: loss (a−1)² + (b−1)² + (2a+2b−8)²/8; by symmetry a = b and 2(a−1)² + 2(a−2)² is least at 1.5
    taus = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 2.0]]])
    assert spectral.wudi_minimiser(taus)[0].tolist() == pytest.approx([1.5, 1.5])
    assert spectral.wudi_minimiser(taus[:1])[0].tolist() == pytest.approx([1.0, 0.0])  # one task: itself


def test_wudi_minimiser_is_minimum_norm_outside_the_tasks_row_space():
    taus = torch.zeros(3, 4, 5, dtype=torch.float64)
    taus[:, :, :3] = seeded(3, 4, 3, seed=8)  # column 3 and 4 unused by every task -> G is singular
    merged = spectral.wudi_minimiser(taus)
    assert torch.equal(merged[:, 3:], torch.zeros(4, 2, dtype=torch.float64))
    assert torch.allclose(merged[:, :3], spectral.wudi_minimiser(taus[:, :, :3]), atol=1e-10)


def test_wudi_descends_the_objective_towards_its_minimiser():
    taus = seeded(3, 4, 5, seed=9)
    exact = spectral.wudi_minimiser(taus)
    iterated = spectral.wudi(taus, steps=600, lr=3e-2)  # run long enough, Adam reaches the minimiser
    exact_loss, iterated_loss = spectral.wudi_loss(exact, taus), spectral.wudi_loss(iterated, taus)
    assert exact_loss <= iterated_loss + 1e-12
    assert iterated_loss == pytest.approx(exact_loss.item(), rel=1e-5)
    assert torch.allclose(iterated, exact, atol=1e-2)  # G has full rank here, so the minimiser is unique
    # the authors' defaults (300 Adam steps at lr 1e-5 from Σ τ) only start down the same objective
    authors = spectral.wudi(taus)
    assert exact_loss < spectral.wudi_loss(authors, taus) < spectral.wudi_loss(taus.sum(dim=0), taus)


def test_wudi_gradient_in_closed_form_equals_autograd():
    taus = seeded(3, 4, 5, seed=11)
    tau = seeded(4, 5, seed=12).requires_grad_()
    spectral.wudi_loss(tau, taus).backward()
    gram, target = spectral._wudi_terms(taus)
    assert torch.allclose(tau.grad, 2 * (tau.detach() @ gram - target), atol=1e-10)


def test_vector_kernels_follow_the_reference_code():
    taus = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    assert spectral.tsv_merge_vector(taus).tolist() == [2.0, 1.0]
    assert spectral.iso_vector(taus).tolist() == [2.0, 1.0]
    assert spectral.wudi_vector(taus).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kernel", [spectral.tsv_merge, spectral.iso_c, spectral.iso_cts, spectral.wudi])
@pytest.mark.parametrize("shape", [(3, 6, 10), (3, 10, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matrix_kernels_keep_shape_and_dtype(kernel, shape, dtype):
    taus = seeded(*shape, seed=10).to(dtype)
    merged = kernel(taus)
    assert merged.shape == shape[1:] and merged.dtype == dtype and torch.isfinite(merged).all()
