"""Scoring for ``quality.py``: every map fusion of one UniAS model on both test halves, the learning curve, the maps.

:func:`evaluate` scores the raw maps of each fusion from one reconstruction (the model's public
``fused_maps``; nothing of the model is changed); :class:`LearningCurve` calls it along training;
:class:`MapCollector` keeps the test maps for the per-defect table and the picture panel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import HALVES, assign_halves
from anomalib.data import ImageBatch
from anomalib.data.datamodules.base.image import AnomalibDataModule
from lightning.pytorch import Callback
from sklearn.metrics import average_precision_score
from torchmetrics import Metric

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import Fusion
from anomalib_unias.architecture import LEVEL_STRIDES
from anomalib_unias.data.reading import read_mask
from anomalib_unias.metrics import PerCategory, unias_evaluator
from anomalib_unias.resolution import image_sizes

METRICS = ("pixel_AP", "DSC", "F1max_Dice", "image_AUROC", "pixel_AUROC", "pixel_AUPRO")
PANEL_IMAGES_PER_DEFECT = 2
FUSIONS = {
    "product": Fusion("product"),
    "mean": Fusion("mean"),
    "product_16_8": Fusion("product", (16, 8)),
    "mean_16_8": Fusion("mean", (16, 8)),
    **{f"stride{stride} alone": Fusion("product", (stride,)) for stride in LEVEL_STRIDES},
}
"""Map fusions scored from the same reconstructions.  A level alone is its smoothed map, as it enters the
paper's product."""
CURVE_FUSIONS = ("configured", "product", "mean", "product_16_8", "mean_16_8", "stride16 alone")
CURVE_METRICS = ("pixel_AP", "DSC", "F1max_Dice", "image_AUROC", "pixel_AUPRO")


class LearningCurve(Callback):
    """Time each training epoch; at ``curve_epochs`` score the test set (:data:`CURVE_METRICS`)."""

    def __init__(self, datamodule: AnomalibDataModule, curve_epochs: set[int]) -> None:
        self.datamodule = datamodule
        self.curve_epochs = curve_epochs
        self.rows: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        """Start the epoch's clock."""
        del trainer, pl_module
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        """Stop the clock; at a curve epoch, score the test set."""
        self.train_seconds += time.perf_counter() - self._start
        epoch = trainer.current_epoch + 1
        loss = float(trainer.callback_metrics.get("train_loss_epoch", float("nan")))
        print(f"epoch {epoch}: {self.train_seconds:.0f} s of training, loss {loss:.4f}", flush=True)
        if epoch not in self.curve_epochs:
            return
        start = time.perf_counter()
        variants = evaluate(pl_module, self.datamodule)
        values = variants["configured (holdout)"]
        self.rows.append(
            {
                "epoch": epoch,
                "train_seconds": round(self.train_seconds, 1),
                "train_loss": loss,
                **values,
                "fusions": variants,
            }
        )
        for name, scores in variants.items():
            print(
                f"  test at epoch {epoch} ({name}): "
                + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items())
                + f" ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        pl_module.train()
        pl_module.model.backbone.eval()


def keep_half(dataset: Any, half: str) -> None:
    """Restrict a (set-up) evaluation dataset to one half of the test images (:func:`assign_halves`)."""
    halves = assign_halves(list(dataset.samples.image_path))
    dataset.samples = dataset.samples[dataset.samples.image_path.map(halves).eq(half)].reset_index(drop=True)


class ImageSizePixelAP:
    """Pixel AP of one map on each test half, scored at every image's own size (categories pooled).

    :func:`evaluate` scores at the working resolution, where models of different ``image_size`` are graded on
    masks resized differently (a 128 x 128 squash on masks shrunk to 128 x 128, a model worked at 256 x 256 on
    masks at 256 x 256).  Here each map is resized (bilinear) to its image's own size (read from the file's
    header) and scored against the mask file as it is, so two working resolutions are compared on the same pixels.
    :func:`evaluate` feeds it the model's own map.
    """

    def __init__(self, samples: Any) -> None:
        paths = [str(path) for path in samples.image_path]
        self.halves = assign_halves(paths)
        # Masks and labels by the samples table: on AITEX a test batch came with ``mask_path`` None.
        self.mask_of = dict(zip(paths, samples.mask_path, strict=True))
        self.scores: dict[str, list[np.ndarray]] = {half: [] for half in HALVES}
        self.truths: dict[str, list[np.ndarray]] = {half: [] for half in HALVES}

    def update(self, maps: torch.Tensor, paths: Sequence[str], labels: torch.Tensor) -> None:
        """Add a batch of maps ``(B, 1, h, w)`` at the working resolution, with the images' paths and labels."""
        for index, (path, size) in enumerate(zip(paths, image_sizes(paths), strict=True)):
            if bool(labels[index]):
                truth = read_mask(self.mask_of[str(path)], size)[0].bool()
            else:
                truth = torch.zeros(size, dtype=torch.bool)
            resized = torch.nn.functional.interpolate(
                maps[index].float().reshape(1, 1, *maps.shape[-2:]), size=size, mode="bilinear", align_corners=False
            )
            self.scores[self.halves[str(path)]].append(resized.reshape(-1).numpy())
            self.truths[self.halves[str(path)]].append(truth.reshape(-1).numpy())

    def compute(self) -> dict[str, float]:
        """``{"configured (<half>)": pixel AP}`` for each half that holds images."""
        return {
            f"configured ({half})": float(
                average_precision_score(np.concatenate(self.truths[half]), np.concatenate(self.scores[half]))
            )
            for half in HALVES
            if self.scores[half]
        }


@torch.no_grad()
def evaluate(
    model: UniAS,
    datamodule: AnomalibDataModule,
    fusions: Sequence[str] = CURVE_FUSIONS,
    metrics: Sequence[str] = CURVE_METRICS,
    at_image_size: ImageSizePixelAP | None = None,
    per_category: bool = False,
) -> dict[str, dict[str, float]]:
    """Score the test set for each of ``fusions`` on the raw maps at model resolution.

    The metrics pool every image (as one category), or with ``per_category`` are each category's macro mean
    (the paper's, and ``quality.py``'s headline).

    Fusions of levels the model does not reconstruct (``levels``) are left out.  ``configured`` is the model's own
    map (z-scored where ``auto`` chose that); the named fusions are the maps as they are.  ``at_image_size``, when
    given, is also fed the model's own map (scored at the images' own sizes from the same forward pass).
    """
    model.eval()
    levels = set(model.model.head.architecture.levels)
    scored = {"configured": model.model.head.anomaly_map.fusion, **FUSIONS}
    scored = {name: fusion for name, fusion in scored.items() if name in fusions and set(fusion.strides) <= levels}
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    evaluators = {(name, half): unias_evaluator(per_category=per_category) for name in scored for half in HALVES}
    for batch in datamodule.test_dataloader():
        image, gt_mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        half_of = [halves[str(path)] for path in batch.image_path]
        device_maps = model.model.fused_maps(image.to(model.device), list(scored.values()))
        if "configured" in scored and model.model.normal_maps.active:  # the model's own map: z-scored
            device_maps[list(scored).index("configured")] = model.model(image.to(model.device)).anomaly_map
        if at_image_size is not None:
            at_image_size.update(device_maps[list(scored).index("configured")].cpu(), batch.image_path, batch.gt_label)
        for name, device_map in zip(scored, device_maps, strict=True):
            anomaly_map = device_map.cpu()
            for half in HALVES:
                index = [i for i, h in enumerate(half_of) if h == half]
                if not index:
                    continue
                part = ImageBatch(
                    image=image[index],
                    gt_mask=gt_mask[index],
                    gt_label=batch.gt_label[index],
                    image_path=[batch.image_path[i] for i in index],
                    anomaly_map=anomaly_map[index].squeeze(1),
                    pred_score=anomaly_map[index].flatten(1).amax(1),
                )
                for metric in evaluators[name, half].test_metrics:
                    if metric_name(metric) in metrics:
                        metric.update(part)
    return {
        f"{name} ({half})": {
            metric_name(metric): float(metric.compute())
            for metric in evaluator.test_metrics
            if metric_name(metric) in metrics
        }
        for (name, half), evaluator in evaluators.items()
    }


def metric_name(metric: Metric) -> str:
    """A metric's name without the ``/mean`` of a per-category macro mean (``pixel_AP`` for both kinds)."""
    return metric.base_name if isinstance(metric, PerCategory) else metric.name


class MapCollector(Callback):
    """Keep every test map (rank-preserving normalised) with its mask and path."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the maps collected so far."""
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.paths: list[str] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        """Store the batch's maps and masks as (H, W) arrays."""
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        size = outputs.anomaly_map.shape[-2:]
        self.maps.extend(outputs.anomaly_map.float().reshape(-1, *size).cpu().numpy())
        self.masks.extend(outputs.gt_mask.bool().reshape(-1, *size).cpu().numpy())
        self.paths.extend(str(path) for path in outputs.image_path)

    @staticmethod
    def defect_of(path: str) -> str:
        """The defect type (folder name) of a test image."""
        return Path(path).parent.name

    def per_defect_ap(self) -> dict[str, float]:
        """PAP per defect type over that type's test images plus every good test image."""
        defects = sorted({self.defect_of(path) for path in self.paths} - {"good"})
        good = [i for i, path in enumerate(self.paths) if self.defect_of(path) == "good"]
        values = {}
        for defect in defects:
            chosen = good + [i for i, path in enumerate(self.paths) if self.defect_of(path) == defect]
            scores = np.concatenate([self.maps[i].ravel() for i in chosen])
            truth = np.concatenate([self.masks[i].ravel() for i in chosen])
            values[defect] = float(average_precision_score(truth, scores)) if truth.any() else float("nan")
        return values

    def save_panel_maps(self, path: Path) -> None:
        """Save the maps of the first ``PANEL_IMAGES_PER_DEFECT`` images (sorted by path) of every defect type."""
        chosen = panel_selection(self.paths)
        if not chosen:  # no defective image among those tested: no panel (the report leaves it out)
            return
        np.savez_compressed(
            path,
            paths=np.array([self.paths[i] for i in chosen]),
            maps=np.stack([self.maps[i] for i in chosen]),
            masks=np.stack([self.masks[i] for i in chosen]),
        )


def panel_selection(paths: Sequence[str]) -> list[int]:
    """Indices of the first two images (by path) of every defect type, good images excluded."""
    by_defect: dict[str, list[int]] = {}
    for index in sorted(range(len(paths)), key=lambda i: paths[i]):
        defect = Path(paths[index]).parent.name
        if defect != "good":
            by_defect.setdefault(defect, []).append(index)
    return [index for defect in sorted(by_defect) for index in by_defect[defect][:PANEL_IMAGES_PER_DEFECT]]
