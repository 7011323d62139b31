"""The per-step warmup + cosine schedule against task_vectors' cosine_lr in closed form, and stepping per optimizer step
in a real Lightning fit."""

import math

import pytest
import torch

from music.models.schedules import WarmupCosine, warmup_cosine_factor


def cosine_lr(base: float, warmup: int, steps: int, step: int) -> float:
    """task_vectors' src/utils.py cosine_lr, written out: (step + 1) / warmup of the base rate while warming up, then
    0.5 · (1 + cos(π e / es)) · base with e = step − warmup, es = steps − warmup."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))) * base


def test_the_factor_is_task_vectors_cosine_lr():
    for step in range(0, 40):
        assert warmup_cosine_factor(step, 10, 40) * 1e-5 == pytest.approx(cosine_lr(1e-5, 10, 40, step), rel=1e-12)
    assert warmup_cosine_factor(9, 10, 40) == 1.0 and warmup_cosine_factor(25, 10, 40) == pytest.approx(0.5)


def test_the_scheduler_gives_each_optimizer_step_its_rate():
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    scheduler = WarmupCosine(optimizer, warmup_steps=4, total_steps=12)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])  # the rate this step uses
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([cosine_lr(1e-3, 4, 12, s) for s in range(12)])


def test_a_lightning_fit_steps_it_per_batch_over_the_stage(tmp_path):
    """scheduler_interval=step: Lightning steps the schedule after every optimizer step, and its length is the stage's
    number of optimizer steps (estimated_stepping_batches), filled in when total_steps is null."""
    import functools

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from music.models.classifier import Classifier

    class Rates(L.Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    from music.models.networks import Network

    class Tiny(Network):
        def __init__(self):
            super().__init__()
            self.features, self.head = torch.nn.Flatten(), torch.nn.Linear(4, 2)

    net = Tiny()
    module = Classifier(
        net,
        functools.partial(torch.optim.SGD, lr=0.1),
        functools.partial(WarmupCosine, warmup_steps=3),
        num_classes=2,
        scheduler_interval="step",
    )
    data = DataLoader(TensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,))), batch_size=4)  # 5 steps/epoch
    rates = Rates()
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[rates],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    assert rates.lrs == pytest.approx([cosine_lr(0.1, 3, 10, s) for s in range(10)])
