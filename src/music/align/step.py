"""The step after a merge: head alignment, from a few unlabeled images per task (FT-Classifier, Procrustes).

Structurally label-free: the aligners receive images drawn at random from a task's training data, and the
task id, never a label tensor. (With one class per task the task id names the class: that is the protocol.)
"""

import copy
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from music.align import fit_head_kl, kl_to_teacher, orthogonal_map, procrustes_report
from music.experiment import Run
from music.settings import Positive


@dataclass(frozen=True)
class AlignSettings:
    """configs/align/<method>.yaml, as `align` reads it (checked before any work; music.settings)."""

    method: Literal["none", "ft_classifier", "procrustes"] = "none"
    shots_per_class: Positive = 5  # k: a task of c classes gets k·c unlabeled images
    sampling: Literal["balanced", "random"] = "balanced"  # k of each class, or k·c from the task's pool
    lr: Annotated[float, "(0, inf)"] = 5e-4  # ft_classifier: Adam on the head
    epochs: Positive = 5
    batch_size: Positive = 1
    subspace_dim: Positive | None = None  # procrustes: fit within the top-r principal subspace (null: all of it)


@torch.no_grad()
def _mean_kl(teachers, model, images, masks) -> float:
    return sum(kl_to_teacher(t(x), model(x), m.expand(len(x), -1)) for t, x, m in zip(teachers, images, masks)) / len(
        teachers
    )


def shots_of(run: Run, task: list[int], per_class: int, sampling: str) -> torch.Tensor:
    """The k·c images a task of c classes is aligned on: k of each class (`balanced`, as FT-Classifier's authors draw
    them: labels choose which images and go no further), or k·c drawn from the task's pool (`random`)."""
    if sampling == "balanced":
        return torch.cat(
            [run.ctx.unlabeled_images([c], per_class, f"align/balanced/task_{'_'.join(map(str, task))}") for c in task]
        )
    return run.ctx.unlabeled_images(task, per_class * len(task), "align")


def align(run: Run, merged: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
    """A copy of `merged` whose head is re-aligned with each task's fine-tuned model; and its figures.

    KL before/after is measured on each task's validation images, not on the images aligned on.
    """
    cfg = run.ctx.cfg.align
    tasks = run.ctx.tasks
    teachers = [run.artifacts.load_net(run.artifacts.finetuned(task)).eval() for task in tasks]
    shots = [shots_of(run, task, cfg.shots_per_class, cfg.sampling) for task in tasks]
    held_out, masks = run.ctx.task_val_images(), run.ctx.task_masks()
    merged = merged.eval()
    aligned = copy.deepcopy(merged)
    report = {
        "align/method": cfg.method,
        "align/shots_per_class": cfg.shots_per_class,
        "align/sampling": cfg.sampling,
        "align/kl_before": _mean_kl(teachers, merged, held_out, masks),
    }

    if cfg.method == "ft_classifier":
        with torch.no_grad():
            features = torch.cat([merged.features(x) for x in shots])
            teacher_logits = torch.cat([t(x) for t, x in zip(teachers, shots)])
            allowed = torch.cat([m.expand(len(x), -1) for m, x in zip(masks, shots)])
        generator = run.ctx.seeded("align/ft_classifier")
        fit_head_kl(aligned.head, features, teacher_logits, allowed, cfg.lr, cfg.epochs, cfg.batch_size, generator)
    elif cfg.method == "procrustes":
        fits = []
        with torch.no_grad():
            for task, teacher, x in zip(tasks, teachers, shots):
                source, target = merged.features(x), teacher.features(x)
                rotation = orthogonal_map(source, target, cfg.subspace_dim)
                aligned.head.weight[task] = teacher.head.weight[task] @ rotation.T
                aligned.head.bias[task] = teacher.head.bias[task]
                fits.append(
                    {"task": task, "subspace_dim": cfg.subspace_dim} | procrustes_report(source, target, rotation)
                )
        report["align/procrustes"] = fits
        report["align/residual_orthogonal"] = sum(f["residual_orthogonal"] for f in fits) / len(fits)
        report["align/residual_lstsq"] = sum(f["residual_lstsq"] for f in fits) / len(fits)
    report["align/kl_after"] = _mean_kl(teachers, aligned.eval(), held_out, masks)
    return aligned, report
