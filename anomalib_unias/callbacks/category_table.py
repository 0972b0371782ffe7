"""The per-category result table, logged when testing ends (the paper's way of reporting, docs/design.md §8)."""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer

from ..metrics.report import format_category_table

logger = logging.getLogger(__name__)


class CategoryTableLogger(Callback):
    """Log :func:`format_category_table` of the logged test metrics when testing ends.

    With a post-processor that has per-category thresholds (``thresholds()``, as UniAS's), the table
    shows them too; under a UniAS table, a line names the anomaly map's fusion (and whether ``map_fusion: auto``
    chose it).
    """

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the table (global rank 0 only) if any per-category metric was logged."""
        thresholds = None
        post_processor = getattr(pl_module, "post_processor", None)
        if getattr(post_processor, "category_thresholds", None):  # UniAS's, after validation
            fitted = post_processor.thresholds()
            thresholds = {name: (t.image, t.pixel) for name, t in fitted.categories.items()}
            thresholds["global"] = (fitted.global_thresholds.image, fitted.global_thresholds.pixel)
        table = format_category_table(trainer.callback_metrics, thresholds=thresholds)
        if table and trainer.is_global_zero:
            logger.info(table + _map_note(pl_module))


def _map_note(pl_module: LightningModule) -> str:
    """``Anomaly map: <fusion>`` for a UniAS model; empty for other models."""
    head = getattr(getattr(pl_module, "model", None), "head", None)
    generator, architecture = getattr(head, "anomaly_map", None), getattr(head, "architecture", None)
    if generator is None or architecture is None:
        return ""
    how = ""
    if architecture.fuses_automatically:
        how = " (map_fusion: auto, chosen on the validation split; the paper's product until then)"
    return f"\n\nAnomaly map: {generator.fusion.name}{how}."
