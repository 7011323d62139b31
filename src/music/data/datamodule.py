"""The project's data as a LightningDataModule, for `Trainer.fit(model, datamodule=...)`.

The experiments use TaskData itself: importing Lightning takes seconds (it imports torchmetrics, torchvision and
scipy), which a run that only loads cached models and evaluates them should not pay.
"""

import lightning as L
import torch

from music.data.task_data import TaskData


class MusicDataModule(TaskData, L.LightningDataModule):
    """TaskData (whose train/val/test_dataloader are Lightning's hooks: θ0's pretrain split, the test set) as a
    LightningDataModule. Configure it with `data._target_=music.data.datamodule.MusicDataModule` (TaskData's arguments)."""

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Stored uint8 pixels → the network's input, on the device (what Classifier does for the experiments)."""
        images, labels = batch
        return (self.normalize(images) if images.dtype == torch.uint8 else images), labels
