import logging

import pytest
import torch

from conftest import make_cfg
from music.cache import ArtifactCache, cache_key
from music.experiment.artifacts import theta0_material, training_material


def counting_builder(value: float):
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.full((3,), value)}

    return build, calls


def test_miss_then_hit_is_logged_and_builds_once(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    build, calls = counting_builder(1.0)
    with caplog.at_level(logging.INFO, logger="music.cache"):
        first = cache.get_or_build("theta0", {"a": 1}, build)
        second = cache.get_or_build("theta0", {"a": 1}, build)
    assert len(calls) == 1 and torch.equal(first["w"], second["w"])
    assert "cache miss: theta0" in caplog.text and "cache hit: theta0" in caplog.text
    assert [p.name for p in tmp_path.glob("*.tmp")] == []
    cache.get_or_build("theta0", {"a": 2}, build)
    assert len(calls) == 2


def test_unreadable_entry_is_rebuilt_not_used(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    build, calls = counting_builder(2.0)
    cache.get_or_build("finetune", {"k": 1}, build)
    path = cache.path("finetune", {"k": 1})
    path.write_bytes(path.read_bytes()[:20])  # a partial file
    with caplog.at_level(logging.WARNING, logger="music.cache"):
        rebuilt = cache.get_or_build("finetune", {"k": 1}, build)
    assert len(calls) == 2 and "is corrupt (unreadable" in caplog.text
    assert torch.equal(rebuilt["w"], torch.full((3,), 2.0))
    assert torch.equal(cache.get_or_build("finetune", {"k": 1}, build)["w"], rebuilt["w"]) and len(calls) == 2


def test_keys_depend_on_the_data_itself_and_on_a_given_checkpoint(tmp_path):
    cfg = make_cfg(tmp_path, tmp_path)
    assert cache_key(theta0_material(cfg, "a")) != cache_key(theta0_material(cfg, "b"))  # same name, other contents
    checkpoint = tmp_path / "theta0.safetensors"
    checkpoint.write_bytes(b"one")
    given = make_cfg(tmp_path, tmp_path, f"pretrain.checkpoint={checkpoint}")
    reseeded = make_cfg(tmp_path, tmp_path, f"pretrain.checkpoint={checkpoint}", "seed=3")
    # the seed and split still shape the fine-tunes of a given θ0
    assert cache_key(training_material(given, theta0_material(given, "fp"), {"task": [1]})) != cache_key(
        training_material(reseeded, theta0_material(reseeded, "fp"), {"task": [1]})
    )
    before = cache_key(theta0_material(given, "fp"))
    checkpoint.write_bytes(b"two")
    assert cache_key(theta0_material(given, "fp")) != before


def test_key_ignores_dict_order():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})


@pytest.mark.parametrize(
    ("override", "theta0_changes", "finetune_changes"),
    [
        ("finetune.optimizer.lr=0.01", False, True),
        ("finetune.epochs=3", False, True),
        ("pretrain.epochs=7", True, True),
        ("seed=1", True, True),
        ("model.net.hidden=[64]", True, True),
        ("data.pretrain.fraction=0.2", True, True),
        ("data=fashion_mnist", True, True),
        ("merge.lambdas=[0.3]", False, False),
        ("tasks=[[3],[1]]", False, False),  # task [1]'s fine-tune does not depend on the other tasks
        ("trainer.enable_progress_bar=true", False, False),
        ("trainer.precision=bf16-mixed", True, True),
        ("model.head=per_task", False, True),  # θ0 is trained the same way under both head protocols
    ],
)
def test_cache_keys_change_exactly_with_the_knobs_that_matter(tmp_path, override, theta0_changes, finetune_changes):
    base = make_cfg(tmp_path, tmp_path)
    changed = make_cfg(tmp_path, tmp_path, override)
    assert (cache_key(theta0_material(base, "fp")) != cache_key(theta0_material(changed, "fp"))) == theta0_changes
    key = lambda cfg: cache_key(training_material(cfg, theta0_material(cfg, "fp"), {"task": [1]}))  # noqa: E731
    assert (key(base) != key(changed)) == finetune_changes
