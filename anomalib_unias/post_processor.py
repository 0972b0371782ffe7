"""Rank-preserving post-processor for UniAS (docs/design.md §6 and §8).

UniAS's raw anomaly map is a product of four (1 - cos) maps and lies in [0, 16]; the image score is its
maximum.  Two things in anomalib 2.7 would change the paper's metrics on such scores:

* torchmetrics' curve metrics (anomalib's ``AUROC``, ``AUPR``) apply a sigmoid to every *batch* whose
  scores leave [0, 1], so batches end up on different scales (unless built with ``normalization=None``,
  as :func:`~anomalib_unias.metrics.unias_evaluator` does);
* anomalib's ``PostProcessor`` maps scores linearly around the validation threshold and clamps to
  [0, 1], so every score farther than half the validation min-max range from the threshold becomes a
  tie at 0 or 1 (and the float32 subtraction of the threshold merges the many tiny normal-pixel scores).

:class:`UniASPostProcessor` keeps anomalib's fitting (F1-adaptive thresholds, min/max on the validation
set), thresholding and export path, and replaces only the normalisation by the strictly increasing map

    ``s -> 1 / (1 + t / s) = s / (s + t)``   (``s`` clamped at 0, ``t`` the fitted threshold)

from [0, inf) onto [0, 1): the threshold goes to exactly 0.5, so ``pred_label``/``pred_mask`` keep
anomalib's meaning (``normalised > 1 - sensitivity``), and no two scores are merged apart from
float32 rounding near 1 (scores closer than about ``1e-7 * s / t`` relative).  Small scores keep their
full relative precision because 0 maps to 0.  Negative raw scores (float rounding of ``1 - cos``) become 0.
"""

from __future__ import annotations

import torch
from anomalib.post_processing import PostProcessor


class UniASPostProcessor(PostProcessor):
    """anomalib ``PostProcessor`` whose normalisation ``s / (s + t)`` preserves the ranking of scores >= 0.

    Same arguments as :class:`anomalib.post_processing.PostProcessor`.  The threshold used is the one
    fitted on validation data; if none was fitted, the mid-point of the fitted min/max (anomalib's
    fallback), and if that is not positive either, 1.  Metrics computed on the normalised maps equal
    those on the raw maps (up to float32 rounding ties).
    """

    @staticmethod
    def _normalize(
        preds: torch.Tensor | None,
        norm_min: torch.Tensor,
        norm_max: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor | None:
        """Map scores >= 0 strictly increasingly onto [0, 1) with the threshold at 0.5.

        Written as ``1 / (1 + t / s)``: each float operation is monotone in ``s``, so rounding can merge
        neighbouring scores but never swap them.  ``s = 0`` gives 0 and ``s = inf`` gives 1.
        """
        if preds is None:
            return preds
        threshold = torch.where(torch.isnan(threshold), (norm_min + norm_max) / 2, threshold)
        threshold = torch.where(threshold > 0, threshold, torch.ones_like(threshold))
        return 1 / (1 + threshold / preds.clamp(min=0))
