"""Bad input: one clear line naming the setting and what is allowed, exit status 2, nothing written."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, make_cfg
from music.config import validate
from music.errors import ConfigError
from music.strategies import STRATEGIES

BAD = [
    ("tasks=[[0],[12]]", "tasks[1]=[12]", "class ids are integers in 0..9"),
    ("tasks=[[0],[-1]]", "tasks[1]=[-1]", "class ids are integers in 0..9"),
    ("tasks=[[0],[]]", "tasks[1]=[]", "non-empty list of classes"),
    ("tasks=[]", "tasks=[]", "non-empty list of tasks"),
    ("tasks=[[1,2],[2,1]]", "tasks[1]=[2, 1]", "each task once"),
    ("tasks=[[3,3]]", "tasks[0]=[3, 3]", "each class at most once"),
    ("merge.lambdas=[]", "merge.lambdas=[]", "non-empty list of finite numbers"),
    ("merge.lambdas=[0.1,nan]", "merge.lambdas=[0.1, nan]", "finite numbers"),
    ("data.pretrain.fraction=1.5", "data.pretrain.fraction=1.5", "(0, 1]"),
    ("data.pretrain.num_samples=100", "data.pretrain.num_samples=100", "exactly one of"),
    ("data.pretrain.classes=[10]", "data.pretrain.classes=[10]", "0..9"),
    ("data.val_fraction=1", "data.val_fraction=1", "[0, 1)"),
    ("experiment=ties data.val_fraction=0", "data.val_fraction=0", "in (0, 1) with experiment=ties"),
    ("experiment=negation data.val_fraction=0", "data.val_fraction=0", "in (0, 1) with experiment=negation"),
    ("pretrain.target_val_acc=0.9 data.val_fraction=0", "data.val_fraction=0", "with pretrain.target_val_acc"),
    ("finetune.epochs=0", "finetune.epochs=0", "an integer in [1, inf)"),
    ("pretrain.epochs=0", "pretrain.epochs=0", "an integer in [1, inf)"),
    ("data.batch_size=0", "data.batch_size=0", "an integer in [1, inf)"),
    ("strategy=magic", "strategy='magic'", "one of pretrain, merged"),
    ("data.name=cifar", "data.name='cifar'", "one of mnist, fashion_mnist, kmnist"),
    ("experiment=ties merge.keep_fraction=[0.2,1.5]", "merge.keep_fraction=[0.2, 1.5]", "numbers in (0, 1]"),
    ("experiment=ties merge.keep_fraction=[0.0]", "merge.keep_fraction=[0.0]", "(0, 1]"),
    ("experiment=dare merge.p=[1.0]", "merge.p=[1.0]", "numbers in [0, 1)"),
    ("experiment=regmean merge.alpha=[-0.1]", "merge.alpha=[-0.1]", "numbers in [0, 1]"),
    (
        "experiment=tangent merge=fisher",
        "merge.method='fisher'",
        "a method without statistics of the network with finetune.linearized=true",
    ),
    ("experiment=dare merge.base=average", "merge.base='average'", "one of task_arithmetic, ties"),
    ("experiment=regmean merge.alpha=[]", "merge.alpha=[]", "non-empty list"),
    (
        "experiment=task_arithmetic merge.method=soup",
        "merge.method='soup'",
        "one of task_arithmetic, average, ties, dare, fisher, regmean, tsv",
    ),
    ("experiment=fisher merge.num_samples=0", "merge.num_samples=0", "an integer in [1, inf)"),
    ("experiment=negation negation.target=[]", "negation.target=[]", "non-empty list of classes"),
    ("experiment=negation negation.control_floor=2", "negation.control_floor=2", "(0, 1]"),
    ("model.head=per_task tasks=[[0,1],[2]]", "tasks[1]=[2]", "needs ≥ 2 classes"),
    ("model.head=per_task tasks=[[0,1],[1,2]]", "tasks=[[0, 1], [1, 2]]", "must not share classes"),
    ("model.head=both", "model.head='both'", "one of shared, per_task"),
    ("experiment=sequential align=ft_classifier", "align='ft_classifier'", "none unless the experiment merges"),
    ("experiment=tangent align=procrustes", "align='procrustes'", "finetune.linearized=true"),
    ("experiment=ties align=ft_classifier align.lr=0", "align.lr=0", "a number in (0, inf)"),
    ("experiment=ties align=procrustes align.subspace_dim=0", "align.subspace_dim=0", "an integer in [1, inf) or null"),
    # declared settings (music.settings), checked before any work
    (
        "experiment=lwf continual.alpha=-0.5",
        "continual.alpha=-0.5 is not allowed: a number in [0, inf)",
        "a number in [0, inf)",
    ),
    (
        "experiment=ewc continual.strength=-1",
        "continual.strength=-1 is not allowed: a number in [0, inf)",
        "a number in [0, inf)",
    ),
    (
        "experiment=ewc continual.decay=1.5",
        "continual.decay=1.5 is not allowed: a number in [0, 1]",
        "a number in [0, 1]",
    ),
    (
        "experiment=ewc continual.num_samples=0",
        "continual.num_samples=0 is not allowed: an integer in [1, inf)",
        "an integer in [1, inf)",
    ),
    (
        "experiment=replay continual.balanced=maybe",
        "continual.balanced='maybe' is not allowed: true or false",
        "true or false",
    ),
    (
        "experiment=replay continual.memory_size=-1",
        "continual.memory_size=-1 is not allowed: an integer in [1, inf)",
        "an integer in [1, inf)",
    ),
    (
        "experiment=agem continual.sample_size=0.5",
        "continual.sample_size=0.5 is not allowed: an integer in [1, inf)",
        "an integer in [1, inf)",
    ),
    (
        "model=cnn model.net.channels=[32,-64]",
        "model.net.channels=[32, -64] is not allowed: a list of integers in [1, inf)",
        "a list of integers in [1, inf)",
    ),
    ("model=cnn model.net.batchnorm=2", "model.net.batchnorm=2 is not allowed: true or false", "true or false"),
    (
        "model=resnet18 model.net.width=0",
        "model.net.width=0 is not allowed: an integer in [1, inf)",
        "an integer in [1, inf)",
    ),
    (
        "model=vit_small model.net.heads=0",
        "model.net.heads=0 is not allowed: an integer in [1, inf)",
        "an integer in [1, inf)",
    ),
    (
        "finetune.optimizer_state=keep",
        "finetune.optimizer_state='keep' is not allowed: one of fresh, carry",
        "one of fresh, carry",
    ),
    (
        "data=cifar10 augment.crop_padding=-1",
        "augment.crop_padding=-1 is not allowed: an integer in [0, 64]",
        "an integer in [0, 64]",
    ),
    ("data=cifar10 augment.flip=sometimes", "augment.flip='sometimes' is not allowed: true or false", "true or false"),
]


@pytest.mark.parametrize(("override", "setting", "allowed"), BAD)
def test_bad_config_names_setting_and_what_is_allowed(tmp_path, override, setting, allowed):
    cfg = make_cfg(tmp_path, tmp_path, *override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg, STRATEGIES)
    assert str(err.value).startswith(setting) and allowed in str(err.value)
    assert "\n" not in str(err.value)


def test_default_config_is_valid(tmp_path):
    validate(make_cfg(tmp_path, tmp_path), STRATEGIES)


def run_train(tmp_path, *overrides):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
        *overrides,
    ]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tasks=[[0],[11]]"], "error: tasks[1]=[11] is not allowed: class ids are integers in 0..9"),
        (["merge.lambdas=[]"], "error: merge.lambdas=[] is not allowed"),
        (["experiment=ties", "merge.keep_fraction=[2]"], "error: merge.keep_fraction=[2] is not allowed"),
        (["pretrain.checkpoint=/no/such.ckpt"], "error: pretrain.checkpoint='/no/such.ckpt' is not allowed"),
        # no files and no download: the message says where to put them
        (["data.download=false"], "Put its IDX files (plain or .gz) — train-images-idx3-ubyte"),
        # what Hydra refuses: one line too, with the available names
        (
            ["experiment=foo"],
            "error: In 'train.yaml': Could not find 'experiment/foo': one of adamerging, adamerging_taskwise, agem, "
            "agem_mammoth, average,",
        ),
        (
            ["data=imagenet"],
            "Could not find 'data/imagenet': one of cifar10, cifar100, fashion_mnist, image_folder, kmnist, mnist, svhn",
        ),
        (["trainer.max_epoch=5"], "error: Could not override 'trainer.max_epoch': Key 'max_epoch' is not in struct"),
        (["seed=[1"], "error: "),
        # what torch refuses, named by its key
        (
            ["finetune.optimizer.lr=-1"],
            "error: finetune.optimizer.lr=-1 is not allowed: torch.optim.Adam refuses it: Invalid learning rate: -1",
        ),
        (
            ["+finetune.optimizer.betas=[2,0.9]"],
            "error: finetune.optimizer.betas=[2, 0.9] is not allowed: torch.optim.Adam refuses it: "
            "Invalid beta parameter at index 0",
        ),
        (
            ["+pretrain.optimizer.momentum=0.9"],
            "error: pretrain.optimizer.momentum=0.9 is not allowed: torch.optim.Adam refuses it",
        ),
        (
            ["finetune.optimizer._target_=torch.optim.Adamx"],
            "error: finetune.optimizer._target_='torch.optim.Adamx' is not allowed: an importable class",
        ),
        (
            [
                "+finetune.scheduler._target_=torch.optim.lr_scheduler.StepLR",
                "+finetune.scheduler._partial_=true",
                "+finetune.scheduler.step_size=1",
                "+finetune.scheduler.last_epoch=x",
            ],
            "error: finetune.scheduler.last_epoch='x' is not allowed: an integer",  # StepLR's signature declares it
        ),
        (
            [
                "+finetune.scheduler._target_=torch.optim.lr_scheduler.StepLR",
                "+finetune.scheduler._partial_=true",
                "+finetune.scheduler.step_size=1",
                "+finetune.scheduler.gamma=[1]",
            ],
            "error: finetune.scheduler.gamma=[1] is not allowed: a number",
        ),
        (["seed=abc"], "error: seed='abc' is not allowed: an integer in 0..4294967295"),
        (["seed=-1"], "error: seed=-1 is not allowed"),
        # one source of truth for the tasks and the seed
        (["data.tasks=[[1]]"], "error: Could not override 'data.tasks': Key 'tasks' is not in struct"),
        (
            ["+data.tasks=[[1]]"],
            "error: data.tasks=[[1]] is not allowed: not set in the data group: the root setting `tasks`",
        ),
        (["+data.seed=3"], "error: data.seed=3 is not allowed"),
        # Lightning-hydra-template's habit: the epochs are the project's budget, not the Trainer's
        (
            ["trainer.max_epochs=5"],
            "error: trainer.max_epochs=5 is not allowed: set pretrain.epochs (θ0) or finetune.epochs (every fine-tune) instead",
        ),
        (
            ["+trainer.max_epochs=5"],
            "error: trainer.max_epochs=5 is not allowed: set pretrain.epochs",
        ),
        (
            [
                "+finetune.scheduler._target_=torch.optim.lr_scheduler.OneCycleLR",
                "+finetune.scheduler._partial_=true",
                "+finetune.scheduler.max_lr=0.1",
                "+finetune.scheduler.total_steps=-5",
            ],
            "error: finetune.scheduler={",
        ),  # no single key is wrong alone: the whole node is named
        (
            ["+trainer.max_steps=100"],
            "error: trainer.max_steps=100 is not allowed: set pretrain.epochs (θ0) or finetune.epochs (every fine-tune) instead, "
            "trainer.max_steps stays null",
        ),
        (
            ["experiment=adamerging", "merge.steps=-1"],
            "error: merge.steps=-1 is not allowed: an integer in [1, 100000]",
        ),
        (["experiment=consensus", "merge.k=abc"], "error: merge.k='abc' is not allowed: an integer in [1, 1000]"),
        (
            ["experiment=ft_classifier", "align.sampling=stratified"],
            "error: align.sampling='stratified' is not allowed: one of balanced, random",
        ),
        (["pretrain.target_val_acc=1.5"], "error: pretrain.target_val_acc=1.5 is not allowed: a number in (0, 1]"),
        # each continual method's and network's settings, as its signature declares them; more below, in process
        (
            ["experiment=lwf", "continual.temperature=0"],
            "error: continual.temperature=0 is not allowed: a number in (0, inf)",
        ),
        (
            ["model.net.hidden=[256,0]"],
            "error: model.net.hidden=[256, 0] is not allowed: a list of integers in [1, inf)",
        ),
        # a cache that cannot be written: refused before θ0 trains, not after
        (
            ["cache.dir=/dev/null/cache"],
            "error: cache.dir='/dev/null/cache' is not allowed: a folder this process can create and write "
            "(/dev/null is not a folder)",
        ),
    ],
)
def test_cli_refuses_a_bad_setting_with_one_line_and_status_2(tmp_path, overrides, message):
    result = run_train(tmp_path, f"data.data_dir={tmp_path / 'nodata'}", *overrides)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]  # one line
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "logs" / "cache").exists()


def test_a_setting_lightning_refuses_is_one_line_too(tmp_path, mnist_dir):
    result = run_train(tmp_path, f"data.data_dir={mnist_dir}", "experiment=pretrain", "trainer.precision=abc")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(
        "error: trainer.precision='abc' is not allowed: lightning.pytorch.Trainer refuses it: Precision 'abc' is invalid"
    )
    assert "\n" not in result.stderr.strip() and "Traceback" not in result.stderr + result.stdout
    assert not list((tmp_path / "run").glob("metrics.json"))


def test_more_shots_than_a_task_has_is_rejected_before_training(tmp_path, mnist_dir):
    from music.run import run

    # 60 training images per class: 30 go to θ0, 3 of the other 30 to validation, 27 remain per class
    cfg = make_cfg(
        tmp_path, mnist_dir, "experiment=ties", "align=ft_classifier", "align.shots_per_class=28", "tasks=[[0,1],[2,3]]"
    )
    with pytest.raises(ConfigError, match=r"align.shots_per_class=28 is not allowed: at most 27"):
        run(cfg)
    assert not (tmp_path / "cache").exists()
