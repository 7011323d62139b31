import pytest
import torch

from music.data.split import make_split, pretrain_counts

LABELS = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
PER_CLASS = [[c] for c in range(10)]


def as_set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


@pytest.mark.parametrize("tasks", [PER_CLASS, [[0, 1], [2, 3], [4, 5]], [[7], [3, 9, 1]]])
def test_each_task_holds_exactly_its_classes(tasks):
    split = make_split(LABELS, tasks, seed=0, pretrain_classes=list(range(10)), num_classes=10)
    for i, task in enumerate(tasks):
        assert as_set(LABELS[split.task_train(i)]) == set(task)
        assert as_set(LABELS[split.task_val(i)]) == set(task)
        # 100 per class: 10 held out for validation, then 45 to θ0 and 45 to the tasks
        assert len(split.task_train(i)) == 45 * len(task)
        assert len(split.task_val(i)) == 10 * len(task)


def test_train_val_pretrain_are_disjoint_and_validation_is_never_trained_on():
    split = make_split(LABELS, [[0, 1], [2, 3]], seed=3, pretrain_classes=list(range(10)), num_classes=10)
    trained = as_set(split.pretrain_train) | as_set(split.union_train)
    assert not trained & as_set(split.val)
    assert not as_set(split.pretrain_train) & as_set(split.union_train)
    parts = [split.pretrain_train, split.union_train, split.val]
    assert sum(len(p) for p in parts) == len(as_set(torch.cat(parts)))  # no index twice
    # validation is class-balanced like the test set: 10 of every class's 100 images
    assert torch.bincount(LABELS[split.val], minlength=10).tolist() == [10] * 10


def test_pretrain_split_as_configured():
    by_fraction = make_split(LABELS, PER_CLASS, 0, pretrain_classes=[0, 1, 2], pretrain_fraction=0.3, num_classes=10)
    assert as_set(LABELS[by_fraction.pretrain_train]) == {0, 1, 2}
    assert len(by_fraction.pretrain_train) == 3 * 27  # 30% of the 90 non-validation images of each class
    # classes outside the pretrain split keep all their images for the tasks
    assert len(by_fraction.task_train(5)) + len(by_fraction.task_val(5)) == 100

    by_count = make_split(
        LABELS,
        PER_CLASS,
        0,
        pretrain_classes=[4, 5, 6],
        pretrain_fraction=None,
        pretrain_num_samples=100,
        num_classes=10,
    )
    assert len(by_count.pretrain_train) == 100
    assert pretrain_counts({4: 100, 5: 100, 6: 100, 7: 100}, [4, 5, 6], None, 100) == {4: 34, 5: 33, 6: 33, 7: 0}


def test_split_is_fixed_by_seed_and_a_task_does_not_depend_on_the_others():
    a = make_split(LABELS, [[1], [2]], seed=7, pretrain_classes=list(range(10)), num_classes=10)
    b = make_split(LABELS, [[5, 6], [2], [1]], seed=7, pretrain_classes=list(range(10)), num_classes=10)
    c = make_split(LABELS, [[1], [2]], seed=8, pretrain_classes=list(range(10)), num_classes=10)
    assert torch.equal(a.task_train(0), b.task_train(2)) and torch.equal(a.task_val(1), b.task_val(1))
    assert not torch.equal(a.task_train(0), c.task_train(0))
