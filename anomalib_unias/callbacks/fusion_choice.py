"""``map_fusion: auto``: choose the map's fusion on the validation data before the validation loop fits thresholds.

See :mod:`anomalib_unias.fusion_selection` for what is scored and how; this callback runs it at the right
moment of a Lightning run and keeps the choice in the checkpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from ..anomaly_map import candidate_fusions
from ..fusion_selection import CHECKPOINT_KEY, FusionScores, checkpoint_entry, describe_choice
from ..layout import category_of

logger = logging.getLogger(__name__)


class FusionChoice(Callback):
    """Before every validation loop of a ``map_fusion: auto`` model, score the candidate fusions and use the best.

    The validation loop that follows then fits the thresholds (and min/max) on the chosen map.  The choice
    and every candidate's score are logged and saved in the checkpoint (:data:`CHECKPOINT_KEY`).
    Does nothing for a model with a fixed fusion.
    """

    def __init__(self) -> None:
        self.entry: dict[str, Any] | None = None

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score every candidate fusion on the validation data (one extra pass, no gradients) and use the best."""
        architecture = pl_module.model.head.architecture
        if not architecture.fuses_automatically or trainer.sanity_checking:
            return
        start = time.perf_counter()
        scores = FusionScores(candidate_fusions(architecture.levels))
        images = 0
        loaders = trainer.val_dataloaders
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            for batch in loader:
                if batch.gt_mask is None:
                    continue
                image, mask = pl_module.pre_processor.transform(batch.image, batch.gt_mask)
                maps = pl_module.model.fused_maps(image.to(pl_module.device), scores.fusions)
                categories = [category_of(path, default="") for path in batch.image_path]
                scores.update(maps, mask, categories)
                images += len(categories)
        scores.gather()
        chosen = scores.best()
        average_precision = scores.average_precision()
        if chosen is not None:
            pl_module.model.head.anomaly_map.use(chosen)
            self.entry = checkpoint_entry(chosen, average_precision)
        if trainer.is_global_zero:
            logger.info("%s (%.0f s)", describe_choice(chosen, average_precision, images), time.perf_counter() - start)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Carry a restored choice on into the next checkpoint (a resumed run saves before it validates)."""
        del trainer, pl_module
        self.entry = checkpoint.get(CHECKPOINT_KEY, self.entry)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep the choice with the weights; ``UniAS.on_load_checkpoint`` restores it."""
        del trainer, pl_module
        if self.entry is not None:
            checkpoint[CHECKPOINT_KEY] = self.entry
