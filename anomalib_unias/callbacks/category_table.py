"""The per-category result table, logged when testing ends (the paper's way of reporting, docs/design.md §8)."""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer

from ..metrics.report import format_category_table

logger = logging.getLogger(__name__)


class CategoryTableLogger(Callback):
    """Log :func:`format_category_table` of the logged test metrics when testing ends.

    With a post-processor that has per-category thresholds (``thresholds()``, as UniAS's), the table
    shows them too.
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
            logger.info(table)
