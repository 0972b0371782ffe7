"""One log line per training epoch when Lightning's progress bar is off.

A run with ``enable_progress_bar: false`` (logs written to a file, CI) would otherwise stay silent
between the model summary and the test table, for minutes or hours.
"""

from __future__ import annotations

import logging
import time

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

logger = logging.getLogger(__name__)


class EpochProgressLine(Callback):
    """Log ``epoch <n>/<max>: train_loss <value>, <seconds> s`` after every training epoch.

    Silent when a progress bar is shown (it already says the same), and on every process but the first.
    """

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: ARG002
        """Start the epoch's clock."""
        self._started = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: ARG002
        """Log the epoch's mean training loss and its wall time."""
        if trainer.progress_bar_callback is not None or trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("train_loss_epoch", trainer.callback_metrics.get("train_loss"))
        loss_text = f"train_loss {float(loss):.4f}" if loss is not None else "train_loss n/a"
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._started
        logger.info("epoch %d%s: %s, %.1f s", trainer.current_epoch + 1, total, loss_text, seconds)
