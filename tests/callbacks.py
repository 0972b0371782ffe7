"""Lightning callbacks that tests pass to real training runs by class path (``tests.callbacks.X``)."""

from __future__ import annotations

import json
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


class SaveTestMetrics(Callback):
    """Write the logged test metrics (full float precision) to ``path`` as JSON, from global rank 0."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        if trainer.is_global_zero:
            values = {key: float(value) for key, value in trainer.callback_metrics.items()}
            with open(self.path, "w") as stream:  # noqa: PTH123
                json.dump({"metrics": values, "world_size": trainer.world_size}, stream)
