"""Per-category result table, as the UniAS paper reports its results (docs/design.md §8).

One row per category and the macro mean, one column per metric, values in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

NOT_COMPUTABLE_NOTE = (
    "n/a: not computable for that category (its test images hold only one class: no defective image, or no "
    "defect pixel); each mean is over the categories that have the value (left out: {categories})."
)


THRESHOLDS_NOTE = (
    "Thresholds: raw scores, fitted per category on validation (the mean row: the global ones, used for unknown "
    "categories and by the exported graph); see thresholds.json beside an exported model."
)


def format_category_table(
    metrics: Mapping[str, float | torch.Tensor],
    digits: int = 2,
    thresholds: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """Format logged ``<metric>/<category>`` values as a markdown table (values x 100).

    ``thresholds`` (category -> raw image and pixel threshold; ``"mean"`` row: the global ones) adds two
    columns with the thresholds each category's images were labelled with.

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
    extra = ["image threshold", "pixel threshold"] if thresholds else []
    lines = [
        "| category | " + " | ".join([*columns, *extra]) + " |",
        "|---" * (len(columns) + len(extra) + 1) + "|",
    ]
    missing: list[str] = []
    for category in [*categories, "mean"]:
        cells = []
        for values in columns.values():
            value = values.get(category, float("nan"))
            if math.isnan(value) and category not in missing:
                missing.append(category)
            cells.append("n/a" if math.isnan(value) else f"{100 * value:.{digits}f}")
        if thresholds:
            pair = thresholds.get("global" if category == "mean" else category)
            cells += [f"{value:.4g}" for value in pair] if pair else ["global", "global"]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    if thresholds:
        lines += ["", THRESHOLDS_NOTE]
    if missing:
        left_out = [category for category in missing if category != "mean"] or ["every category"]
        lines += ["", NOT_COMPUTABLE_NOTE.format(categories=", ".join(left_out))]
    return "\n".join(lines)
