"""What a run prints: one line per stage (a progress bar while training), nothing twice, the summary last."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import FAST, ROOT, make_cfg
from music.run import run
from music.tracking import summary_lines

PREFIX = re.compile(r"^(\x1b\[[0-9;]*m|\[)*\d{4}-\d\d-\d\d [\d:,]+.*? - ")  # colorlog's "[time][logger][LEVEL] - "
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def screen_lines(output: str) -> list[str]:
    """The lines a terminal ends up showing: for each line, what its last carriage return left."""
    return [ANSI.sub("", line.split("\r")[-1]).rstrip() for line in output.split("\n") if line.split("\r")[-1].strip()]


def on_terminal(command: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run `command` with stdout and stderr on a pseudo-terminal, as from an interactive shell (bars are drawn only
    there): its exit status and everything it printed, line ends as "\n"."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # rows, columns: a wide window
    job = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, cwd=cwd)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the job closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return job.wait(timeout=60), b"".join(chunks).replace(b"\r\n", b"\n")  # the terminal's own line ends


def test_make_train_console_is_short_with_a_bar_per_stage_and_the_summary_last(tmp_path, fashion_dir):
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=sequential",
        "data=fashion_mnist",
        f"data.data_dir={fashion_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]  # make train's command, W&B (offline) included, cold cache
    returncode, printed = on_terminal(command, tmp_path)  # a terminal: the bars are drawn (a pipe gets plain lines)
    output = printed.decode()
    assert returncode == 0, output[-3000:]
    lines = screen_lines(output)
    assert len(lines) <= 25, "\n".join(lines)
    messages = [PREFIX.sub("", line) for line in lines]
    assert len(set(messages)) == len(messages), "\n".join(messages)  # nothing printed twice
    bars = [m for m in messages if re.match(r"^(pretrain|sequential/stage_\d) epoch \d+/\d+: 100%\|", m)]
    assert [b.split(" epoch")[0] for b in bars] == ["pretrain"] + [f"sequential/stage_{i}" for i in range(10)]
    assert all("loss=" in b and "val_acc=" in b for b in bars)
    for noise in ("GPU available", "litlogger", "log_every_n_steps", "anonymous", "wandb:"):
        assert noise not in output
    # the summary comes last, and says where W&B's files are
    assert messages[-5].startswith("sequential · fashion_mnist · 10 tasks · seed 0")
    assert re.match(r"^  test/acc 0\.\d{4} · val/acc 0\.\d{4} · θ0 test/acc 0\.\d{4}$", messages[-4])
    assert re.match(r"^  forgetting 0\.\d{4} · bwt -0\.\d{4}$", messages[-3])
    assert messages[-2].endswith("metrics.json") and messages[-1].startswith(
        "  W&B offline run: upload it with `wandb sync "
    )


@pytest.mark.parametrize("off", ["trainer.enable_progress_bar=false", "callbacks=none"])
def test_without_progress_bars_each_stage_logs_one_line(tmp_path, mnist_dir, caplog, capsys, off):
    caplog.set_level("INFO")
    run(make_cfg(tmp_path, mnist_dir, "experiment=sequential", "tasks=[[1],[2]]", off, *FAST))
    assert "it/s" not in capsys.readouterr().err  # no bar at all, Lightning's own default one included
    assert [r.getMessage().split(" on ")[0] for r in caplog.records if r.getMessage().startswith("training ")] == [
        "training pretrain",
        "training sequential/stage_0",
        "training sequential/stage_1",
    ]


def test_summary_lines_give_the_headline_figures_of_each_kind_of_run(tmp_path):
    merge = {
        "experiment": "task_arithmetic+ft_classifier",
        "strategy": "merge",
        "dataset": "mnist",
        "tasks": [[1]],
        "seed": 3,
        "test/acc": 0.5,
        "val/acc": 0.25,
        "theta0/test/acc": 0.125,
        "lambda": 0.0,
        "merge/collapsed_to_theta0": True,
        "test/acc_before_align": 0.375,
        "align/method": "ft_classifier",
        "theta0/target_val_acc": None,
    }
    assert summary_lines(merge, Path("out")) == [
        "task_arithmetic+ft_classifier · mnist · 1 task · seed 3",
        "  test/acc 0.5000 · val/acc 0.2500 · θ0 test/acc 0.1250",
        "  λ 0 picked on validation (= θ0: the merge collapsed to θ0)",
        "  alignment ft_classifier: test/acc 0.3750 → 0.5000",
        "  → out/metrics.json",
    ]
    pretrain = {
        "experiment": "pretrain",
        "strategy": "pretrain",
        "dataset": "mnist",
        "tasks": [[1], [2]],
        "seed": 0,
        "test/acc": 0.9,
        "val/acc": 0.92,
        "theta0/test/acc": 0.9,
        "theta0/val/acc": 0.92,
        "theta0/target_val_acc": 0.917,
    }
    assert summary_lines(pretrain, Path("out"))[1:3] == [
        "  test/acc 0.9000 · val/acc 0.9200",
        "  θ0 val/acc 0.9200 for a target of 0.917",
    ]


@pytest.mark.parametrize(
    ("debug", "expected"), [("limit", {"limit_train_batches": 5, "limit_val_batches": 1}), ("profiler", {})]
)
def test_debug_configs_run(tmp_path, mnist_dir, debug, expected):
    cfg = make_cfg(tmp_path, mnist_dir, "experiment=sequential", "tasks=[[1],[2]]", f"debug={debug}")
    assert not cfg.cache.enabled and all(cfg.trainer[k] == v for k, v in expected.items())
    metrics = run(cfg)
    assert len(metrics["acc_matrix"]) == 2
    if debug == "profiler":  # one profile per training stage, in the run folder
        assert (tmp_path / "run" / "fit-profile.txt").read_text().count("Profiler Report") == 3
