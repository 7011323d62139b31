"""Issue 27, found by trying the project as a newcomer would: inputs nobody here wrote end in one line and exit status
2 before any work (nothing trained, nothing cached), and a log that is not a terminal holds no progress-bar redraws."""

import os
import pickle
import re
import subprocess
import sys
import time

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
            "error: finetune.bar=1 is not allowed: no code reads it (finetune's settings: ",  # epochs, …: below
        ),
        (["+data.baz=1"], "error: data.baz=1 is not allowed: no code reads it (data's settings: batch_size, "),
        (
            ["experiment=ties", "+merge.qux=1"],
            "error: merge.qux=1 is not allowed: no code reads it (merge's settings: ",
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
    listed = line.split("settings: ", 1)[1].rstrip(")").split(", ")
    known = {"finetune": {"epochs", "optimizer", "scheduler", "train"}, "merge": {"keep_fraction", "lambdas", "method"}}
    assert known.get(overrides[-1][1:].split(".")[0], set()) <= set(listed), listed


def test_output_that_is_not_a_terminal_gets_one_plain_line_per_epoch_and_no_redraws(tmp_path, mnist_dir):
    """`python train.py … | tee log` or a Slurm log: the bars' carriage-return frames were most of the file."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=sequential",
        "tasks=[[1],[2]]",
        "pretrain.epochs=2",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
    ]
    # both streams into one pipe, as `2>&1 | tee` and Slurm do; bytes, since text mode would turn \r into \n
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=300)
    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:]
    assert output.count("\r") == 0 and "it/s" not in output
    epochs = re.findall(r"- (\S+ epoch \d/\d): loss=\d\.\d{4} val_acc=\d\.\d{4} \(\d+ batches, [\d.]+ s\)", output)
    assert epochs == [
        "pretrain epoch 1/2",
        "pretrain epoch 2/2",
        "sequential/stage_0 epoch 1/1",
        "sequential/stage_1 epoch 1/1",
    ]


def unreachable_hub(tmp_path) -> dict:
    """An empty Hugging Face cache and a hub that cannot be reached (a closed local port), on any machine."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return env | {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("model", "command"),
    [
        (["model=timm", "model.net.pretrained=true"], "timm.create_model('resnet18', pretrained=True)"),
        (["model=clip"], "open_clip.create_model('ViT-B-32', pretrained='openai')"),
    ],
)
def test_weights_out_of_reach_are_one_line_at_once_naming_the_cache_and_the_command(tmp_path, model, command):
    """huggingface_hub retried for about a minute (45 lines of warnings) before the one line."""
    line = refused(train(tmp_path, *model, "pretrain=none", env=unreachable_hub(tmp_path)), tmp_path)
    assert line.startswith("error: model.net.pretrained=") and command in line, line
    assert "not in the Hugging Face cache, and http://127.0.0.1:9 is out of reach" in line
    assert f"fill the Hugging Face cache {tmp_path / 'hf' / 'hub'} where the network is reachable" in line


LOOKUP = """
import sys, time
import open_clip, timm  # imported before the clock starts: only the weights' lookup is timed
from music.models.pretrained import _clip_model, _timm_backbone
start = time.perf_counter()
try:
    _timm_backbone("resnet18", True, None) if sys.argv[1] == "timm" else _clip_model("ViT-B-32", "openai")
except OSError as error:
    print(f"{time.perf_counter() - start:.1f}", error)
"""


@pytest.mark.parametrize("library", ["timm", "clip"])
def test_the_lookup_of_weights_out_of_reach_takes_seconds(tmp_path, library):
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP, library],
        capture_output=True,
        text=True,
        env=unreachable_hub(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip(), result.stderr[-2000:]
    seconds, error = result.stdout.split(" ", 1)
    assert float(seconds) < 10, result.stdout  # one try of the cache, one look at the hub; no retries
    assert error.startswith("not in the Hugging Face cache, and http://127.0.0.1:9 is out of reach"), error


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not json {", "not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
        ('{"embed_dim": 32}', "a JSON object with keys embed_dim, vision_cfg, text_cfg"),
    ],
)
def test_a_clip_model_config_that_is_not_one_is_refused_before_any_hub_access(tmp_path, content, why):
    config = tmp_path / "mine.json"
    config.write_text(content)
    start = time.perf_counter()
    result = train(tmp_path, "model=clip", f"model.net.model_config={config}", env=unreachable_hub(tmp_path))
    line = refused(result, tmp_path)
    assert line.startswith(f"error: model.net.model_config='{config}' is not allowed: "), line
    assert why in line or "an OpenCLIP model config .json file (" in line, line
    assert time.perf_counter() - start < 60  # no minute of hub retries (the process's own start takes seconds)


def test_the_trainers_arguments_are_read_without_importing_lightning():
    """The trainer group's keys are checked against Lightning's Trainer read from its source: the same names as its
    signature, and Lightning stays unimported (a run whose models come from the cache never pays its import)."""
    probe = (
        "import sys; from music.config import trainer_arguments; "
        "names = trainer_arguments('lightning.pytorch.Trainer'); print('lightning' in sys.modules); "
        "import inspect, lightning.pytorch; "
        "print(names == list(inspect.signature(lightning.pytorch.Trainer.__init__).parameters)[1:])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True"], result.stderr[-2000:]
