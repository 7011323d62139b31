"""Continual-learning methods (music.continual): their tensor kernels against hand-computed values, and the hooks'
state as the sequential strategy drives them (begin_stage / end_stage only)."""

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import music.continual.ewc as ewc_module
from music.continual import MEMORY, ContinualMethod
from music.continual.agem import AGEM, project
from music.continual.buffer import StreamBuffer
from music.continual.der import DER
from music.continual.derpp import DERpp
from music.continual.er_ace import ERACE, asymmetric_logits
from music.continual.ewc import EWC, ewc_penalty
from music.continual.lwf import LwF, distillation
from music.continual.replay import Replay, reservoir, shares
from music.models import optimizer_state

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "continual"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyNet(nn.Module):
    """The network contract in miniature: `features` then a linear `head`, on 1×28×28 images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x))


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def tagged(ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels all equal their id, so a memory can be checked against the stream it came from."""
    return ids.float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone(), labels.long()


# ---------- EWC


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_in_the_distance():
    anchors = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    fishers = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([4.0])}
    assert ewc_penalty(anchors, anchors, fishers, strength=3.0).item() == 0.0
    for d in (1.0, 2.0, 0.5):
        params = {k: v + d for k, v in anchors.items()}
        # 3/2 · (1·d² + 2·d² + 4·d²)
        assert ewc_penalty(params, anchors, fishers, strength=3.0).item() == pytest.approx(1.5 * 7 * d**2)


def test_ewc_accumulates_fishers_with_decay_and_anchors_at_the_last_stage(monkeypatch):
    net = tiny_net()
    count = sum(p.numel() for p in net.parameters())
    values = iter([torch.full((count,), 1.0), torch.full((count,), 2.0)])
    monkeypatch.setattr(ewc_module, "diagonal_fisher", lambda net, images, names, generator: next(values))
    method = EWC(strength=1.0, decay=0.5)
    images, labels = torch.rand(10, 1, 28, 28), torch.zeros(10, dtype=torch.long)
    method.begin_stage(0, net)
    assert method.penalty(net, images, labels, net(images)) == 0.0 and method.kept() == 0
    method.end_stage(0, net, images, labels, gen())
    with torch.no_grad():
        net.head.bias += 1.0
    method.begin_stage(1, net)
    method.end_stage(1, net, images, labels, gen())
    for name, p in net.named_parameters():
        assert torch.equal(method.fishers[name], torch.full_like(p, 0.5 * 1.0 + 2.0))
        assert torch.equal(method.anchors[name], p.detach())
    assert method.kept() == 2 * count
    with torch.no_grad():
        net.head.bias += 2.0  # 4 biases moved by 2 from the anchor: 1/2 · 2.5 · 4 · 2²
    assert method.penalty(net, images, labels, None).item() == pytest.approx(20.0)


def test_ewc_with_the_real_fisher_penalises_moving_away():
    net = tiny_net()
    method = EWC(strength=10.0, num_samples=16)
    images, labels = torch.rand(40, 1, 28, 28), torch.randint(4, (40,))
    method.begin_stage(0, net)
    method.end_stage(0, net, images, labels, gen())
    assert all((f >= 0).all() for f in method.fishers.values())
    assert method.penalty(net, images, labels, None).item() == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p += 0.1
    assert method.penalty(net, images, labels, None).item() > 0.0
    again = EWC(strength=10.0, num_samples=16)
    again.end_stage(0, tiny_net(), images, labels, gen())  # the same stage from the cache: the same state
    assert all(torch.equal(again.fishers[k], method.fishers[k]) for k in method.fishers)


# ---------- A-GEM


def test_project_keeps_agreeing_gradients_and_removes_the_opposing_component():
    g_ref = torch.tensor([1.0, 1.0])
    assert torch.equal(project(torch.tensor([1.0, 0.0]), g_ref), torch.tensor([1.0, 0.0]))
    assert torch.equal(project(torch.tensor([1.0, -1.0]), g_ref), torch.tensor([1.0, -1.0]))  # dot 0: unchanged
    # g = (1, −2) against g_ref = (0, 1): g·g_ref = −2, so g + 2·g_ref = (1, 0)
    assert torch.equal(project(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])), torch.tensor([1.0, 0.0]))
    # g = (−1, 0) against (1, 1): −1/2 · (1, 1) removed, (−1/2, 1/2)
    assert torch.allclose(project(torch.tensor([-1.0, 0.0]), g_ref), torch.tensor([-0.5, 0.5]))
    for seed in range(20):
        g, r = torch.randn(2, 5, generator=gen(seed))
        out = project(g, r)
        assert torch.dot(out, r) >= -1e-6
        if torch.dot(g, r) < 0:
            assert torch.dot(out, r).abs() < 1e-5


def test_agem_step_leaves_a_gradient_that_does_not_oppose_the_memory():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    images, labels = torch.randn(12, 4), torch.randint(3, (12,))
    method = AGEM(memory_size=6, sample_size=6)  # the reference batch is the whole memory
    method.begin_stage(0, net)
    net.weight.grad, net.bias.grad = torch.ones_like(net.weight), torch.ones_like(net.bias)
    method.before_optimizer_step(net)  # nothing remembered yet: gradients untouched
    assert torch.equal(net.weight.grad, torch.ones_like(net.weight))
    method.end_stage(0, net, images, labels, gen())
    assert method.kept() == 6
    mem_x, mem_y = method.groups[0]
    loss = nn.functional.cross_entropy(net(mem_x), mem_y)
    g_ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))])
    sizes = [p.numel() for p in net.parameters()]
    g = -g_ref + 0.1 * torch.randn(len(g_ref), generator=gen(1))  # opposes the memory
    for p, part in zip(net.parameters(), g.split(sizes)):
        p.grad = part.view_as(p).clone()
    method.before_optimizer_step(net)
    after = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert torch.dot(after, g_ref) >= -1e-5
    assert torch.allclose(after, project(g, g_ref), atol=1e-6)


def test_agem_memory_is_split_equally_over_stages():
    method = AGEM(memory_size=10, sample_size=4)
    for stage in range(3):
        method.begin_stage(stage, None)
        images, labels = tagged(torch.arange(20) + 100 * stage, torch.full((20,), stage))
        method.end_stage(stage, None, images, labels, gen(stage))
    assert [len(lb) for _, lb in method.groups] == shares(10, 3) == [4, 3, 3]
    for stage, (images, labels) in enumerate(method.groups):
        assert (labels == stage).all() and ((images[:, 0, 0, 0] // 100) == stage).all()
    x, y = method.reference_batch()
    assert len(x) == 3 and sorted(y.tolist()) == [0, 1, 2]  # 4 // 3 from each stage


# ---------- replay


def test_reservoir_fills_then_keeps_exactly_capacity():
    assert torch.equal(reservoir(torch.zeros(0, dtype=torch.long), 0, 5, 10, gen()), torch.arange(5))
    kept = reservoir(torch.arange(5), 5, 3, 10, gen())
    assert torch.equal(kept, torch.arange(8))
    kept = reservoir(kept, 8, 30, 10, gen())
    assert len(kept) == 10 and len(kept.unique()) == 10 and (kept >= 0).all() and (kept < 38).all()


def test_reservoir_keeps_each_item_with_probability_capacity_over_seen():
    capacity, first, second, seeds = 5, 8, 12, 4000
    counts = torch.zeros(first + second)
    for seed in range(seeds):
        g = gen(seed)
        kept = reservoir(reservoir(torch.zeros(0, dtype=torch.long), 0, first, capacity, g), first, second, capacity, g)
        counts[kept] += 1
    assert torch.allclose(counts / seeds, torch.full_like(counts, capacity / (first + second)), atol=0.035)


def test_replay_appends_a_batch_from_memory_once_there_is_one():
    method = Replay(memory_size=8)
    method.begin_stage(0, None)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    out_x, out_y = method.batch(x, y)
    assert out_x is x and out_y is y and method.kept() == 0
    images, labels = tagged(torch.arange(30), torch.arange(30) % 3)
    method.end_stage(0, None, images, labels, gen())
    assert method.kept() == 8
    ids = method.images[:, 0, 0, 0].long()
    assert len(ids.unique()) == 8 and torch.equal(method.labels, ids % 3)  # every image kept with its own label
    out_x, out_y = method.batch(x, y)
    assert out_x.shape == (8, 1, 28, 28) and torch.equal(out_x[:4], x) and torch.equal(out_y[:4], y)
    assert torch.equal(out_y[4:], out_x[4:, 0, 0, 0].long() % 3)
    # the same stage from the cache, with the same generator: the same memory and the same draws
    again = Replay(memory_size=8)
    again.begin_stage(0, None)
    again.end_stage(0, None, images, labels, gen())
    assert torch.equal(again.images, method.images)
    assert torch.equal(again.batch(x, y)[0], out_x)  # its first draw is the first draw above


def test_replay_keeps_a_uniform_sample_across_stages():
    method = Replay(memory_size=6)
    for stage in range(3):
        ids = torch.arange(10) + 10 * stage
        method.end_stage(stage, None, *tagged(ids, ids // 10), gen(stage))
        ids = method.images[:, 0, 0, 0].long()
        assert method.kept() == 6 and len(ids.unique()) == 6 and torch.equal(method.labels, ids // 10)


def test_balanced_replay_holds_equal_counts_per_class():
    method = Replay(memory_size=30, balanced=True)
    labels = torch.cat([torch.full((100,), 0), torch.full((30,), 1), torch.full((50,), 2)])
    method.begin_stage(0, None)
    method.end_stage(0, None, *tagged(torch.arange(180), labels), gen())
    assert torch.bincount(method.labels).tolist() == [10, 10, 10]
    method.end_stage(1, None, *tagged(torch.arange(180) + 1000, labels + 3), gen(1))
    assert torch.bincount(method.labels).tolist() == [5] * 6
    ids = method.images[:, 0, 0, 0].long()
    assert len(ids.unique()) == 30
    expected = torch.where(ids < 1000, labels[ids % 1000], labels[ids % 1000] + 3)
    assert torch.equal(method.labels, expected)


# ---------- LwF


def test_distillation_by_hand():
    logits = torch.randn(3, 4, generator=gen())
    assert distillation(logits, logits.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-7)
    # student uniform over 2 classes, teacher logits (ln 3, 0) at T = 2: q = softmax(ln 3 / 2, 0)
    q1 = math.sqrt(3) / (math.sqrt(3) + 1)
    q = (q1, 1 - q1)
    expected = 2.0**2 * sum(qi * math.log(qi / 0.5) for qi in q)
    student, teacher = torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]])
    assert distillation(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_lwf_distils_only_from_the_previous_stage_on_seen_classes():
    net = tiny_net()
    x = torch.rand(6, 1, 28, 28)
    method = LwF(alpha=0.5, temperature=2.0)
    method.begin_stage(0, net)
    assert method.penalty(net, x, None, net(x)) == 0.0 and method.kept() == 0
    method.end_stage(0, net, x, torch.tensor([0, 1, 0, 1, 0, 1]), gen())
    method.begin_stage(1, net)
    assert method.kept() == sum(p.numel() for p in net.parameters())
    assert method.penalty(net, x, None, net(x)).item() == pytest.approx(0.0, abs=1e-7)  # student = teacher
    with torch.no_grad():
        net.head.weight.add_(torch.randn(net.head.weight.shape, generator=gen(2)))
    logits = net(x)
    teacher = method.teacher(x)
    expected = 0.5 * distillation(logits[:, :2], teacher[:, :2], 2.0).item()
    assert method.penalty(net, x, None, logits).item() == pytest.approx(expected)
    assert expected > 0


# ---------- configs


CONFIG_MEMORY = {"der": "images with logits", "derpp": "images with labels and logits", "er_ace": "images with labels"}


@pytest.mark.parametrize("name", ["ewc", "lwf", "replay", "agem", "der", "derpp", "er_ace"])
def test_configs_instantiate_with_a_comment_first(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith("# ")
    method = instantiate(OmegaConf.load(path))
    assert isinstance(method, ContinualMethod) and method.memory in MEMORY and method.kept() == 0


# ---------- the optimizer between stages


def test_an_optimizer_state_survives_flattening_and_loads_into_a_new_optimizer():
    net = tiny_net()
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3):
        adam.zero_grad()
        net(torch.randn(5, 1, 28, 28, generator=gen(1))).square().sum().backward()
        adam.step()
    flat = optimizer_state.flatten(adam.state_dict())
    assert (
        sorted(flat)[:3] == ["optimizer/0/exp_avg", "optimizer/0/exp_avg_sq", "optimizer/0/step"] and len(flat) == 3 * 4
    )
    weights, state = optimizer_state.split(net.state_dict() | flat)
    assert weights.keys() == net.state_dict().keys()
    fresh = torch.optim.Adam(tiny_net(1).parameters(), lr=5e-4)
    optimizer_state.load(fresh, state)
    loaded = fresh.state_dict()
    assert loaded["param_groups"][0]["lr"] == 5e-4  # the new stage's own hyperparameters
    for index, entries in adam.state_dict()["state"].items():
        assert float(loaded["state"][index]["step"]) == 3.0
        assert torch.equal(loaded["state"][index]["exp_avg_sq"], entries["exp_avg_sq"])


def test_carried_optimizer_state_counts_every_stage_and_is_cached_apart(tmp_path, mnist_dir):
    """finetune.optimizer_state=carry: stage 1's Adam continues stage 0's (its step count is the sum of both stages'
    batches), the stages are cached under their own keys with the optimizer's state beside the weights, and stage 0
    (nothing to carry yet) trains exactly as with fresh."""
    from safetensors.torch import load_file

    from conftest import FAST, make_cfg
    from music.run import load_data, run

    common = ["experiment=sequential", *FAST, "tasks=[[0,1],[2,3]]", "data.batch_size=16"]
    fresh = run(make_cfg(tmp_path / "fresh", mnist_dir, *common, cache_dir=tmp_path / "cache"))
    cfg = make_cfg(
        tmp_path / "carry", mnist_dir, *common, "finetune.optimizer_state=carry", cache_dir=tmp_path / "cache"
    )
    carried = run(cfg)
    assert (fresh["optimizer_state"], carried["optimizer_state"]) == ("fresh", "carry")
    entries = [load_file(p) for p in (tmp_path / "cache").glob("sequential-*.safetensors")]
    assert len(entries) == 4  # two stages × two settings: carry never reuses a fresh stage
    fresh_stages = [e for e in entries if not any(k.startswith("optimizer/") for k in e)]
    carry_stages = sorted((e for e in entries if "optimizer/0/step" in e), key=lambda e: float(e["optimizer/0/step"]))
    split = load_data(cfg).split
    batches = [math.ceil(len(split.task_train(i)) / 16) for i in range(2)]
    assert [float(e["optimizer/0/step"]) for e in carry_stages] == [batches[0], batches[0] + batches[1]]
    weights = [{k: v for k, v in e.items() if not k.startswith("optimizer/")} for e in carry_stages]
    first = next(
        e for e in fresh_stages if all(torch.equal(e[k], weights[0][k]) for k in e)
    )  # stage 0: the same weights
    second = next(e for e in fresh_stages if e is not first)
    assert not all(torch.equal(second[k], weights[1][k]) for k in second)  # stage 1 moved differently


# ---------- DER, DER++, ER-ACE (a memory filled step by step)


def test_der_adds_alpha_times_the_mse_to_the_logits_remembered():
    net = tiny_net()
    images, labels = tagged(torch.arange(6), torch.tensor([0, 1, 2, 3, 0, 1]))
    remembered = torch.randn(6, 4, generator=gen(1))
    der = DER(memory_size=6, alpha=0.3, minibatch_size=6)
    der.buffer.add(images=images, logits=remembered)
    x, y = tagged(torch.arange(100, 104), torch.tensor([2, 2, 3, 3]))
    with torch.no_grad():
        by_hand = 0.3 * (net(images) - remembered).square().mean()  # the whole memory: a draw of 6 from 6, any order
        penalty = der.penalty(net, x, y, net(x))
    assert float(penalty) == pytest.approx(float(by_hand), rel=1e-6)
    assert len(der.buffer) == 6 and der.buffer.seen == 10  # the batch was offered to the reservoir after the draw


def test_der_remembers_the_logits_of_the_step_an_image_was_seen():
    der = DER(memory_size=4)
    x, y = tagged(torch.arange(4), torch.zeros(4))
    logits = torch.randn(4, 4, generator=gen(2))
    assert der.penalty(tiny_net(), x, y, logits) == 0.0  # nothing remembered yet
    order = der.buffer.fields["images"][:, 0, 0, 0].long()
    assert torch.equal(der.buffer.fields["logits"], logits[order])


def test_derpp_draws_a_second_batch_for_its_cross_entropy(monkeypatch):
    net = tiny_net()
    images, labels = tagged(torch.arange(10), torch.arange(10) % 4)
    logits = torch.randn(10, 4, generator=gen(3))
    derpp = DERpp(memory_size=10, alpha=0.2, beta=0.5, minibatch_size=3)
    derpp.buffer.add(images=images, labels=labels, logits=logits)
    draws = []
    original = derpp.buffer.draw
    monkeypatch.setattr(derpp.buffer, "draw", lambda *args: draws.append(original(*args)) or draws[-1])
    x, y = tagged(torch.arange(50, 53), torch.tensor([1, 2, 3]))
    with torch.no_grad():
        penalty = derpp.penalty(net, x, y, net(x))
        first, second = draws
        by_hand = 0.2 * (net(first["images"]) - first["logits"]).square().mean()
        by_hand += 0.5 * torch.nn.functional.cross_entropy(net(second["images"]), second["labels"])
    assert len(draws) == 2 and not torch.equal(first["images"], second["images"])  # two independent draws
    assert float(penalty) == pytest.approx(float(by_hand), rel=1e-6)


def test_er_ace_masks_the_old_classes_of_the_incoming_batch_from_the_second_stage():
    logits = torch.randn(4, 6, generator=gen(4))
    y = torch.tensor([2, 3, 3, 2])
    ace = ERACE(memory_size=10)
    ace.begin_stage(0, tiny_net())
    first = ace.task_loss(logits, torch.tensor([0, 1, 1, 0]))
    assert float(first) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0]))))
    ace.begin_stage(1, tiny_net())
    # seen {0,1,2,3}: classes 2, 3 (present) and 3.. (from the largest seen up) compete; 0 and 1 are masked out
    by_hand = torch.nn.functional.cross_entropy(logits[:, 2:], y - 2)
    assert float(ace.task_loss(logits, y)) == pytest.approx(float(by_hand), rel=1e-5)
    assert asymmetric_logits(logits, torch.tensor([4]), 3)[:, [0, 1, 2]].eq(-1e9).all()  # 3, 4, 5 kept


def test_er_ace_replays_plain_cross_entropy_from_the_second_stage_on():
    net = tiny_net()
    ace = ERACE(memory_size=8)
    ace.begin_stage(0, net)
    x, y = tagged(torch.arange(8), torch.tensor([0, 1] * 4))
    assert ace.penalty(net, x, y, net(x)) == 0.0 and len(ace.buffer) == 8  # stage 0: remembered, not replayed
    ace.begin_stage(1, net)
    with torch.no_grad():
        penalty = ace.penalty(net, *tagged(torch.arange(20, 28), torch.tensor([2, 3] * 4)), None)
        by_hand = torch.nn.functional.cross_entropy(net(x), y)  # the whole memory, 8 of 8
    assert float(penalty) == pytest.approx(float(by_hand), rel=1e-6)


def test_stream_buffer_keeps_capacity_and_continues_the_same_after_state_and_load():
    a = StreamBuffer(capacity=50, seed=7)
    for start in range(0, 400, 20):
        a.add(images=torch.arange(start, start + 20).float()[:, None])
    assert (
        len(a) == 50
        and a.seen == 400
        and sorted(a.positions.tolist()) == sorted(a.fields["images"][:, 0].long().tolist())
    )
    b = StreamBuffer(capacity=50)
    b.load(a.state())
    for buffer in (a, b):
        buffer.add(images=torch.arange(400, 420).float()[:, None])
    assert torch.equal(a.fields["images"], b.fields["images"]) and torch.equal(a.draw(5)["images"], b.draw(5)["images"])


def test_stream_buffer_keeps_each_example_with_probability_capacity_over_seen():
    hits = torch.zeros(100)
    for seed in range(300):
        buffer = StreamBuffer(capacity=10, seed=seed)
        for start in range(0, 100, 25):
            buffer.add(ids=torch.arange(start, start + 25))
        hits[buffer.fields["ids"]] += 1
    assert (hits / 300).mean() == pytest.approx(0.1) and ((hits / 300) - 0.1).abs().max() < 0.07


@pytest.mark.parametrize("name", ["der", "derpp", "er_ace"])
def test_a_cached_stage_hands_the_method_the_memory_training_left(tmp_path, mnist_dir, name):
    """The memory is filled step by step, which a cached stage cannot replay: its entry carries the method's state, so
    a run whose stages all come from the cache ends exactly as the run that trained them, and as one without a cache."""
    from conftest import FAST, make_cfg
    from music.run import run

    common = [
        f"experiment={name}",
        *FAST,
        "tasks=[[0,1],[2,3],[4,5]]",
        "data.batch_size=32",
        "continual.memory_size=40",
    ]
    trained = run(make_cfg(tmp_path / "a", mnist_dir, *common, cache_dir=tmp_path / "cache"))
    cached = run(make_cfg(tmp_path / "b", mnist_dir, *common, cache_dir=tmp_path / "cache"))
    uncached = run(make_cfg(tmp_path / "c", mnist_dir, *common, "cache.enabled=false"))
    assert trained == cached | {"overrides": trained["overrides"]} and trained["acc_matrix"] == uncached["acc_matrix"]
    assert trained["continual/kept"] == 40 and trained["continual/memory"] == CONFIG_MEMORY[name]
