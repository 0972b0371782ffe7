"""``map_fusion: auto``: choose the map's fusion on the validation data before the validation loop fits thresholds.

See :mod:`anomalib_unias.fusion_selection` for what is scored and how; this callback runs it at the right
moment of a Lightning run and keeps the choice in the checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ..anomaly_map import Fusion, candidate_fusions
from ..fusion_selection import CHECKPOINT_KEY, FusionScores, checkpoint_entry, describe_choice
from ..layout import category_of
from ..normal_maps import NormalStatistics, score_against_normal

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
        """Score every candidate map on the validation data (one extra pass, no gradients) and use the best.

        The candidates are each fusion as it is and, where every category has at least two training images, read
        against its maps of them in each of the model's ``map_normal_readings`` (one pass over the training images
        first).
        """
        architecture = pl_module.model.head.architecture
        if not architecture.fuses_automatically or trainer.sanity_checking:
            return
        start = time.perf_counter()
        candidates = candidate_fusions(architecture.levels)
        readings = architecture.map_normal_readings
        normal = normal_statistics(trainer, pl_module, candidates) if readings else None
        statistics = [normal.of(index).to(pl_module.device) for index in range(len(candidates))] if normal else []
        read = [(fusion.against_normal_images(reading), stats.read_as(reading))
                for reading in readings for fusion, stats in zip(candidates, statistics, strict=False)]  # fmt: skip
        scores = FusionScores(candidates + tuple(fusion for fusion, _ in read))
        images = 0
        loaders = trainer.val_dataloaders
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            for batch in loader:
                if batch.gt_mask is None:
                    continue
                image, mask = pl_module.pre_processor.transform(batch.image, batch.gt_mask)
                maps, descriptors = pl_module.model.maps_and_descriptors(image.to(pl_module.device), candidates)
                as_read = dict(zip(candidates, maps, strict=True))
                maps += [score_against_normal(as_read[fusion.as_read()], descriptors, stats) for fusion, stats in read]
                categories = [category_of(path, default="") for path in batch.image_path]
                scores.update(maps, mask, categories)
                images += len(categories)
        scores.gather()
        chosen = scores.best()
        average_precision = scores.average_precision()
        if chosen is not None:
            chosen_statistics = dict(read).get(chosen)
            pl_module.model.head.anomaly_map.use(chosen)
            pl_module.model.normal_maps.use(chosen_statistics)
            self.entry = checkpoint_entry(chosen, average_precision, chosen_statistics)
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


def normal_statistics(
    trainer: Trainer, pl_module: LightningModule, fusions: Sequence[Fusion], batch_size: int = 4
) -> NormalStatistics | None:
    """The ``fusions``' maps of the data module's training images, summed per category.

    The images are read as test images are (whole, resized to the working resolution).  ``None`` without
    training images, or where a category has fewer than two.
    """
    # The data package loads the demo's image libraries; importing it here keeps them out of ``import anomalib_unias``.
    from ..data.reading import read_image  # noqa: PLC0415

    dataset = getattr(trainer.datamodule, "train_data", None) if trainer.datamodule is not None else None
    samples = getattr(dataset, "samples", None)
    if samples is None or not len(samples):
        return None
    paths = [str(path) for path in samples.image_path]
    statistics = NormalStatistics()
    for first in range(0, len(paths), batch_size):
        chunk = paths[first : first + batch_size]
        images = torch.cat([pl_module.pre_processor.transform(read_image(path)[None]) for path in chunk])
        maps, descriptors = pl_module.model.maps_and_descriptors(images.to(pl_module.device), fusions)
        statistics.update(maps, descriptors, [category_of(path, default="") for path in chunk])
    return statistics if statistics.usable else None
