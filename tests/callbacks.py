"""Lightning callbacks that tests pass to real training runs by class path (``tests.callbacks.X``)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class KillDuringEpoch(Callback):
    """SIGKILL the training process at batch ``batch`` of epoch ``epoch`` (0-based): a hard crash."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        del pl_module, batch
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
