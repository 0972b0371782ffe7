"""The UniAS paper's evaluation protocol as anomalib metrics (docs/design.md §8).

* :class:`PaperDice`: the paper's DSC (per-image Dice at the threshold argmax(precision + recall));
* :class:`F1MaxDice`: dataset-level Dice at the best-F1 threshold (ADer's F1-max; not the paper's DSC);
* :class:`PerCategory`: evaluates any anomalib metric per category (from ``image_path``) + macro mean;
* :class:`PerCategoryEvaluator` / :func:`unias_evaluator`: evaluator logging ``<metric>/<category>`` and
  ``<metric>/mean`` for image AUROC, pixel AUROC, pAP (anomalib's ``AUPR``), DSC and AUPRO;
* :func:`format_category_table`: the per-category table (printed after testing by
  :class:`~anomalib_unias.callbacks.CategoryTableLogger`).
"""

from .dice import F1MaxDice, PaperDice
from .evaluator import PerCategoryEvaluator, unias_evaluator
from .per_category import PerCategory
from .report import format_category_table

__all__ = [
    "F1MaxDice",
    "PaperDice",
    "PerCategory",
    "PerCategoryEvaluator",
    "format_category_table",
    "unias_evaluator",
]
