"""UniAS default evaluator: the paper's metrics per category with their macro mean (docs/design.md §8)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import Metric

from .dice import F1MaxDice, PaperDice
from .per_category import PerCategory


class PerCategoryEvaluator(Evaluator):
    """anomalib ``Evaluator`` that also logs the per-category values of :class:`PerCategory` metrics.

    anomalib's ``Evaluator`` logs each metric with ``self.log(metric.name, metric)``, and Lightning accepts
    only a tensor as a ``Metric``'s result, so a :class:`PerCategory` metric logs just its macro mean
    (``<name>/mean``) there.  This subclass additionally logs ``<name>/<category>`` for every category,
    at the end of the validation and test epochs; everything else is anomalib's ``Evaluator``.
    """

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log per-category validation values, then let anomalib log (and reset) the metrics."""
        self._log_per_category(trainer, self.val_metrics)
        super().on_validation_epoch_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log per-category test values, then let anomalib log (and reset) the metrics."""
        self._log_per_category(trainer, self.test_metrics)
        super().on_test_epoch_end(trainer, pl_module)

    def _log_per_category(self, trainer: Trainer, metrics: Iterable[Metric]) -> None:
        per_metric = [(metric, metric.compute_per_category()) for metric in metrics if isinstance(metric, PerCategory)]
        # A single category's value is its mean already; logging it twice would also give single-category
        # runs other metric names than each other, which anomalib's benchmark cannot collect into one CSV.
        # Every category seen gets its value, NaN (shown as n/a) where the metric is not defined for it.
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        values = {
            f"{metric.base_name}/{category}": defined.get(category, nan)
            for metric, defined in per_metric
            if len(metric.categories) > 1
            for category in metric.categories
        }
        if not values:
            return
        if trainer.barebones:
            # Logging is disabled in barebones mode; anomalib's Evaluator fills the trainer's dicts instead.
            trainer.callback_metrics.update(values)
            trainer.logged_metrics.update(values)
        else:
            self.log_dict(values)


def unias_evaluator(
    per_category: bool = True,
    compute_on_cpu: bool = True,
    aupro_fpr_limit: float = 0.3,
) -> PerCategoryEvaluator:
    """Build the evaluator of the UniAS paper's test protocol (docs/design.md §8).

    Test metrics, logged as ``<name>/<category>`` and ``<name>/mean`` (macro mean over categories):

    * ``image_AUROC``: AUROC of ``pred_score`` (the map's maximum) against ``gt_label``;
    * ``pixel_AUROC``: AUROC over all pixels of ``anomaly_map`` against ``gt_mask``;
    * ``pixel_AP``: pixel average precision (the paper's pAP; anomalib's ``AUPR`` equals scikit-learn's
      ``average_precision_score``);
    * ``DSC``: the paper's Dice, :class:`~anomalib_unias.metrics.PaperDice`;
    * ``F1max_Dice``: dataset-level Dice at the best-F1 threshold, :class:`~anomalib_unias.metrics.F1MaxDice`
      (not in the paper; stays informative where the paper's DSC degenerates to "predict everything");
    * ``pixel_AUPRO``: anomalib's ``AUPRO`` up to ``aupro_fpr_limit`` (not in the paper's tables).

    The pixel metrics are non-strict (skipped on data without masks), as in anomalib's default evaluator.
    AUROC and AUPR are built with ``normalization=None``, which turns off torchmetrics' per-batch sigmoid
    of scores outside [0, 1]; every metric is then exact on any map whose ranks equal the raw map's (the
    raw map itself, or the output of :class:`~anomalib_unias.post_processor.UniASPostProcessor`, but not
    anomalib's clamping ``PostProcessor``).  The reference code's flip of an AUROC below 0.5 to
    1 - AUROC is deliberately not reproduced.

    Args:
        per_category: Wrap every metric in :class:`PerCategory` (categories from ``image_path``, MVTec
            layout).  With False the metrics pool all samples and are logged as ``<name>``.
        compute_on_cpu: Keep the metric states in CPU memory (exact pixel metrics hold every test pixel).
        aupro_fpr_limit: FPR limit of AUPRO.
    """
    metrics: dict[str, AUROC | AUPR | AUPRO | PaperDice | F1MaxDice] = {
        "image_AUROC": AUROC(fields=["pred_score", "gt_label"], normalization=None),
        "pixel_AUROC": AUROC(fields=["anomaly_map", "gt_mask"], strict=False, normalization=None),
        "pixel_AP": AUPR(fields=["anomaly_map", "gt_mask"], strict=False, normalization=None),
        "DSC": PaperDice(strict=False),
        "F1max_Dice": F1MaxDice(strict=False),
        "pixel_AUPRO": AUPRO(fields=["anomaly_map", "gt_mask"], strict=False, fpr_limit=aupro_fpr_limit),
    }
    if per_category:
        test_metrics = [PerCategory(metric, name=name) for name, metric in metrics.items()]
    else:
        for name, metric in metrics.items():
            metric.name = name
        test_metrics = list(metrics.values())
    return PerCategoryEvaluator(test_metrics=test_metrics, compute_on_cpu=compute_on_cpu)
