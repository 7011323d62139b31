"""ER-ACE's cosine classifier (continual.classifier=cosine, Mammoth's default use_custom_classifier): logits
10 · cos(features, each class's weight row), in training and in evaluation; the linear head stays the default."""

import pytest
import torch
from torch import nn

from conftest import FAST, ROOT, make_cfg
from music.continual.er_ace import CosineHead, cosine_logits


def test_cosine_logits_are_ten_times_the_cosine_by_hand():
    features = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # ‖(3, 4)‖ = 5; a zero vector scores 0 (ε keeps it finite)
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]])  # norms 1, 2, 5
    eps = 1e-5
    by_hand = torch.tensor(
        [
            [10 * 3 / ((5 + eps) * (1 + eps)), 10 * 8 / ((5 + eps) * (2 + eps)), 10 * -25 / ((5 + eps) * (5 + eps))],
            [0.0, 0.0, 0.0],
        ]
    )
    assert torch.allclose(cosine_logits(features, weight), by_hand, rtol=1e-6, atol=0)
    assert by_hand[0].tolist() == pytest.approx([6.0, 8.0, -10.0], abs=1e-4)  # 10 × (0.6, 0.8, −1)


def test_cosine_head_keeps_the_linear_heads_parameters_and_keys_and_ignores_the_bias():
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    before = torch.get_rng_state()
    head = CosineHead.like(linear)
    assert torch.equal(torch.get_rng_state(), before)  # no random init drawn and thrown away
    assert isinstance(head, nn.Linear) and head.state_dict().keys() == linear.state_dict().keys()
    assert all(torch.equal(head.state_dict()[k], v) for k, v in linear.state_dict().items())
    x = torch.randn(4, 5)
    assert torch.equal(head(x), cosine_logits(x, linear.weight))
    with torch.no_grad():
        head.bias.add_(100.0)
    assert torch.equal(head(x), cosine_logits(x, linear.weight))


def test_a_bad_classifier_is_refused_in_one_line(tmp_path):
    from music.config import validate
    from music.errors import ConfigError
    from music.strategies import STRATEGIES

    with pytest.raises(ConfigError) as err:
        validate(make_cfg(tmp_path, tmp_path, "experiment=er_ace", "continual.classifier=softmax"), STRATEGIES)
    assert str(err.value).startswith("continual.classifier='softmax' is not allowed") and "\n" not in str(err.value)


def test_er_ace_with_the_cosine_classifier_trains_and_scores_with_it(tmp_path, mnist_dir, monkeypatch):
    """A run on test-written MNIST files: every network a stage trains and is scored with has the cosine head (its
    logits bounded by the scale 10), the bias never moves, the figures differ from the linear head's, and the linear
    default's stages keep the cache keys they had before the setting existed (no `classifier` in them)."""
    from music.cache import ArtifactCache
    from music.experiment.evaluation import Evaluation
    from music.experiment.training import Training
    from music.run import run

    trained, scored, materials = [], [], []
    fit, evaluate, get_or_build = Training.fit, Evaluation.evaluate, ArtifactCache.get_or_build

    def fit_spy(self, net, *args, **kwargs):
        trained.append(type(net.head))
        return fit(self, net, *args, **kwargs)

    def evaluate_spy(self, net):
        images, _ = self.ctx.eval_sets["test"]
        with torch.no_grad():
            logits = net.to(self.ctx.device).eval()(images.materialize().to(self.ctx.device))
        bias_kept = torch.equal(net.head.bias.cpu(), self.artifacts.theta0["head.bias"])
        scored.append((type(net.head), float(logits.abs().max()), bias_kept))
        return evaluate(self, net)

    def get_or_build_spy(self, name, material, *args, **kwargs):
        if name == "sequential":
            materials.append(material["data"].get("continual"))
        return get_or_build(self, name, material, *args, **kwargs)

    monkeypatch.setattr(Training, "fit", fit_spy)
    monkeypatch.setattr(Evaluation, "evaluate", evaluate_spy)
    monkeypatch.setattr(ArtifactCache, "get_or_build", get_or_build_spy)
    common = [*FAST, "tasks=[[0,1],[2,3]]", "pretrain=none", "continual.memory_size=50", "data.batch_size=32"]
    cosine = run(make_cfg(tmp_path / "cosine", mnist_dir, "experiment=er_ace", "continual.classifier=cosine", *common))
    assert trained == [CosineHead, CosineHead] and [s[0] for s in scored] == [CosineHead, CosineHead]
    assert all(0 < bound <= 10.0 for _, bound, _ in scored) and all(kept for *_, kept in scored)
    assert cosine["continual/method"] == "ERACE" and 0.0 <= cosine["test/acc"] <= 1.0
    trained.clear(), scored.clear()
    linear = run(make_cfg(tmp_path / "linear", mnist_dir, "experiment=er_ace", *common))
    assert trained == [nn.Linear, nn.Linear] and [s[0] for s in scored] == [nn.Linear, nn.Linear]
    assert cosine["acc_matrix"] != linear["acc_matrix"]
    assert [m["classifier"] for m in materials[:2]] == ["cosine", "cosine"]
    assert all("classifier" not in m for m in materials[2:]) and len(materials) == 4


def test_the_mammoth_preset_runs_er_ace_with_the_cosine_classifier(tmp_path, cifar10_dir):
    """sweep=seq_cifar10_mammoth lists er_ace_mammoth (Mammoth's default classifier, at its best args' rate 0.1); one
    stage of one epoch on test-written CIFAR-10 files (the preset trains 5 × 50 on a GPU)."""
    from omegaconf import OmegaConf

    from music.run import run

    cfg = make_cfg(tmp_path, cifar10_dir, "sweep=seq_cifar10_mammoth", "experiment=er_ace_mammoth", "tasks=[[0,1]]",
                   "finetune.epochs=1", "model.net.width=8", "continual.memory_size=10")  # fmt: skip
    preset = OmegaConf.load(ROOT / "configs" / "sweep" / "seq_cifar10_mammoth.yaml")
    assert "er_ace_mammoth" in preset.hydra.sweeper.params.experiment.split(",")
    assert cfg.continual.classifier == "cosine" and cfg.finetune.optimizer.lr == 0.1
    metrics = run(cfg)
    assert metrics["continual/method"] == "ERACE" and metrics["test/acc_task_il"] is not None
