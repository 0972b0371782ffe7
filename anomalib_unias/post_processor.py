"""Rank-preserving post-processor for UniAS, with per-category thresholds (docs/design.md §6 and §8).

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

It also fits and applies thresholds **per category** (one unified model, many product lines;
:mod:`anomalib_unias.thresholds`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import F1AdaptiveThreshold
from anomalib.post_processing import PostProcessor
from lightning.pytorch import LightningModule, Trainer

from .layout import category_of
from .thresholds import CategoryThresholds, Thresholds

logger = logging.getLogger(__name__)


def effective_threshold(threshold: torch.Tensor, norm_min: torch.Tensor, norm_max: torch.Tensor) -> torch.Tensor:
    """The threshold the normalisation uses: the fitted one, else the min/max mid-point, else 1 (if not > 0)."""
    threshold = torch.where(torch.isnan(threshold), (norm_min + norm_max) / 2, threshold)
    return torch.where(threshold > 0, threshold, torch.ones_like(threshold))


def subset(batch: Batch, index: list[int]) -> Batch:
    """The images ``index`` of ``batch``, as a batch of the same type (tensors and lists indexed alike)."""
    values = {}
    for item in fields(batch):
        value = getattr(batch, item.name)
        if isinstance(value, torch.Tensor):
            values[item.name] = value[index]
        elif isinstance(value, list | tuple):
            values[item.name] = [value[i] for i in index]
        elif value is not None:
            values[item.name] = value
    return type(batch)(**values)


class UniASPostProcessor(PostProcessor):
    """anomalib ``PostProcessor`` whose normalisation ``s / (s + t)`` preserves the ranking of scores >= 0.

    The threshold used is the one fitted on validation data (:func:`effective_threshold`).  Metrics
    computed on the normalised maps equal those on the raw maps (up to float32 rounding ties).

    **Per category**: validation also fits anomalib's F1-adaptive image and pixel thresholds for every
    category (``category_of(image_path)``); test and predict normalise and label each image with its
    category's thresholds, an image of an unknown category with the global ones (a warning per category).
    The exported graph keeps the global thresholds, so anomalib's inferencers work unchanged;
    :meth:`~anomalib_unias.thresholds.CategoryThresholds.apply` turns its outputs into per-category ones.

    Args:
        per_category: Fit and apply per-category thresholds (``False``: anomalib's global behaviour).
        category: The category of every test/predict image whose path does not name one (e.g. a predict
            run on a plain folder); ``None``: such images use the global thresholds.
        **kwargs: :class:`anomalib.post_processing.PostProcessor`'s arguments.
    """

    def __init__(self, per_category: bool = True, category: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.per_category = per_category
        self.category = category
        self.category_thresholds: dict[str, list[float]] = {}  # category -> [image, pixel], on raw scores
        self._category_metrics: dict[str, tuple[F1AdaptiveThreshold, F1AdaptiveThreshold]] = {}
        self._warned: set[str] = set()
        self.pinned: CategoryThresholds | None = None

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        """Anomalib's persisted settings plus the per-category thresholds (plain floats)."""
        return (*super()._checkpoint_config_keys, "per_category", "category", "category_thresholds")

    # -------------------------------------------------------------------------------------- fitting
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Batch, *args: Any, **kwargs: Any
    ) -> None:
        """Anomalib's global fitting, and the same F1-adaptive thresholds for each category in the batch."""
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)
        if not (self.per_category and self.enable_thresholding):
            return
        if trainer is not None and trainer.world_size > 1:
            if "ddp" not in self._warned:
                self._warned.add("ddp")
                logger.warning(
                    "UniAS: per-category thresholds are fitted in single-process validation only; with %d "
                    "processes only the global thresholds are fitted. Validate on one device "
                    "(anomalib validate --trainer.devices 1) to fit them.",
                    trainer.world_size,
                )
            return
        for category, part in self._split_by_category(outputs):
            if category is None:
                continue
            if category not in self._category_metrics:
                self._category_metrics[category] = (
                    F1AdaptiveThreshold(fields=["pred_score", "gt_label"], strict=False),
                    F1AdaptiveThreshold(fields=["anomaly_map", "gt_mask"], strict=False),
                )
            for metric in self._category_metrics[category]:
                metric.update(part)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Anomalib's global values, and each validated category's thresholds.

        A category without defective validation images gets anomalib's fallback (its highest normal score).
        """
        super().on_validation_epoch_end(trainer, pl_module)
        if self._category_metrics:
            self.category_thresholds = {
                category: [float(image.compute()), float(pixel.compute())]
                for category, (image, pixel) in sorted(self._category_metrics.items())
            }
            self._category_metrics.clear()

    # ------------------------------------------------------------------------------------- the file
    def thresholds(self) -> CategoryThresholds:
        """The global thresholds (those the normalisation and an export's graph use) and the per-category ones."""
        image = effective_threshold(self.image_threshold, self.image_min, self.image_max)
        pixel = effective_threshold(self.pixel_threshold, self.pixel_min, self.pixel_max)
        global_thresholds = Thresholds(image=float(image), pixel=float(pixel))
        return CategoryThresholds(
            global_thresholds=global_thresholds,
            categories={name: Thresholds(*values) for name, values in self.category_thresholds.items()},
            graph_thresholds=global_thresholds,
        )

    def use_thresholds(self, thresholds: CategoryThresholds) -> None:
        """Normalise and label with ``thresholds`` from now on (e.g. an edited ``thresholds.json``)."""
        self._image_threshold.fill_(thresholds.global_thresholds.image)
        self._pixel_threshold.fill_(thresholds.global_thresholds.pixel)
        self.category_thresholds = {name: [t.image, t.pixel] for name, t in thresholds.categories.items()}

    def pin_thresholds(self, thresholds: CategoryThresholds) -> None:
        """Use ``thresholds`` (an attached ``thresholds.json``) and keep them when a checkpoint is loaded after.

        A checkpoint's own thresholds (its buffers and its per-category values) arrive after the model is built;
        pinned thresholds win over them, so ``--model.thresholds`` with ``--ckpt_path`` labels with the file.
        """
        self.pinned = thresholds
        self.use_thresholds(thresholds)

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Anomalib's settings and the per-category thresholds of a checkpoint, unless thresholds are pinned."""
        super().load_checkpoint_config(config)
        if self.pinned is not None:
            self.use_thresholds(self.pinned)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """The checkpoint's buffers (thresholds, min/max), then the pinned thresholds over them, if any."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.pinned is not None:
            self.use_thresholds(self.pinned)

    # ------------------------------------------------------------------------------------- applying
    def normalize_batch(self, batch: Batch) -> None:
        """Normalise every image of ``batch`` with its category's thresholds (the global ones if unknown)."""
        image, pixel = self._batch_thresholds(batch)
        batch.anomaly_map = self._normalize(batch.anomaly_map, self.pixel_min, self.pixel_max, pixel)
        batch.pred_score = self._normalize(batch.pred_score, self.image_min, self.image_max, image)

    def _batch_thresholds(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and pixel thresholds per image of ``batch``, shaped like its scores and maps, or the global scalars."""
        image = effective_threshold(self.image_threshold, self.image_min, self.image_max)
        pixel = effective_threshold(self.pixel_threshold, self.pixel_min, self.pixel_max)
        if not (self.per_category and self.category_thresholds) or batch.image_path is None:
            return image, pixel
        images, pixels = [], []
        for category in self._categories(batch):
            values = self.category_thresholds.get(category) if category is not None else None
            if values is None:
                self._warn_unknown(category)
                images.append(image)
                pixels.append(pixel)
            else:
                images.append(torch.tensor(values[0], dtype=image.dtype, device=image.device))
                pixels.append(torch.tensor(values[1], dtype=pixel.dtype, device=pixel.device))
        # Shaped to broadcast image by image: scores may come as (B,) or (B, 1) (anomalib's tiled PaDiM), maps (B, ...).
        score_dims = batch.pred_score.dim() - 1 if batch.pred_score is not None else 0
        map_dims = batch.anomaly_map.dim() - 1 if batch.anomaly_map is not None else 2
        return (
            torch.stack(images).reshape(-1, *([1] * score_dims)),
            torch.stack(pixels).reshape(-1, *([1] * map_dims)),
        )

    def _warn_unknown(self, category: str | None) -> None:
        key = str(category)
        if key not in self._warned:
            self._warned.add(key)
            known = ", ".join(sorted(self.category_thresholds))
            what = f"category {category!r} has" if category else "images whose path names no category have"
            logger.warning("UniAS: %s no fitted thresholds (known: %s); using the global thresholds.", what, known)

    def _categories(self, batch: Batch) -> list[str | None]:
        """Each image's category: from its MVTec-layout path, else :attr:`category`."""
        return [category_of(path, default="") or self.category for path in batch.image_path]

    def _split_by_category(self, batch: Batch) -> Iterator[tuple[str | None, Batch]]:
        """``(category, sub-batch)`` for each category present in ``batch``."""
        if batch.image_path is None:
            return
        categories = self._categories(batch)
        for category in dict.fromkeys(categories):
            index = [i for i, c in enumerate(categories) if c == category]
            yield category, batch if len(index) == len(categories) else subset(batch, index)

    @staticmethod
    def _normalize(
        preds: torch.Tensor | None,
        norm_min: torch.Tensor,
        norm_max: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor | None:
        """Map scores >= 0 strictly increasingly onto [0, 1) with the threshold at 0.5.

        Written as ``1 / (1 + t / s)``: each float operation is monotone in ``s``, so rounding can merge
        neighbouring scores but never swap them.  ``s = 0`` gives 0 and ``s = inf`` gives 1.  ``threshold``
        may hold one value per image (broadcast against ``preds``).
        """
        if preds is None:
            return preds
        return 1 / (1 + effective_threshold(threshold, norm_min, norm_max) / preds.clamp(min=0))
