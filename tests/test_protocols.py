"""Papers' protocols (issue 26): nothing held out for validation where nothing is searched, Mammoth's ER and A-GEM
memories, memory draws seeded by the run, task-IL beside class-IL from one run, "classes seen so far" training and
van de Ven's LwF, the paper presets."""

import pytest
import torch

from conftest import FAST, make_cfg

# ---------- data.val_fraction=0


def test_nothing_held_out_trains_on_every_image_and_reports_no_validation(tmp_path, mnist_dir):
    from music.run import load_data, run

    overrides = ["experiment=sequential", *FAST, "tasks=[[0,1],[2,3]]", "pretrain=none", "data.val_fraction=0"]
    cfg = make_cfg(tmp_path, mnist_dir, *overrides)
    split = load_data(cfg).split
    assert len(split.val) == 0
    assert len(split.union_train) == 4 * 60  # every training image of the tasks' classes (60 per class)
    metrics = run(cfg)
    assert metrics["val/acc"] is None and metrics["test/acc"] is not None


# ---------- ER (Mammoth's stream memory) beside replay (end-of-stage memory); A-GEM's Mammoth memory; seeds


def tagged(ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels all equal their id, so a memory can be traced back to the stream it came from."""
    return ids.float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone(), labels.long()


def drive_stage(method, stage: int, ids: torch.Tensor, labels: torch.Tensor, batch: int, epochs: int = 1) -> list[int]:
    """The hooks the Classifier and the sequential strategy call for one stage; the sizes of the batches trained on."""
    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    method.begin_stage(stage, net)
    sizes = []
    for _ in range(epochs):
        for chunk in torch.arange(len(ids)).split(batch):
            x, y = method.batch(*tagged(ids[chunk], labels[chunk]))
            sizes.append(len(x))
    images, labels_ = tagged(ids, labels)
    method.end_stage(stage, net, images, labels_, torch.Generator().manual_seed(stage))
    return sizes


def test_er_replays_from_the_first_step_a_stream_memory_where_replay_waits_for_the_stage_to_end():
    from music.continual.er import ER
    from music.continual.replay import Replay

    ids, labels = torch.arange(100), torch.arange(100) % 2
    er, replay = ER(memory_size=30), Replay(memory_size=30)
    er_sizes = drive_stage(er, 0, ids, labels, batch=10, epochs=2)
    replay_sizes = drive_stage(replay, 0, ids, labels, batch=10, epochs=2)
    # stage 0: ER appends a memory batch from the second step on (its own task's images); replay appends nothing
    assert er_sizes == [10] + [20] * 19 and replay_sizes == [10] * 20
    # after stage 0 both hold 30 of the stage's images; ER's reservoir ran over the stream of 2 epochs (200 examples)
    assert er.buffer.seen == 200 and len(er.buffer) == 30 and replay.kept() == 30
    er_ids = er.buffer.fields["images"][:, 0, 0, 0].long()
    replay_ids = replay.images[:, 0, 0, 0].long()
    assert set(er_ids.tolist()) <= set(range(100)) and set(replay_ids.tolist()) <= set(range(100))
    assert sorted(er_ids.tolist()) != sorted(replay_ids.tolist())  # two different draws
    # stage 1: ER keeps offering every example; replay's memory changes only at the stage's end
    drive_stage(er, 1, ids + 100, labels + 2, batch=10)
    assert er.buffer.seen == 300


def test_a_memory_follows_the_runs_seed():
    from music.continual.er import ER

    def memory(seed: int) -> list[int]:
        method = ER(memory_size=20)
        method.seed = seed
        drive_stage(method, 0, torch.arange(200), torch.arange(200) % 2, batch=25)
        return method.buffer.fields["images"][:, 0, 0, 0].long().tolist()

    assert memory(0) == memory(0) and memory(0) != memory(1)


def test_agem_with_mammoths_memory_keeps_a_fixed_share_per_task_and_draws_from_all_of_it():
    from music.continual.agem import AGEM

    agem = AGEM(memory_size=50, sample_size=32, memory="mammoth")
    agem.tasks = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # 50 // 5 = 10 per stage
    for stage in range(3):
        drive_stage(agem, stage, torch.arange(100) + 100 * stage, torch.arange(100) % 2 + 2 * stage, batch=50)
        assert [len(lb) for _, lb in agem.groups] == [10] * (stage + 1)  # earlier stages' shares are kept whole
    x, y = agem.reference_batch()
    assert len(y) == 30 and len(set(x[:, 0, 0, 0].tolist())) == 30  # min(32, 30) without replacement, from all
    balanced = AGEM(memory_size=50, sample_size=32)
    for stage in range(3):
        drive_stage(balanced, stage, torch.arange(100) + 100 * stage, torch.arange(100) % 2 + 2 * stage, batch=50)
    assert [len(lb) for _, lb in balanced.groups] == [17, 17, 16]  # today's: the budget split over the stages seen


def test_er_runs_as_an_experiment_and_reports_its_memory(tmp_path, mnist_dir):
    from music.run import run

    common = [*FAST, "tasks=[[0,1],[2,3]]", "pretrain=none", "continual.memory_size=50", "data.batch_size=32"]
    er = run(make_cfg(tmp_path / "er", mnist_dir, "experiment=er", *common))
    again = run(make_cfg(tmp_path / "again", mnist_dir, "experiment=er", *common, "cache.enabled=false"))
    other = run(make_cfg(tmp_path / "seed1", mnist_dir, "experiment=er", *common, "seed=1"))
    assert er["continual/method"] == "ER" and er["continual/kept"] == 50
    assert er["acc_matrix"] == again["acc_matrix"] and er["acc_matrix"] != other["acc_matrix"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=er", "continual.memory_size=0"], "continual.memory_size=0 is not allowed"),
        (["experiment=er", "continual.minibatch_size=-1"], "continual.minibatch_size=-1 is not allowed"),
        (["experiment=agem", "continual.memory=fifo"], "continual.memory='fifo' is not allowed"),
    ],
)
def test_new_settings_are_refused_in_one_line(tmp_path, overrides, message):
    from music.config import validate
    from music.errors import ConfigError
    from music.strategies import STRATEGIES

    with pytest.raises(ConfigError) as err:
        validate(make_cfg(tmp_path, tmp_path, *overrides), STRATEGIES)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# ---------- task-IL beside class-IL from one run


def test_task_il_figures_are_each_images_argmax_over_its_own_tasks_classes():
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from torch import nn

    from music.evaluation import allowed_classes
    from music.experiment.evaluation import Evaluation

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    tasks = [[0, 1], [2, 3, 4]]  # class 5 is in no task
    images, labels = torch.randn(300, 3, 4), torch.randint(0, 6, (300,))
    ctx = SimpleNamespace(
        cfg=OmegaConf.create({"data": {"eval_batch_size": 64}}),
        allowed=allowed_classes(tasks, "shared", 6),
        eval_sets={"val": (images[:0], labels[:0]), "test": (images, labels)},
        tasks=tasks,
        num_classes=6,
        head="shared",
        device=torch.device("cpu"),
    )
    metrics = Evaluation(ctx, artifacts=None).evaluate(net)
    with torch.no_grad():
        logits = net(images)
    # by hand: each image of a task's classes scored over that task's classes only
    correct = {i: [] for i in range(len(tasks))}
    for logit, label in zip(logits, labels.tolist()):
        for i, task in enumerate(tasks):
            if label in task:
                correct[i].append(task[int(logit[task].argmax())] == label)
    everything = correct[0] + correct[1]
    assert metrics["test/acc_task_il"] == pytest.approx(sum(everything) / len(everything), abs=1e-12)
    for i in range(len(tasks)):
        assert metrics[f"test/acc_task_il_{i}"] == pytest.approx(sum(correct[i]) / len(correct[i]), abs=1e-12)
    class_il = (logits.argmax(1) == labels).float().mean().item()
    assert metrics["test/acc"] == pytest.approx(class_il) and metrics["test/acc_task_il"] > metrics["test/acc"]


def test_a_sequential_class_il_run_reports_task_il_and_its_forgetting(tmp_path, mnist_dir):
    from music.evaluation import forgetting
    from music.run import run

    metrics = run(make_cfg(tmp_path, mnist_dir, "experiment=sequential", *FAST, "tasks=[[0,1],[2,3]]", "pretrain=none"))
    matrix = metrics["acc_matrix_task_il"]
    assert matrix[-1] == [metrics["test/acc_task_il_0"], metrics["test/acc_task_il_1"]]
    assert metrics["forgetting_task_il"] == forgetting(matrix)
    assert metrics["test/acc_task_il"] >= metrics["test/acc"]  # two classes to choose from, not four
    per_task = run(
        make_cfg(
            tmp_path / "p", mnist_dir, "experiment=sequential", *FAST, "tasks=[[0,1],[2,3]]", "model.head=per_task"
        )
    )
    assert "test/acc_task_il" not in per_task  # its own figures are task-IL already


def test_a_merge_reports_the_picked_models_task_il(tmp_path, mnist_dir):
    from music.run import run

    metrics = run(make_cfg(tmp_path, mnist_dir, "experiment=task_arithmetic", *FAST, "tasks=[[0,1],[2,3]]"))
    assert 0 <= metrics["test/acc_task_il"] <= 1 and metrics["test/acc_task_il_1"] is not None


# ---------- "classes seen so far" training; LwF as van de Ven's code runs it


def test_active_classes_seen_gives_the_unseen_classes_no_gradient():
    from torch import nn

    from music.models.classifier import Classifier

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    module = Classifier(net, optimizer=torch.optim.SGD, num_classes=6)
    module.active = torch.tensor([True, True, True, True, False, False])  # tasks [0,1] and [2,3] seen so far
    module.on_train_epoch_start()
    x, y = torch.randn(16, 3, 4), torch.randint(0, 4, (16,))
    module.training_step((x, y), 0).backward()
    grad = net[1].weight.grad
    assert grad[4:].abs().sum() == 0 and grad[:4].abs().sum() > 0
    # the loss is the cross-entropy over the four active classes
    module.on_train_epoch_start()
    expected = torch.nn.functional.cross_entropy(net(x)[:, :4], y)
    assert module.training_step((x, y), 0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_lwf_van_de_ven_targets_by_hand():
    from torch import nn

    from music.continual.lwf import LwF

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits

    torch.manual_seed(0)
    student, teacher = torch.randn(5, 8), torch.randn(5, 8)
    lwf = LwF(alpha=1.0, temperature=2.0, targets="van_de_ven")
    lwf.tasks = [[0, 1], [2, 3], [4, 5], [6, 7]]
    lwf.seen, lwf.stage, lwf.teacher = {0, 1, 2, 3}, 2, Fixed(teacher)  # the third stage: tasks 0 and 1 seen
    got = lwf.penalty(None, torch.zeros(5, 1), torch.zeros(5, dtype=torch.long), student)
    t = 2.0
    target = torch.cat([torch.softmax(teacher[:, :4] / t, 1), torch.zeros(5, 2)], 1)  # zeros for classes 4, 5
    log_student = torch.log_softmax(student[:, :6] / t, 1)  # every class seen so far, the current task's included
    by_hand = (-(target * log_student)).mean() * t**2 * (1 - 1 / 3)
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-6)
    y = torch.tensor([4, 5, 4, 5, 4])
    assert lwf.task_loss(student, y).item() == pytest.approx(torch.nn.functional.cross_entropy(student, y).item() / 3)
    plain = LwF(alpha=1.0, temperature=2.0)
    plain.tasks, plain.seen, plain.stage, plain.teacher = lwf.tasks, {0, 1, 2, 3}, 2, Fixed(teacher)
    assert plain.task_loss(student, y).item() == pytest.approx(torch.nn.functional.cross_entropy(student, y).item())


def test_lwf_and_active_classes_refuse_bad_values(tmp_path):
    from music.config import validate
    from music.errors import ConfigError
    from music.strategies import STRATEGIES

    for overrides, message in [
        (["experiment=lwf", "continual.targets=hsu"], "continual.targets='hsu' is not allowed"),
        (["finetune.active_classes=some"], "finetune.active_classes='some' is not allowed"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate(make_cfg(tmp_path, tmp_path, *overrides), STRATEGIES)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


# ---------- presets that are the papers' protocols


@pytest.mark.parametrize(
    ("experiment", "lr", "continual"),
    [
        ("er_mammoth", 0.1, {"_target_": "music.continual.er.ER", "memory_size": 500, "minibatch_size": 128}),
        (
            "agem_mammoth",
            0.03,
            {"_target_": "music.continual.agem.AGEM", "memory_size": 500, "sample_size": 128, "memory": "mammoth"},
        ),
        ("der", 0.03, None),
        ("sequential", 0.1, {}),
    ],
)
def test_seq_cifar10_mammoth_composes_to_mammoths_protocol(tmp_path, experiment, lr, continual):
    from omegaconf import OmegaConf

    cfg = make_cfg(tmp_path, tmp_path, "sweep=seq_cifar10_mammoth", f"experiment={experiment}")
    assert cfg.data.val_fraction == 0 and cfg.data.batch_size == 32 and cfg.finetune.epochs == 50
    assert cfg.finetune.optimizer._target_ == "torch.optim.SGD" and cfg.finetune.optimizer.lr == lr
    assert cfg.model.head == "shared" and len(cfg.tasks) == 5
    if continual is not None:
        assert OmegaConf.to_container(cfg.continual) == continual


def test_seq_cifar10_mammoth_runs_a_stage_on_cifar_files_with_task_il(tmp_path, cifar10_dir):
    from music.run import run

    cfg = make_cfg(
        tmp_path,
        cifar10_dir,
        "sweep=seq_cifar10_mammoth",
        "experiment=er_mammoth",
        "tasks=[[0,1]]",
        "finetune.epochs=1",
        "continual.memory_size=10",
    )
    metrics = run(cfg)
    assert metrics["val/acc"] is None and metrics["continual/method"] == "ER" and metrics["continual/kept"] == 10
    assert metrics["test/acc_task_il"] is not None and metrics["acc_matrix_task_il"] == [[metrics["test/acc_task_il"]]]


@pytest.mark.parametrize("preset", ["hsu_split_mnist", "music_paper"])
def test_paper_presets_carry_their_reference_figures(tmp_path, preset):
    from music.config import validate
    from music.strategies import STRATEGIES

    cfg = make_cfg(tmp_path, tmp_path, f"sweep={preset}")
    validate(cfg, STRATEGIES)
    figures = cfg.reference.figures
    assert all(0 <= v <= 1 for row in figures.values() for v in row.values())
    if preset == "hsu_split_mnist":
        assert figures.lwf["test/acc"] == 0.2417 and cfg.data.val_fraction == 0 and cfg.model.net.hidden == [400, 400]
        assert cfg.finetune.epochs == 4 and cfg.finetune.optimizer.lr == 1e-3 and cfg.data.batch_size == 128
    else:
        assert dict(figures.theta0) == {"test/acc": 0.917} and figures.sequential["test/acc"] == 0.88


# ---------- a continual method's own setting in a multirun over experiments


def test_a_multirun_over_experiments_takes_a_methods_own_setting_with_double_plus(tmp_path, mnist_dir):
    import json
    import subprocess
    import sys

    from conftest import ROOT

    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "sweep=class_incremental",
        "experiment=replay,derpp",
        "seed=0",
        "++continual.memory_size=30",  # `++`: the sweep's base config (continual: none) has no such key yet
        "tasks=[[0,1],[2,3]]",
        f"data.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "logger=none",
        "trainer=cpu",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    kept = {
        json.loads(p.read_text())["experiment"]: json.loads(p.read_text())["continual/kept"]
        for p in (tmp_path / "sweep").rglob("metrics.json")
    }
    assert kept == {"replay": 30, "derpp": 30}
