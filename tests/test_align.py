"""Head protocol and alignment: Procrustes on known rotations, FT-Classifier never reading labels."""

import pytest
import torch

from conftest import FAST, make_cfg
from music.align import fit_head_kl, kl_to_teacher, orthogonal_map, procrustes_report
from music.align.step import align, shots_of
from music.cache import ArtifactCache
from music.evaluation import allowed_classes, predict
from music.experiment import Run
from music.merging.gather import task_vectors
from music.merging.models import MergedModels
from music.run import load_data, run


def random_rotation(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def test_procrustes_recovers_a_known_rotation():
    source = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    rotation = random_rotation(16, 1)
    fitted = orthogonal_map(source, source @ rotation)
    assert torch.allclose(fitted, rotation, atol=1e-4)
    report = procrustes_report(source, source @ rotation, fitted)
    assert (report["n"], report["d"]) == (200, 16)
    assert report["residual_orthogonal"] < 1e-5 and report["residual_lstsq"] < 1e-5
    assert report["lstsq_singular_values"] == pytest.approx([1.0] * 16, abs=1e-4)  # a rotation: all ones


def test_procrustes_in_a_principal_subspace_recovers_the_rotation_there():
    g = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(32, 4, generator=g)).Q  # features live in a 4-d subspace of 32
    source = torch.randn(6, 4, generator=g) @ basis.T  # 6 samples: the full 32×32 map is underdetermined
    inner = random_rotation(4, 3)
    rotation = basis @ inner @ basis.T + torch.eye(32) - basis @ basis.T
    fitted = orthogonal_map(source, source @ rotation, subspace_dim=4)
    assert torch.allclose(fitted, rotation, atol=1e-4)
    assert torch.allclose(fitted @ fitted.T, torch.eye(32), atol=1e-4)


def test_fit_head_kl_moves_a_head_toward_its_teacher():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(64, 8, generator=g)
    teacher, student = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    allowed = torch.ones(64, 4, dtype=torch.bool)
    with torch.no_grad():
        target = teacher(features)
        before = kl_to_teacher(target, student(features), allowed)
    fit_head_kl(student, features, target, allowed, lr=0.05, epochs=200, batch_size=16, generator=g)
    with torch.no_grad():
        assert kl_to_teacher(target, student(features), allowed) < 0.05 * before


def test_head_protocol_masks():
    allowed = allowed_classes([[0, 1], [2, 3]], "per_task", num_classes=5)
    assert allowed.tolist()[0] == [True, True, False, False, False]
    assert allowed.tolist()[3] == [False, False, True, True, False]
    assert allowed.tolist()[4] == [True] * 5  # a class in no task: scored over every class
    assert allowed_classes([[0, 1]], "shared", num_classes=3).all()
    net = torch.nn.Linear(2, 5)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 1.0, 5.0, 2.0, 9.0]))  # class 4 wins unless masked
    labels = torch.tensor([0, 2, 4])
    assert predict(net, torch.zeros(3, 2), allowed=allowed[labels]).tolist() == [1, 2, 4]
    assert predict(net, torch.zeros(3, 2)).tolist() == [4, 4, 4]


def experiment(tmp_path, mnist_dir, *overrides) -> Run:
    cfg = make_cfg(tmp_path, mnist_dir, *FAST, *overrides)
    data = load_data(cfg)
    return Run.open(cfg, data, ArtifactCache(tmp_path / "cache"), [])


def vectors_of(exp: Run):
    return task_vectors(exp, exp.ctx.tasks, MergedModels(exp).merge_keys)


def test_ft_classifier_never_reads_labels(tmp_path, mnist_dir):
    exp = experiment(tmp_path, mnist_dir, "experiment=task_arithmetic", "align=ft_classifier", "tasks=[[0,1],[2,3]]")
    theta0, vectors = vectors_of(exp)  # trains and caches the fine-tunes (these read labels)
    merged = exp.artifacts.model(sum(vectors).apply_to(theta0, 0.5))
    first, first_report = align(exp, merged)
    exp.ctx.data.train.labels = torch.randint(0, 10, exp.ctx.data.train_labels.shape)  # garbage from here on
    second, second_report = align(exp, merged)
    assert torch.equal(first.head.weight, second.head.weight) and first_report == second_report
    assert not torch.equal(first.head.weight, merged.head.weight)  # it did train the head
    assert torch.equal(first.features[1].weight, merged.features[1].weight)  # and only the head


def test_per_task_merge_keeps_every_task_its_own_head(tmp_path, mnist_dir):
    exp = experiment(tmp_path, mnist_dir, "experiment=task_arithmetic", "model.head=per_task", "tasks=[[0,1],[2,3]]")
    heads = exp.artifacts.with_task_heads(exp.artifacts.theta0)
    for task in exp.ctx.tasks:
        assert torch.equal(heads["head.weight"][task], exp.artifacts.finetuned(task)["head.weight"][task])
    assert torch.equal(heads["head.bias"][4:], exp.artifacts.theta0["head.bias"][4:])


@pytest.mark.parametrize("name", ["merged", "sequential", "individual", "ties", "tangent"])
def test_strategies_run_with_per_task_heads(tmp_path, mnist_dir, name):
    metrics = run(
        make_cfg(tmp_path, mnist_dir, f"experiment={name}", *FAST, "model.head=per_task", "tasks=[[0,1],[2,3,4]]")
    )
    assert metrics["test/acc_task_0"] is not None and metrics["test/acc"] > 0.5


@pytest.mark.parametrize("method", ["ft_classifier", "procrustes"])
def test_alignment_reports_its_figures(tmp_path, mnist_dir, method):
    metrics = run(
        make_cfg(
            tmp_path,
            mnist_dir,
            "experiment=ties",
            *FAST,
            f"align={method}",
            "align.shots_per_class=3",
            "tasks=[[0,1],[2,3]]",
        )
    )
    for key in [
        "test/acc_before_align",
        "val/acc_before_align",
        "align/kl_before",
        "align/kl_after",
        "align/shots_per_class",
    ]:
        assert key in metrics
    if method == "procrustes":
        fit = metrics["align/procrustes"][0]
        assert (fit["n"], fit["d"]) == (6, 256) and len(fit["lstsq_singular_values"]) == 256
        assert fit["residual_lstsq"] <= fit["residual_orthogonal"]  # least squares is the looser fit


def test_balanced_shots_are_k_images_of_each_class_of_the_task(tmp_path, mnist_dir):
    exp = experiment(tmp_path, mnist_dir, "experiment=task_arithmetic", "align=ft_classifier", "tasks=[[0,1],[2,3]]")
    shots = shots_of(exp, [2, 3], 4, "balanced")
    labels = exp.ctx.data.train_labels
    images = exp.ctx.data.images(torch.arange(len(labels))).flatten(1)
    found = [labels[(images == shot.flatten()).all(dim=1)].unique().tolist() for shot in shots]
    assert found == [[2]] * 4 + [[3]] * 4
    pool = exp.ctx.split.train_of([2, 3])
    assert all((images[pool] == shot.flatten()).all(dim=1).any() for shot in shots_of(exp, [2, 3], 4, "random"))


def test_ft_classifier_takes_one_adam_step_per_image_and_epoch_by_default(tmp_path, mnist_dir, monkeypatch):
    steps = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    exp = experiment(tmp_path, mnist_dir, "experiment=task_arithmetic", "align=ft_classifier", "tasks=[[0,1],[2,3]]")
    cfg = exp.ctx.cfg.align
    assert (cfg.batch_size, cfg.epochs, cfg.shots_per_class, cfg.sampling) == (1, 5, 5, "balanced")
    theta0, vectors = vectors_of(exp)
    steps.clear()  # the fine-tunes' own steps
    align(exp, exp.artifacts.model(sum(vectors).apply_to(theta0, 0.5)))
    assert len(steps) == 5 * (5 * 2) * 2  # the authors' 25·c steps per task of c classes
