"""Per-category result table, as the UniAS paper reports its results (docs/design.md §8).

One row per category and the macro mean, one column per metric, values in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

NOT_COMPUTABLE_NOTE = (
    "n/a: not computable for that category (its test images hold only one class: no defective image, or no "
    "defect pixel); each mean is over the categories that have the value."
)


def format_category_table(metrics: Mapping[str, float | torch.Tensor], digits: int = 2) -> str:
    """Format logged ``<metric>/<category>`` values as a markdown table (values x 100).

    Only metrics that have a ``<metric>/mean`` entry (those of
    :class:`~anomalib_unias.metrics.PerCategory`) are shown, so other logged keys are ignored.  Rows are
    the categories in alphabetical order followed by ``mean``; a value that could not be computed (not
    logged, or NaN) is shown as ``n/a``, with a note under the table: the means are over the categories
    that have the value.

    Returns:
        The table, or an empty string when no per-category metric is present.
    """
    columns: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        metric, separator, category = key.rpartition("/")
        if separator:
            columns.setdefault(metric, {})[category] = float(value)
    columns = {metric: values for metric, values in columns.items() if "mean" in values}
    if not columns:
        return ""
    categories = sorted({category for values in columns.values() for category in values} - {"mean"})
    lines = [
        "| category | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    missing = False
    for category in [*categories, "mean"]:
        cells = []
        for values in columns.values():
            value = values.get(category, float("nan"))
            missing |= math.isnan(value)
            cells.append("n/a" if math.isnan(value) else f"{100 * value:.{digits}f}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", NOT_COMPUTABLE_NOTE]
    return "\n".join(lines)


class CategoryTablePrinter(Callback):
    """Print :func:`format_category_table` of the logged test metrics when testing ends."""

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Print the table (global rank 0 only) if any per-category metric was logged."""
        del pl_module
        table = format_category_table(trainer.callback_metrics)
        if table and trainer.is_global_zero:
            print(table)
