"""The console's progress bar: one tqdm bar per training stage, labelled with the stage; where the output is not a
terminal (`| tee`, a Slurm job's log file), one plain line per epoch instead of the bar's redraws."""

import logging
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf

from music.console import CONSOLE

log = logging.getLogger(__name__)


def on_terminal() -> bool:
    """Whether both output streams are terminals: the bar draws on stderr, the log lines go to stdout, and a file or a
    pipe behind either would keep every carriage-return redraw (or lose the stage's line)."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


class StageProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, described as "<stage> epoch e/E" with the stage's training loss and validation accuracy,
    one bar per stage that stays on screen when the stage ends. Validation (one quick pass per epoch) gets no bar.
    Each epoch also logs one plain line (the log file's record of it), on the console only where there is no bar."""

    def __init__(self, refresh_rate: int = 20):
        super().__init__(refresh_rate=refresh_rate)
        self.stage = "training"
        self.bar = on_terminal()
        self.epoch_start = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self.stage = pl_module.stage
        super().on_train_start(trainer, pl_module)

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.stage,
            position=2 * self.process_position,
            disable=self.is_disabled or not self.bar,
            leave=True,
            dynamic_ncols=True,
            smoothing=0,
        )

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", refresh=False)
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # before the module logs its epoch's loss (Lightning calls callbacks first): read from the module's own sum
        loss = getattr(pl_module, "train_loss_sum", None)
        samples = getattr(pl_module, "train_samples", 0)
        figures = {"loss": f"{float(loss) / samples:.4f}"} if loss is not None and samples else {}
        figures |= {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "loss"}
        log.info(
            "%s epoch %d/%d: %s (%d batches, %.1f s)",
            self.stage,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            " ".join(f"{k}={v}" for k, v in figures.items()),
            self.total_train_batches,
            time.perf_counter() - self.epoch_start,
            extra={CONSOLE: not self.bar},
        )

    def on_train_end(self, trainer, pl_module) -> None:
        # the stage's last training loss is logged at its epoch's end, after the bar's own epoch-end update
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_end()

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        shown = {"loss": f"{self.stage}/train/loss", "val_acc": f"{self.stage}/val/acc"}
        return {
            name: f"{float(trainer.callback_metrics[key]):.4f}"
            for name, key in shown.items()
            if key in trainer.callback_metrics
        }
