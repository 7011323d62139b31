"""Corrupt inputs, a cache that survives crashes and concurrency, and determinism."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from conftest import FAST, ROOT, make_cfg
from music.cache import ArtifactCache
from music.errors import ConfigError, Diverged
from music.models import CNN
from music.run import run

PY = sys.executable


def test_checkpoint_of_another_architecture_names_the_setting(tmp_path, mnist_dir):
    wrong = tmp_path / "cnn.safetensors"
    save_file(CNN(10, [1, 28, 28]).state_dict(), wrong)
    with pytest.raises(
        ConfigError,
        match=r"pretrain.checkpoint='.*cnn.safetensors' is not allowed: "
        r".* not a checkpoint of the configured MLP \(.*Missing key",
    ):
        run(make_cfg(tmp_path, mnist_dir, "experiment=pretrain", f"pretrain.checkpoint={wrong}"))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(
        ConfigError, match="pretrain.checkpoint='.*garbage.ckpt' is not allowed: .*: cannot read checkpoint"
    ):
        run(make_cfg(tmp_path, mnist_dir, "experiment=pretrain", f"pretrain.checkpoint={garbage}"))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name, content", [("notes.txt", "θ0 was trained last week\n"), ("weights.ckpt", "")])
def test_a_text_file_as_checkpoint_is_one_line_before_any_work(tmp_path, mnist_dir, name, content):
    """torch's weights-only unpickler raised IndexError (with a traceback) on a text file."""
    text = tmp_path / name
    text.write_text(content)
    result = subprocess.run(
        train_command(tmp_path, mnist_dir, tmp_path / "run", "experiment=merged", f"pretrain.checkpoint={text}"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert (
        result.stderr.startswith(f"error: pretrain.checkpoint='{text}' is not allowed: ")
        and "cannot read checkpoint" in result.stderr
    )
    assert not (tmp_path / "logs" / "cache").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_a_given_checkpoint_is_theta0(tmp_path, mnist_dir):
    trained = run(make_cfg(tmp_path / "a", mnist_dir, "experiment=pretrain", *FAST))
    [entry] = (tmp_path / "a" / "cache").glob("theta0-*.safetensors")
    reused = run(make_cfg(tmp_path / "b", mnist_dir, "experiment=pretrain", *FAST, f"pretrain.checkpoint={entry}"))
    assert reused["test/acc"] == trained["test/acc"]


def test_a_flipped_byte_in_a_cache_entry_is_caught_and_rebuilt(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    builds = []
    build = lambda: builds.append(1) or {"w": torch.arange(1000, dtype=torch.float32)}  # noqa: E731
    cache.get_or_build("theta0", {"k": 1}, build)
    path = cache.path("theta0", {"k": 1})
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor payload: the file still parses
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="music.cache"):
        tensors = cache.get_or_build("theta0", {"k": 1}, build)
    assert "checksum mismatch" in caplog.text and len(builds) == 2
    assert torch.equal(tensors["w"], torch.arange(1000, dtype=torch.float32))


BUILDER = """
import sys, time, torch
from pathlib import Path
from music.cache import ArtifactCache, tensors_digest
log = Path(sys.argv[2])
def build():
    with log.open("a") as f:
        f.write("built\\n")
    time.sleep(float(sys.argv[3]))
    return {"w": torch.arange(10.0)}
print(tensors_digest(ArtifactCache(sys.argv[1]).get_or_build("finetune", {"task": [1]}, build)))
"""


def test_two_processes_racing_for_one_entry_build_it_once(tmp_path):
    args = [PY, "-c", BUILDER, str(tmp_path / "cache"), str(tmp_path / "builds.log"), "1.5"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert outputs[0] == outputs[1] and len(outputs[0]) == 64
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


KILLED_WHILE_WRITING = """
import os, signal, sys, torch
import music.cache
def half_written(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"partial safetensors bytes")
    os.kill(os.getpid(), signal.SIGKILL)
music.cache.save_file = half_written
music.cache.ArtifactCache(sys.argv[1]).get_or_build("finetune", {"task": [1]}, lambda: {"w": torch.ones(3)})
"""


def test_sigkill_while_writing_leaves_no_entry_and_a_rerun_succeeds(tmp_path):
    killed = subprocess.run([PY, "-c", KILLED_WHILE_WRITING, str(tmp_path)], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert list(tmp_path.glob("*.safetensors")) == []  # only the lock and an orphan temporary file remain
    rerun = subprocess.run(
        [PY, "-c", BUILDER, str(tmp_path), str(tmp_path / "builds.log"), "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert list(tmp_path.glob(".*.tmp")) == []  # the killed writer's leftovers are swept under the lock


def train_command(tmp_path, mnist_dir, run_dir, *overrides):
    return [
        PY,
        str(ROOT / "train.py"),
        f"data.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={run_dir}",
        "logger=none",
        *overrides,
    ]


def test_sigkill_during_training_leaves_no_usable_entry_and_a_rerun_succeeds(tmp_path, mnist_dir):
    command = train_command(
        tmp_path,
        mnist_dir,
        tmp_path / "run",
        "experiment=individual",
        "tasks=[[1],[2]]",
        "pretrain.epochs=1",
        "finetune.epochs=400",
        "data.batch_size=32",
    )
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_file = tmp_path / "run" / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and "training individual/task_1" not in (
        log_file.read_text() if log_file.exists() else ""
    ):
        time.sleep(0.1)
    time.sleep(0.5)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    cache = tmp_path / "logs" / "cache"
    assert len(list(cache.glob("theta0-*.safetensors"))) == 1  # finished before the kill
    assert list(cache.glob("finetune-*.safetensors")) == []  # killed mid-training: nothing to reuse
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(list(cache.glob("finetune-*.safetensors"))) == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["experiment"] == "individual"


def test_same_command_same_seed_gives_identical_metrics_json(tmp_path, mnist_dir):
    outputs = []
    for attempt in ("first", "second"):  # separate caches: both runs train everything
        command = train_command(
            tmp_path / attempt,
            mnist_dir,
            tmp_path / attempt / "run",
            "experiment=ties",
            "tasks=[[1],[2,3]]",
            "seed=5",
            *FAST,
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append((tmp_path / attempt / "run" / "metrics.json").read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["seed"] == 5


def test_files_a_run_writes_honour_the_umask(tmp_path, mnist_dir):
    previous = os.umask(0o022)
    try:
        cfg = make_cfg(tmp_path, mnist_dir, "experiment=task_arithmetic", "tasks=[[1],[2]]", *FAST)
        run(cfg)
    finally:
        os.umask(previous)
    written = [
        tmp_path / "run" / "metrics.json",
        tmp_path / "run" / "timings.json",
        *(tmp_path / "cache").glob("*.safetensors"),
    ]
    assert len(written) == 5  # θ0 and two fine-tunes
    assert {oct(path.stat().st_mode & 0o777) for path in written} == {"0o644"}  # colleagues can read a shared cache


def test_a_diverged_loss_stops_the_run_and_nothing_is_cached_or_written(tmp_path, mnist_dir):
    """SGD at lr 1e12 drives the loss to NaN: the run stops at that stage naming it and the settings that feed it; θ0
    and the stages before it (finite) stay cached, the diverged stage is not, and there is no metrics.json."""
    cfg = make_cfg(
        tmp_path,
        mnist_dir,
        "experiment=sequential",
        *FAST,
        "tasks=[[0,1],[2,3]]",
        "data.batch_size=16",
        "finetune.optimizer._target_=torch.optim.SGD",
        "finetune.optimizer.lr=1e12",
    )
    with pytest.raises(Diverged) as stopped:
        run(cfg)
    message = str(stopped.value)
    stage = re.match(
        r"training sequential/stage_(\d) stopped: its loss became (nan|inf) in epoch 1; the settings that feed it: ",
        message,
    )
    assert stage, message
    assert (
        "finetune.optimizer=torch.optim.SGD(lr=1000000000000.0), finetune.scheduler=None, data.batch_size=16" in message
    )
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors"))
    assert entries == ["sequential"] * int(stage[1]) + ["theta0"]  # the stages before the diverged one, not it
    assert not list(tmp_path.rglob("metrics.json"))


def test_a_diverged_continual_stage_names_the_method(tmp_path, mnist_dir):
    cfg = make_cfg(
        tmp_path,
        mnist_dir,
        "experiment=ewc",
        *FAST,
        "tasks=[[0,1],[2,3]]",
        "data.batch_size=16",
        "continual.strength=1e300",
    )
    with pytest.raises(
        Diverged,
        match=r"training sequential/stage_1 stopped: its loss became (nan|inf) "
        r".*continual=music.continual.ewc.EWC\(strength=1e\+300",
    ):
        run(cfg)
    assert not list(tmp_path.rglob("metrics.json"))
