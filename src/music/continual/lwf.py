"""Learning without Forgetting (Li & Hoiem, 2017, TPAMI; distillation as in Hinton et al., 2015).

From stage 1 on, a frozen copy of the model the stage starts from (the previous stage's model) is the teacher; while
the stage trains, the loss gets alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) on the current images,
averaged over the batch.

Decisions, compared with Avalanche's `LwFPlugin(alpha=1, temperature=2)` / `LearningWithoutForgetting`
(avalanche/training/plugins/lwf.py and avalanche/training/regularization.py, read at HEAD):
- Defaults alpha = 1, T = 2 are Avalanche's.
- No teacher at stage 0, as Avalanche (it distils only once an experience has ended). Li & Hoiem would distil from
  the pretrained network θ0 at the first new task; here θ0 is either a random initialisation (class-incremental
  from scratch: nothing to preserve) or a model of the pretrain split whose classes the method is not told, so
  stage 0 is plain fine-tuning.
- Only the logits of the classes seen in the stages so far (the labels end_stage received) are distilled, as
  Avalanche's "previously active units": on a shared head over every class, the teacher's near-zero probabilities for classes
  it never learned would otherwise pull the student away from the new classes.
- The KL is multiplied by T² (Hinton et al.'s scaling, so the gradient's size does not depend on T); Avalanche does
  not, so alpha here is Avalanche's alpha / T².

`targets: van_de_ven` is LwF as van de Ven's code runs it in class-IL (GMvandeVen/continual-learning, train.py and
encoder.py as first published, 2018, the source of Hsu et al.'s LwF row; read, not copied): on the current images the
target is the previous model's softmax at T over the previous tasks' classes, padded with zeros for the current task's
classes; the student's log-softmax at T is over the classes of every task so far; the loss is the mean over the batch
*and* those classes of −target·log(student), times T²; and the stage's cross-entropy and this term are weighted 1/t
and 1 − 1/t at the t-th stage (t = 1, 2, …). alpha still multiplies the term (1: theirs). Their cross-entropy covers
the classes seen so far only: `finetune.active_classes=seen`, a protocol setting of its own.
"""

import copy
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.continual import ContinualMethod


def distillation(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), summed over classes and averaged over the batch."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    log_q = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


class LwF(ContinualMethod):
    """LwF: keeps a frozen copy of the previous stage's model (the teacher) and the set of classes seen so far."""

    memory = "a model"

    def __init__(
        self,
        alpha: Annotated[float, "[0, inf)"] = 1.0,
        temperature: Annotated[float, "(0, inf)"] = 2.0,
        targets: Literal["seen", "van_de_ven"] = "seen",
    ):
        self.alpha, self.temperature, self.targets = float(alpha), float(temperature), targets
        self.teacher: nn.Module | None = None
        self.seen: set[int] = set()
        self.stage = 0

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        self.stage = stage
        if stage == 0:  # a new sequence: no teacher, no classes seen
            self.teacher, self.seen = None, set()
            return
        self.teacher = copy.deepcopy(net).eval().requires_grad_(False)

    def penalty(
        self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor, raw: Tensor | None = None
    ) -> Tensor | float:
        if self.teacher is None:
            return 0.0
        self.teacher.to(logits.device)  # no-op once it is there (Lightning moves the net after begin_stage)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        if self.targets == "van_de_ven":
            return self.alpha * (1 - 1 / (self.stage + 1)) * self._van_de_ven(logits, teacher_logits)
        if self.seen:  # the classes seen so far; all of them if end_stage never told (it always does in a run)
            units = torch.tensor(sorted(self.seen), device=logits.device)
            logits, teacher_logits = logits[:, units], teacher_logits[:, units]
        return self.alpha * distillation(logits, teacher_logits, self.temperature)

    def _van_de_ven(self, logits: Tensor, teacher_logits: Tensor) -> Tensor:
        previous = sorted(self.seen)
        current = sorted(set(self.tasks[self.stage]) - self.seen) if self.tasks else []
        units = torch.tensor(previous + current, device=logits.device)
        target = F.softmax(teacher_logits[:, previous] / self.temperature, dim=1)
        target = F.pad(target, (0, len(current)))  # zero probability for the current task's classes
        log_student = F.log_softmax(logits[:, units] / self.temperature, dim=1)
        return (-target * log_student).mean() * self.temperature**2

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        weight = 1 / (self.stage + 1) if self.targets == "van_de_ven" and self.teacher is not None else 1.0
        return weight * F.cross_entropy(logits, y)

    def end_stage(self, stage: int, net: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        self.seen |= {int(c) for c in labels.unique()}

    def kept(self) -> int:
        return 0 if self.teacher is None else sum(p.numel() for p in self.teacher.parameters())
