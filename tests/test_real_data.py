"""On real Fashion-MNIST (Debian's dataset-fashion-mnist): accuracy floors and the sequential accuracy matrix."""

import json
import re

import pytest

from conftest import make_cfg
from music.run import run


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run_fashion(tmp_path, fashion_dir, cache, *overrides):
    cfg = make_cfg(tmp_path, fashion_dir, "data=fashion_mnist", *overrides, cache_dir=cache)
    return run(cfg)


def test_theta0_reaches_80_percent(tmp_path, fashion_dir, cache):
    metrics = run_fashion(tmp_path, fashion_dir, cache, "experiment=pretrain")
    assert metrics["test/acc"] >= 0.80
    assert metrics["val/acc"] >= 0.80
    # the 10k test images are all there: 1000 per class
    assert all(
        metrics[f"test/acc_class_{c}"] * 1000 == pytest.approx(round(metrics[f"test/acc_class_{c}"] * 1000))
        for c in range(10)
    )


def test_sequential_matrix_rows_are_stages_and_match_metrics_json(tmp_path, fashion_dir, cache):
    metrics = run_fashion(tmp_path, fashion_dir, cache, "experiment=sequential", "tasks=[[1],[2],[3]]")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    matrix = written["acc_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert matrix[-1] == [written[f"test/acc_task_{j}"] for j in range(3)]
    # right after learning a task, the model is good at it
    assert all(matrix[i][i] >= 0.9 for i in range(3))
    assert written["forgetting"] == pytest.approx(
        sum(max(matrix[s][j] for s in range(2)) - matrix[2][j] for j in range(2)) / 2
    )
    assert metrics == written


def test_task_arithmetic_picks_lambda_on_validation(tmp_path, fashion_dir, cache):
    metrics = run_fashion(tmp_path, fashion_dir, cache, "experiment=task_arithmetic", "tasks=[[1],[2],[3]]")
    curve = metrics["lambda_curve"]
    assert metrics["lambda"] == max(curve, key=lambda p: (p["val/acc"], -p["lambda"]))["lambda"]
    assert metrics["test/acc_oracle_lambda"] >= metrics["test/acc"] >= 0.75


def test_negation_forgets_one_class_and_keeps_the_others(tmp_path, fashion_dir, cache):
    # λ is picked on validation; a one-point margin over the 95% floor carries the guarantee to the test set
    metrics = run_fashion(
        tmp_path, fashion_dir, cache, "experiment=negation", "negation.target=[1]", "negation.control_floor=0.96"
    )
    assert metrics["test/target_acc_before"] >= 0.9  # trousers: θ0 knows them
    assert metrics["test/target_acc"] < 0.20
    assert metrics["test/control_acc"] >= 0.95 * metrics["test/control_acc_before"]
    assert metrics["val/control_acc"] >= metrics["val/control_acc_floor"]
    assert metrics["test/acc_class_1"] == metrics["test/target_acc"]


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("average", []),
        ("task_arithmetic", []),
        ("ties", ["keep_fraction"]),
        ("dare", ["p"]),
        ("fisher", []),
        ("regmean", ["alpha"]),
        ("tangent", []),
    ],
)
def test_every_merge_reports_its_picked_knobs_and_diagnostics(tmp_path, fashion_dir, cache, name, knobs):
    metrics = run_fashion(tmp_path, fashion_dir, cache, f"experiment={name}", "tasks=[[0,1],[2,3],[4,5]]")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == metrics
    for key in [
        "test/acc",
        "val/acc",
        "test/acc_seen",
        "test/acc_unseen",
        "lambda",
        "lambda_curve",
        "test/acc_oracle_lambda",
        *knobs,
    ]:
        assert key in written, key
    assert len(written["diagnostics/cosine"]) == 3 and written["diagnostics/cosine"][1][1] == pytest.approx(
        1.0, abs=1e-4
    )
    assert all(n > 0 for n in written["diagnostics/norms"])
    assert written["test/acc"] >= 0.6  # three class-pair fine-tunes merged: far above chance
    picked = next(
        p for p in written["lambda_curve"] if p["val/acc"] == max(q["val/acc"] for q in written["lambda_curve"])
    )
    assert all(written[k] == picked[k] for k in [*knobs, "lambda"])


@pytest.mark.parametrize(("head", "lambdas"), [("per_task", "[0.0,0.1,0.2,0.3,0.5,0.7,1.0]"), ("shared", "[1.0]")])
def test_ft_classifier_lowers_held_out_kl(tmp_path, fashion_dir, cache, head, lambdas):
    metrics = run_fashion(
        tmp_path,
        fashion_dir,
        cache,
        "experiment=task_arithmetic",
        "align=ft_classifier",
        f"model.head={head}",
        "tasks=[[0,1],[2,3],[4,5],[6,7],[8,9]]",
        f"merge.lambdas={lambdas}",
    )
    assert metrics["align/kl_after"] < metrics["align/kl_before"]
    assert metrics["align/shots_per_class"] == 5


def test_music_paper_preset_trains_theta0_to_its_target(tmp_path, fashion_dir, cache, caplog):
    caplog.set_level("INFO")
    # the preset's weak θ0 (2000 images, at most 30 epochs) with a target Fashion-MNIST can reach (0.917 it cannot)
    metrics = run_fashion(
        tmp_path, fashion_dir, cache, "sweep=music_paper", "experiment=pretrain", "pretrain.target_val_acc=0.78"
    )
    assert metrics["theta0/target_val_acc"] == 0.78 and metrics["theta0/val/acc"] >= 0.78
    stopped = re.search(r"θ0 reached the target validation accuracy 0.78 after (\d+) epoch", caplog.text)
    assert stopped and int(stopped.group(1)) < 30  # it stopped there, not at the cap
    capped = run_fashion(
        tmp_path / "capped",
        fashion_dir,
        cache,
        "sweep=music_paper",
        "experiment=pretrain",
        "pretrain.target_val_acc=null",
    )
    assert capped["theta0/val/acc"] > metrics["theta0/val/acc"]  # 30 epochs go further than the target


@pytest.fixture(scope="module")
def naive_from_scratch(tmp_path_factory, fashion_dir, cache):
    return run_fashion(
        tmp_path_factory.mktemp("naive"), fashion_dir, cache, "sweep=class_incremental", "experiment=sequential"
    )


def test_class_incremental_from_scratch_naive_sequential_forgets(naive_from_scratch):
    # 5 tasks of 2 classes, shared head, θ0 random: each stage overwrites the last (Hsu et al. 2018: 19.7% on MNIST)
    assert naive_from_scratch["theta0/test/acc"] < 0.2 and naive_from_scratch["test/acc"] < 0.3
    assert naive_from_scratch["forgetting"] > 0.8 and naive_from_scratch["continual/kept"] == 0


def test_class_incremental_from_scratch_replay_of_500_images_remembers(
    tmp_path, fashion_dir, cache, naive_from_scratch
):
    replay = run_fashion(
        tmp_path, fashion_dir, cache, "sweep=class_incremental", "experiment=replay", "continual.memory_size=500"
    )
    assert replay["test/acc"] >= naive_from_scratch["test/acc"] + 0.3
    assert replay["continual/memory"] == "images with labels" and replay["continual/kept"] == 500


@pytest.mark.parametrize("name", ["derpp", "er_ace"])
def test_class_incremental_from_scratch_a_memory_filled_step_by_step_remembers(
    tmp_path, fashion_dir, cache, naive_from_scratch, name
):
    metrics = run_fashion(tmp_path, fashion_dir, cache, "sweep=class_incremental", f"experiment={name}")
    assert metrics["test/acc"] >= naive_from_scratch["test/acc"] + 0.3 and metrics["continual/kept"] == 500
