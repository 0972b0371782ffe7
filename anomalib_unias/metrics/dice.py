"""Pixel Dice metrics: the UniAS paper's DSC and the dataset-level F1-max Dice (docs/design.md §8).

Two different numbers are called "Dice" in the anomaly-segmentation literature:

* :class:`PaperDice` is the DSC of the UniAS paper and reference code (``eval_dice_and_iou``, docs/design.md §8):
  one threshold ``th = argmax(precision + recall)`` over all pixels given to the metric (scikit-learn
  ``precision_recall_curve`` semantics: candidate thresholds are the distinct scores and a pixel is
  predicted anomalous when ``score >= th``), then a Dice per image at that threshold (an image without
  ground-truth pixels scores 1 when nothing is predicted and 0 otherwise; other images score
  ``2|P∩G| / (|P| + |G|)``), averaged over all images, normal ones included.  The paper computes it per
  category: wrap it in :class:`~anomalib_unias.metrics.PerCategory`.
* :class:`F1MaxDice` is the dataset-level Dice at the F1-optimal threshold (ADer's "F1-max" over all
  pixels): ``max_th 2TP / (2TP + FP + FN)`` with TP/FP/FN summed over all pixels.  It is NOT the paper's
  DSC.

Both are exact (no binning) and keep memory bounded: the state holds the scores as given (float32 for
anomalib's maps), the ground truth as ``bool`` and one pixel count per image, i.e. 5 bytes per pixel.
The computation never materialises a sort of all pixels: the candidate thresholds are the distinct
scores of the *anomalous* pixels (the maximum of ``P + R`` or of F1 is always attained at one of them,
because between two consecutive anomalous scores recall is constant and precision is largest at the
upper end), and the normal pixels are streamed in chunks to count how many lie above each candidate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn

from ..errors import UniASArgumentError

# Pixels processed at once (whole images, at least one) while streaming the stored scores; bounds the
# temporary memory of compute() to a few tens of MB whatever the size of the test set.
CHUNK_PIXELS = 1 << 21


class _PixelCurve(Metric):
    """Exact pixel-level precision/recall counts with bounded memory (base of the Dice metrics).

    ``update(preds, target)`` takes score maps and masks of the same number of elements, the first
    dimension being the image (``(B, H, W)`` or ``(B, 1, H, W)``).  A mask value > 0 is anomalous.
    The computation runs in numpy on CPU (its sort is an order of magnitude faster than torch's here).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    preds: list[torch.Tensor]
    target: list[torch.Tensor]
    image_pixels: list[torch.Tensor]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("image_pixels", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Store the scores, the binary ground truth and the number of pixels of each image."""
        if preds.numel() != target.numel():
            msg = f"Scores {tuple(preds.shape)} and masks {tuple(target.shape)} have different sizes."
            raise UniASArgumentError(msg)
        num_images = target.shape[0]
        self.preds.append(preds.detach().reshape(-1))
        self.target.append((target > 0).reshape(-1))
        pixels = target.numel() // num_images
        self.image_pixels.append(torch.full((num_images,), pixels, dtype=torch.long, device=target.device))

    def _image_groups(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (scores, ground truth, pixels per image) of consecutive groups of whole images, in numpy.

        Half-precision scores are widened to float32 (exact, so ranks are kept).
        """
        # After a distributed sync the list states are single tensors.
        states = (
            state if isinstance(state, list) else [state] for state in (self.preds, self.target, self.image_pixels)
        )
        for preds, target, pixels in zip(*states, strict=True):
            image_ends = pixels.cumsum(0)
            first_image, first_pixel = 0, 0
            while first_image < pixels.numel():
                reach = torch.searchsorted(image_ends, first_pixel + CHUNK_PIXELS, right=True)
                end_image = max(first_image + 1, int(reach))
                end_pixel = int(image_ends[end_image - 1])
                scores = preds[first_pixel:end_pixel].cpu()
                yield (
                    scores.to(torch.promote_types(scores.dtype, torch.float32)).numpy(),
                    target[first_pixel:end_pixel].cpu().numpy(),
                    pixels[first_image:end_image].cpu().numpy(),
                )
                first_image, first_pixel = end_image, end_pixel

    def _curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return candidate thresholds (ascending) and the float64 TP and FP counts of ``score >= threshold``.

        The candidates are the distinct scores of the anomalous pixels; all arrays are empty when no
        pixel is anomalous.
        """
        positives = np.sort(np.concatenate([scores[truth] for scores, truth, _ in self._image_groups()]))
        thresholds = np.unique(positives)
        true_pos = positives.size - np.searchsorted(positives, thresholds, side="left")
        false_pos = np.zeros(thresholds.size, dtype=np.int64)
        for scores, truth, _ in self._image_groups():
            negatives = np.sort(scores[~truth])
            false_pos += negatives.size - np.searchsorted(negatives, thresholds, side="left")
        return thresholds, true_pos.astype(np.float64), false_pos.astype(np.float64)

    def _per_image_counts(self, threshold: np.floating) -> np.ndarray:
        """Return a (3, num_images) int64 array: predicted, ground-truth and overlapping pixels per image."""
        counts = []
        for scores, truth, pixels in self._image_groups():
            predicted = scores >= threshold
            starts = np.concatenate(([0], np.cumsum(pixels)[:-1]))
            counts.append(
                [np.add.reduceat(mask, starts, dtype=np.int64) for mask in (predicted, truth, predicted & truth)],
            )
        return np.concatenate(counts, axis=1)


def _no_anomalous_pixels(name: str) -> torch.Tensor:
    rank_zero_warn(f"{name}: no anomalous pixel in the evaluated images; the metric is undefined (NaN).")
    return torch.tensor(float("nan"), dtype=torch.float64)


class _PaperDice(_PixelCurve):
    """Tensor-level implementation of :class:`PaperDice`."""

    def compute(self) -> torch.Tensor:
        """Mean per-image Dice at the threshold maximising precision + recall over all pixels."""
        thresholds, true_pos, false_pos = self._curve()
        if thresholds.size == 0:
            return _no_anomalous_pixels(type(self).__name__)
        # Same float64 operations as scikit-learn's precision_recall_curve; argmax keeps the first (i.e.
        # smallest) threshold among ties, like numpy's argmax over scikit-learn's ascending thresholds.
        precision = true_pos / (true_pos + false_pos)
        recall = true_pos / true_pos[0]
        threshold = thresholds[np.argmax(precision + recall)]
        predicted, truth, overlap = self._per_image_counts(threshold)
        with np.errstate(invalid="ignore"):
            dice = np.where(truth == 0, predicted == 0, 2 * overlap / (predicted + truth))
        return torch.tensor(dice.mean(), dtype=torch.float64)


class PaperDice(AnomalibMetric, _PaperDice):  # type: ignore[misc]
    """UniAS paper DSC (docs/design.md §8): mean per-image Dice at the oracle threshold argmax(precision + recall).

    Defaults to the fields ``["anomaly_map", "gt_mask"]``.  Wrap it in
    :class:`~anomalib_unias.metrics.PerCategory` for the paper's per-category threshold and macro mean.

    Scores are compared as given: feed maps whose ranks equal the raw model maps (see
    :class:`~anomalib_unias.post_processor.UniASPostProcessor`); unlike torchmetrics' curve metrics no
    sigmoid is ever applied.  Categories without any anomalous pixel give NaN.

    Example:
        >>> dsc = PaperDice(strict=False)
        >>> dsc.update(batch)
        >>> dsc.compute()
    """

    default_fields = ("anomaly_map", "gt_mask")


class _F1MaxDice(_PixelCurve):
    """Tensor-level implementation of :class:`F1MaxDice`."""

    def compute(self) -> torch.Tensor:
        """Maximum over thresholds of the dataset-level F1 (= Dice) of all pixels."""
        _, true_pos, false_pos = self._curve()
        if true_pos.size == 0:
            return _no_anomalous_pixels(type(self).__name__)
        return torch.tensor((2 * true_pos / (true_pos + false_pos + true_pos[0])).max(), dtype=torch.float64)


class F1MaxDice(AnomalibMetric, _F1MaxDice):  # type: ignore[misc]
    """Dataset-level Dice at the best-F1 threshold over all pixels (ADer's pixel "F1-max").

    This is NOT the UniAS paper's DSC (:class:`PaperDice`): it pools TP/FP/FN over all pixels instead of
    averaging per-image Dice, so normal images do not score 0/1 each.  Defaults to the fields
    ``["anomaly_map", "gt_mask"]``; exact and memory-bounded like :class:`PaperDice`.
    """

    default_fields = ("anomaly_map", "gt_mask")
