"""``last.ckpt`` after every training epoch: a crash or a failing validation loses at most one epoch.

anomalib writes one ``weights/lightning/model.ckpt`` after each validation; with validation only at the
last epoch a crash before it would leave nothing.  ``last.ckpt`` is Lightning's name for "resume from
here"; it holds the optimiser and the RNG states (:mod:`anomalib_unias.checkpointing`), so a run resumed
from it continues exactly.  ``model.ckpt`` keeps anomalib's meaning.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from ..checkpointing import LAST_CHECKPOINT


class LastCheckpoint(Callback):
    """Write ``<checkpoint dir>/last.ckpt`` at the end of every training epoch and before each validation.

    The directory is that of the trainer's ``ModelCheckpoint`` (anomalib's ``weights/lightning``), else
    ``<default_root_dir>/weights/lightning``.  The file is written next to the target and renamed over
    it, so a crash while writing leaves the previous epoch's checkpoint intact.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the state after the epoch (and after its validation, which Lightning runs first)."""
        del pl_module
        self._save(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the finished training epoch before validation runs (only while fitting)."""
        del pl_module
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)

    @staticmethod
    def path(trainer: Trainer) -> Path:
        """Where ``last.ckpt`` goes for this trainer."""
        callback = trainer.checkpoint_callback
        directory = getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "weights" / "lightning"
        return Path(directory) / LAST_CHECKPOINT

    def _save(self, trainer: Trainer) -> None:
        path = self.path(trainer)
        partial = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # optimiser and RNG states too: an exact resume
        if trainer.is_global_zero:
            partial.replace(path)
        trainer.strategy.barrier("last_checkpoint")
