"""Issue 27, found by trying the project as a newcomer would: inputs nobody here wrote end in one line and exit status
2 before any work (nothing trained, nothing cached), and a log that is not a terminal holds no progress-bar redraws."""

import os
import pickle
import subprocess
import sys

import pytest

from conftest import ROOT, write_cifar_files
from music.data.sources import load_dataset


def train(tmp_path, *overrides, env=None, **kwargs) -> subprocess.CompletedProcess:
    """`python train.py` with the run, its logs and its cache under tmp_path."""
    environment = {k: v for k, v in (env or os.environ).items() if k != "HYDRA_FULL_ERROR"}
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
        *overrides,
    ]
    return subprocess.run(args, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300, **kwargs)


def refused(result: subprocess.CompletedProcess, tmp_path) -> str:
    """The one line a refused run printed, after checking it is one line, status 2, and nothing was run or cached."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()], result.stderr
    assert not (tmp_path / "logs" / "cache").exists() and not (tmp_path / "run" / "metrics.json").exists()
    log = tmp_path / "run" / "train.log"
    assert not log.exists() or "training " not in log.read_text()
    return result.stderr.strip()


class RunsCode:
    """What a crafted pickle can carry: unpickling it calls os.system, which creates a file."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_cifar_batch_that_would_run_code_is_refused_before_it_runs(tmp_path):
    data = write_cifar_files(tmp_path / "data")
    witness = tmp_path / "it_ran"
    batch = data / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({"data": RunsCode(f"touch {witness}"), "labels": [0]}, f, protocol=2)
    line = refused(train(tmp_path, "data=cifar10", f"data.data_dir={data}", "experiment=pretrain"), tmp_path)
    assert not witness.exists()
    assert line == (
        f"error: {batch}: not a CIFAR batch, refused before use (it names posix.system, which a CIFAR batch never holds)"
    )


@pytest.mark.parametrize("protocol", ["numpy 1", 2, 4, 5])  # the files' own (protocol 2), and pickle.dump's since
def test_cifar_batches_in_their_real_format_still_read(tmp_path, protocol):
    folder = write_cifar_files(tmp_path) / "cifar-10-batches-py"
    for path in folder.iterdir():  # written by the tests themselves: plain pickle may read them
        batch = pickle.dumps(pickle.loads(path.read_bytes()), protocol=2 if protocol == "numpy 1" else protocol)
        # the real files were written with numpy 1, whose arrays name numpy.core (numpy 2: numpy._core)
        path.write_bytes(batch.replace(b"numpy._core.", b"numpy.core.") if protocol == "numpy 1" else batch)
    splits = load_dataset("cifar10", folder, download=False)
    assert [tuple(splits[s][0].shape) for s in ("train", "test")] == [(200, 3, 32, 32), (50, 3, 32, 32)]
    assert splits["train"][1].bincount().tolist() == [20] * 10


@pytest.mark.parametrize("cache", ["/proc/nope", "/proc/nope/cache"])
def test_a_cache_folder_that_cannot_be_made_is_one_line_before_training(tmp_path, mnist_dir, cache):
    """Root passes every permission bit: the check creates a probe file there (it trained θ0 first, then failed)."""
    line = refused(train(tmp_path, f"data.data_dir={mnist_dir}", "experiment=pretrain", f"cache.dir={cache}"), tmp_path)
    assert line == (
        f"error: cache.dir='{cache}' is not allowed: a folder this process can create and write "
        "(cannot create /proc/nope: No such file or directory)"
    )


def test_the_writability_probe_leaves_nothing_behind(tmp_path):
    from music.atomic import unwritable

    (tmp_path / "here").mkdir()
    assert unwritable(tmp_path / "here" / "a" / "b") is None and unwritable(tmp_path / "here") is None
    assert list((tmp_path / "here").iterdir()) == []  # neither the probe file nor the folders made for it
    assert unwritable("/proc/self/nope") == "cannot create /proc/self/nope: No such file or directory"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+model.foo=1"],
            "error: model.foo=1 is not allowed: no code reads it (model's settings: channels_last, head, net)",
        ),
        (
            ["+finetune.bar=1"],
            "error: finetune.bar=1 is not allowed: no code reads it "
            "(finetune's settings: epochs, linearized, optimizer, optimizer_state, scheduler, train)",
        ),
        (["+data.baz=1"], "error: data.baz=1 is not allowed: no code reads it (data's settings: batch_size, "),
        (
            ["experiment=ties", "+merge.qux=1"],
            "error: merge.qux=1 is not allowed: no code reads it "
            "(merge's settings: batchnorm, include_head, keep_fraction, lambdas, method, num_samples)",
        ),
        (
            ["+trainer.foo=1"],
            "error: trainer.foo=1 is not allowed: no code reads it (trainer's settings: accelerator, ",
        ),
        (["+cache.x=1"], "error: cache.x=1 is not allowed: no code reads it (cache's settings: dir, enabled)"),
    ],
)
def test_a_key_no_code_reads_is_one_line_listing_the_groups_settings(tmp_path, mnist_dir, overrides, message):
    line = refused(train(tmp_path, f"data.data_dir={mnist_dir}", "experiment=merged", *overrides), tmp_path)
    assert line.startswith(message), line
