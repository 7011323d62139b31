"""The console's progress bar: one tqdm bar per training stage, labelled with the stage."""

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf


class StageProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, described as "<stage> epoch e/E" with the stage's training loss and validation accuracy,
    one bar per stage that stays on screen when the stage ends. Validation (one quick pass per epoch) gets no bar."""

    def __init__(self, refresh_rate: int = 20):
        super().__init__(refresh_rate=refresh_rate)
        self.stage = "training"

    def on_train_start(self, trainer, pl_module) -> None:
        self.stage = pl_module.stage
        super().on_train_start(trainer, pl_module)

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.stage,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            smoothing=0,
        )

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", refresh=False)

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
