"""End to end on small MNIST IDX files the tests write (torchvision's real MNIST code path)."""

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import CONFIGS, FAST, ROOT, make_cfg, write_mnist_files
from music.configs import continual_methods, merge_methods
from music.data import TaskData, load_dataset
from music.data.datamodule import MusicDataModule
from music.errors import DataError
from music.experiment import Training
from music.merging.methods import METHODS
from music.models import MLP
from music.models.classifier import Classifier
from music.run import load_data, run

# the experiment files, and experiment=<method> for every merge and continual method (music.configs)
EXPERIMENTS = sorted(
    {p.stem for p in (CONFIGS / "experiment").glob("*.yaml")} | {*merge_methods(), *continual_methods()}
)
CONTRACT = ["experiment", "seed", "dataset", "test/acc", "test/acc_seen", "test/acc_unseen", "val/acc"]
MERGE = [
    "lambda",
    "lambda_curve",
    "test/acc_oracle_lambda",
    "merge_method",
    "diagnostics/cosine",
    "diagnostics/norms",
    "diagnostics/sign_conflict_fraction",
]
PER_STRATEGY = {
    **{
        m: ["acc_matrix", "average_acc", "forgetting", "bwt", "continual/method", "continual/memory", "continual/kept"]
        for m in ("sequential", "ewc", "lwf", "replay", "agem")
    },
    "individual": ["individual_acc_matrix"],
    "negation": [
        "lambda",
        "lambda_curve",
        "test/target_acc",
        "test/target_acc_before",
        "test/control_acc",
        "test/control_acc_before",
    ],
    # every merge method: the contract, its labels and its picked knobs (DARE's base, task arithmetic, has none)
    **{
        m: MERGE + ["merge/data", "merge/task_id", "merge/collapsed_to_theta0", *method.knobs]
        for m, method in METHODS.items()
    },
    "tangent": MERGE,
    "merge": MERGE,
    "ft_classifier": MERGE + ["test/acc_before_align", "align/kl_before", "align/kl_after", "align/shots_per_class"],
}
RUN_NAME = {
    "tangent": "tangent_task_arithmetic",
    "ft_classifier": "task_arithmetic+ft_classifier",
    "merge": "task_arithmetic",
}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run_experiment(tmp_path, mnist_dir, cache, name, *overrides):
    cfg = make_cfg(tmp_path, mnist_dir, f"experiment={name}", *FAST, *overrides, cache_dir=cache)
    metrics = run(cfg)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    return metrics


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_keeps_the_metrics_contract(tmp_path, mnist_dir, shared_cache, name):
    tasks = [[1], [2], [3]]
    metrics = run_experiment(tmp_path, mnist_dir, shared_cache, name, "tasks=[[1],[2],[3]]")
    for key in CONTRACT + PER_STRATEGY.get(name, []):
        assert key in metrics, key
    assert metrics["experiment"] == RUN_NAME.get(name, name) and metrics["dataset"] == "mnist"
    assert all(f"test/acc_class_{c}" in metrics for c in range(10))
    assert all(f"test/acc_task_{i}" in metrics for i in range(len(tasks)))
    # 20 test images per class: every accuracy is a multiple of 1/200 overall and of 1/20 per class
    assert metrics["test/acc"] * 200 == pytest.approx(round(metrics["test/acc"] * 200))
    assert metrics["test/acc_unseen"] is not None  # classes 0 and 4..9 are in no task
    if name != "negation":  # negation forgets class 0 on purpose
        assert metrics["test/acc"] > 0.5  # the synthetic classes are easy: a broken pipeline would sit near 0.1


def test_sequential_matrix_has_a_row_per_stage_ending_in_the_final_task_accuracies(tmp_path, mnist_dir, shared_cache):
    metrics = run_experiment(tmp_path, mnist_dir, shared_cache, "sequential", "tasks=[[4,5],[6],[7,8,9]]")
    matrix = metrics["acc_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert matrix[-1] == [metrics[f"test/acc_task_{j}"] for j in range(3)]


def test_lambda_is_picked_on_validation_and_oracle_is_the_best_test_point(tmp_path, mnist_dir, shared_cache):
    metrics = run_experiment(
        tmp_path, mnist_dir, shared_cache, "task_arithmetic", "tasks=[[0,1],[2,3]]", "merge.lambdas=[0.0,0.3,1.0,2.0]"
    )
    curve = metrics["lambda_curve"]
    assert [p["lambda"] for p in curve] == [0.0, 0.3, 1.0, 2.0]
    best_val = max(p["val/acc"] for p in curve)
    assert metrics["lambda"] == next(p["lambda"] for p in curve if p["val/acc"] == best_val)
    assert metrics["test/acc"] == next(p["test/acc"] for p in curve if p["lambda"] == metrics["lambda"])
    assert metrics["test/acc_oracle_lambda"] == max(p["test/acc"] for p in curve)


def test_second_task_arithmetic_run_trains_nothing(tmp_path, mnist_dir, monkeypatch, caplog):
    cache = tmp_path / "cache"
    first = run_experiment(tmp_path / "a", mnist_dir, cache, "individual", "tasks=[[0,1],[2,3]]")
    monkeypatch.setattr(Training, "fit", lambda *a, **k: pytest.fail("a cached artifact was trained again"))
    with caplog.at_level("INFO", logger="music.cache"):
        ta = run_experiment(tmp_path / "b", mnist_dir, cache, "task_arithmetic", "tasks=[[0,1],[2,3]]")
        again = run_experiment(tmp_path / "c", mnist_dir, cache, "task_arithmetic", "tasks=[[0,1],[2,3]]")
    assert caplog.text.count("cache hit: individual/task_") == 4 and "cache miss" not in caplog.text
    assert ta == again and first["seed"] == ta["seed"]


def test_checkpoints_reload_with_weights_only(tmp_path, mnist_dir):
    cfg = make_cfg(tmp_path, mnist_dir, "experiment=pretrain", *FAST, "logger=csv", "trainer.enable_checkpointing=true")
    run(cfg)
    [ckpt] = list((tmp_path / "run").rglob("*.ckpt"))
    payload = torch.load(ckpt, weights_only=True)
    assert payload["hyper_parameters"]["tasks"] == [[c] for c in range(10)]
    module = Classifier.load_from_checkpoint(
        ckpt, net=MLP(10, [1, 28, 28]), optimizer=partial(torch.optim.Adam, lr=1e-3)
    )
    assert torch.equal(module.net.head.weight, payload["state_dict"]["net.head.weight"])


def test_music_datamodule_feeds_lightning_the_pretrain_split(tmp_path, mnist_dir):
    cfg = make_cfg(tmp_path, mnist_dir, "data._target_=music.data.datamodule.MusicDataModule", "data.batch_size=64")
    data = load_data(cfg)
    assert isinstance(data, MusicDataModule) and isinstance(data, TaskData)  # experiments accept it too
    module = Classifier(
        MLP(10, [1, 28, 28]), partial(torch.optim.Adam, lr=1e-3), tasks=[[c] for c in range(10)], num_classes=10
    )
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, datamodule=data)
    # 60 training images per class: 10% held out for validation, half of the rest is θ0's -> 27 per class
    assert len(data.split.pretrain_train) == 270 and trainer.global_step == math.ceil(270 / 64)


def test_missing_dataset_without_network_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.KMNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(DataError) as err:
        load_dataset("kmnist", tmp_path / "data", download=True)
    message = str(err.value)
    assert "download failed" in message and str(tmp_path / "data" / "KMNIST" / "raw") in message
    assert not (tmp_path / "data").exists()  # nothing was downloaded: no folder was made


def test_a_download_moves_into_torchvisions_layout_whole(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeKMNIST:  # torchvision's contract: the files land in <root>/KMNIST/raw
        def __init__(self, root, train, download):
            write_mnist_files(Path(root), per_class_train=3, per_class_test=1, folder="KMNIST")

    monkeypatch.setattr(torchvision.datasets, "KMNIST", FakeKMNIST)
    splits = load_dataset("kmnist", tmp_path / "data", download=True)
    assert len(splits["train"][1]) == 30 and len(splits["test"][1]) == 10
    assert sorted(p.name for p in (tmp_path / "data" / "KMNIST" / "raw").iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )


def train_cli(tmp_path, *args, env=None):
    command = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env or os.environ.copy()
    )


@pytest.mark.slow  # slow (~30 s): the golden test runs every experiment as one multirun in the default tier
def test_multirun_over_every_experiment(tmp_path, mnist_dir):
    result = train_cli(
        tmp_path,
        "-m",
        "experiment=glob(*)",
        f"data.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
        "tasks=[[1],[2]]",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted(json.loads(p.read_text())["experiment"] for p in (tmp_path / "logs").rglob("metrics.json"))
    assert found == sorted(RUN_NAME.get(n, n) for n in EXPERIMENTS)


def test_a_run_whose_models_come_from_the_cache_never_imports_lightning(tmp_path, mnist_dir):
    """Importing Lightning takes seconds (torchmetrics, torchvision and scipy come with it): only training pays it."""
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "print('lightning imported:', 'lightning' in sys.modules)"
    )
    args = [
        str(ROOT / "train.py"),
        "experiment=task_arithmetic",
        f"data.data_dir={mnist_dir}",
        f"cache.dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
        "tasks=[[1],[2]]",
        *FAST,
    ]
    outputs = []
    for _ in ("cold", "warm"):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout.strip().splitlines()[-1])
    assert outputs == ["lightning imported: True", "lightning imported: False"]


def wandb_run(tmp_path, mnist_dir, **env) -> tuple[subprocess.CompletedProcess, Path]:
    """A two-stage sequential run with the default W&B logger, the user's W&B settings cleared (a fresh HOME), plus
    `env`; the result and the run folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path / "home")}
    run_dir = tmp_path / "run"
    overrides = ["experiment=sequential", "tasks=[[1],[2]]", f"data.data_dir={mnist_dir}"]
    overrides += [f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={run_dir}", *FAST]
    return train_cli(tmp_path, *overrides, env=clean | env), run_dir


def test_wandb_offline_run_leaves_its_files_in_the_run_folder(tmp_path, mnist_dir):
    result, run_dir = wandb_run(tmp_path, mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    [offline_run] = list((run_dir / "wandb").glob("offline-run-*"))
    assert list(offline_run.glob("run-*.wandb"))
    assert (
        not (tmp_path / "home" / ".config" / "wandb").exists() and not (tmp_path / "home" / ".cache" / "wandb").exists()
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["acc_matrix"]) == 2
    assert (run_dir / "train.log").read_text().count("training sequential/stage_") == 2


def test_wandb_online_without_an_api_key_is_one_line_before_any_training(tmp_path, mnist_dir):
    """wandb's UsageError traceback, after start-up, became one line saying what to do."""
    result, run_dir = wandb_run(tmp_path, mnist_dir, WANDB_MODE="online")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.stderr.startswith(
        "error: logger.wandb.mode='online' is not allowed: offline, or online once W&B can start a run (it said: "
    )
    assert "`wandb login`" in result.stderr and "WANDB_MODE=offline" in result.stderr
    assert "training" not in (run_dir / "train.log").read_text() and not (tmp_path / "logs" / "cache").exists()
    assert not (run_dir / "metrics.json").exists()


def test_wandb_is_closed_when_a_job_fails(tmp_path, mnist_dir, monkeypatch):
    import wandb

    from music import strategies

    def broken(exp):
        raise RuntimeError("strategy crashed")

    monkeypatch.setitem(strategies.STRATEGIES, "pretrain", broken)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_cfg(tmp_path, mnist_dir, "experiment=pretrain", "logger=wandb")
    with pytest.raises(RuntimeError, match="strategy crashed"):
        run(cfg)
    assert wandb.run is None  # the next multirun job starts a fresh W&B run
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("experiment", "lambdas", "collapsed"),
    [("task_arithmetic", "[0.0]", True), ("ties", "[0.5,1.0]", False), ("negation", "[0.0]", True)],
)
def test_a_merge_that_picks_theta0_says_so(tmp_path, mnist_dir, shared_cache, caplog, experiment, lambdas, collapsed):
    cfg = make_cfg(
        tmp_path,
        mnist_dir,
        f"experiment={experiment}",
        "tasks=[[1],[2]]",
        *FAST,
        f"merge.lambdas={lambdas}",
        cache_dir=shared_cache,
    )
    metrics = run(cfg)
    assert metrics["merge/collapsed_to_theta0"] is collapsed
    assert ("collapsed to θ0" in caplog.text) is collapsed
    if collapsed and experiment != "negation":  # θ0 + 0·τ is θ0: the same predictions
        assert (metrics["test/acc"], metrics["val/acc"]) == (metrics["theta0/test/acc"], metrics["theta0/val/acc"])


def test_theta0_stops_at_its_target_even_in_the_first_epoch(tmp_path, mnist_dir, caplog):
    caplog.set_level("INFO")
    metrics = run(
        make_cfg(
            tmp_path,
            mnist_dir,
            "experiment=pretrain",
            "pretrain.epochs=5",
            "pretrain.target_val_acc=0.5",
            "data.batch_size=64",
        )
    )
    assert "θ0 reached the target validation accuracy 0.5 after 1 epoch(s)" in caplog.text
    assert metrics["theta0/val/acc"] >= 0.5 and metrics["theta0/target_val_acc"] == 0.5
