"""Tests of the paper's metrics (docs/design.md §8), the per-category wrapper and the rank-preserving post-processor."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import yaml
from anomalib import LearningType
from anomalib.data import ImageBatch, ImageItem, InferenceBatch
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from torch.utils.data import DataLoader, Dataset

from anomalib_unias.callbacks import CategoryTableLogger
from anomalib_unias.metrics import (
    F1MaxDice,
    PaperDice,
    PerCategory,
    PerCategoryEvaluator,
    format_category_table,
    unias_evaluator,
)
from anomalib_unias.metrics import dice as dice_module
from anomalib_unias.metrics.report import NOT_COMPUTABLE_NOTE
from anomalib_unias.post_processor import UniASPostProcessor

TOL = 1e-6


# ----------------------------------------------------------------------------------------------- helpers
def make_batch(maps: torch.Tensor, masks: torch.Tensor, paths: list[str] | None = None) -> ImageBatch:
    """A real anomalib ImageBatch with scores, masks, labels and (optionally) image paths."""
    return ImageBatch(
        image=torch.zeros(maps.shape[0], 3, *maps.shape[-2:]),
        anomaly_map=maps,
        pred_score=maps.amax(dim=(-2, -1)),
        gt_mask=masks,
        gt_label=masks.flatten(1).any(1),
        image_path=paths,
    )


def update_in_batches(metric, maps, masks, batch_size, paths=None) -> None:
    for start in range(0, maps.shape[0], batch_size):
        stop = start + batch_size
        metric.update(make_batch(maps[start:stop], masks[start:stop], None if paths is None else paths[start:stop]))


def random_maps(num_images=20, size=24, seed=0, levels=None, scale=1.0):
    """Score maps correlated with masks; a third of the images are normal.  ``levels`` quantises (ties)."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_images, size, size, dtype=torch.bool)
    for index in range(num_images // 3, num_images):
        row, col = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        height, width = torch.randint(2, 8, (2,), generator=generator).tolist()
        masks[index, row : row + height, col : col + width] = True
    maps = 0.6 * torch.rand(num_images, size, size, generator=generator) + 0.5 * masks * torch.rand(
        num_images, size, size, generator=generator
    )
    maps = maps / maps.max()
    if levels is not None:
        maps = torch.round(maps * levels) / levels
    return (maps * scale).float(), masks


def reference_paper_dice(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """docs/design.md §8 written with scikit-learn and numpy, as the reference code does it."""
    precision, recall, thresholds = precision_recall_curve(masks.numpy().ravel(), maps.numpy().ravel())
    threshold = thresholds[np.argmax(precision + recall)]
    dice = []
    for score, truth in zip(maps.numpy(), masks.numpy(), strict=True):
        predicted = score >= threshold
        if truth.sum() == 0:
            dice.append(1.0 if predicted.sum() == 0 else 0.0)
        else:
            dice.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    return float(np.mean(dice))


def reference_f1_max(maps: torch.Tensor, masks: torch.Tensor) -> float:
    precision, recall, _ = precision_recall_curve(masks.numpy().ravel(), maps.numpy().ravel())
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(2 * precision * recall / (precision + recall)))


def pixel_ap(maps, masks) -> float:
    return average_precision_score(masks.numpy().ravel(), maps.numpy().ravel())


# ------------------------------------------------------------------------------- pAP and DSC vs sklearn
@pytest.mark.parametrize("levels", [None, 12], ids=["distinct", "ties"])
def test_pixel_ap_dsc_and_f1max_match_sklearn(levels):
    maps, masks = random_maps(levels=levels)
    metrics = {
        "ap": AUPR(fields=["anomaly_map", "gt_mask"]),
        "dsc": PaperDice(),
        "f1": F1MaxDice(),
    }
    for metric in metrics.values():
        update_in_batches(metric, maps, masks, batch_size=7)
    assert abs(metrics["ap"].compute().item() - pixel_ap(maps, masks)) <= TOL
    assert abs(metrics["dsc"].compute().item() - reference_paper_dice(maps, masks)) <= TOL
    assert abs(metrics["f1"].compute().item() - reference_f1_max(maps, masks)) <= TOL


def test_dice_streams_images_in_groups(monkeypatch):
    """Groups of whole images smaller than a batch (the bounded-memory path) give the same values."""
    monkeypatch.setattr(dice_module, "CHUNK_PIXELS", 1000)
    maps, masks = random_maps(levels=30)
    dsc, f1 = PaperDice(), F1MaxDice()
    for metric in (dsc, f1):
        update_in_batches(metric, maps, masks, batch_size=8)
    assert abs(dsc.compute().item() - reference_paper_dice(maps, masks)) <= TOL
    assert abs(f1.compute().item() - reference_f1_max(maps, masks)) <= TOL


# ------------------------------------------------------------------------------- hand-computed DSC cases
def rows(*images):
    """Images of one row of pixels: (scores, mask) pairs -> (maps, masks) tensors of shape (N, 1, W)."""
    maps = torch.tensor([scores for scores, _ in images], dtype=torch.float32).unsqueeze(1)
    masks = torch.tensor([mask for _, mask in images], dtype=torch.bool).unsqueeze(1)
    return maps, masks


def paper_dice(maps, masks) -> float:
    metric = PaperDice()
    metric.update(make_batch(maps, masks))
    return metric.compute().item()


def test_dsc_normal_image_with_and_without_false_alarm():
    # Candidates 0.8 and 0.9: P+R = 1 + 0.5 at 0.9, 2/3 + 1 at 0.8 -> th = 0.8.  Anomalous image: Dice 1.
    anomalous = ([0.9, 0.8, 0.1, 0.1], [1, 1, 0, 0])
    false_alarm = ([0.85, 0.2, 0.1, 0.1], [0, 0, 0, 0])  # predicted pixels without GT: Dice 0
    assert paper_dice(*rows(anomalous, false_alarm)) == pytest.approx(0.5, abs=TOL)
    quiet = ([0.5, 0.2, 0.1, 0.1], [0, 0, 0, 0])  # nothing predicted, no GT: Dice 1
    assert paper_dice(*rows(anomalous, quiet)) == pytest.approx(1.0, abs=TOL)


def test_dsc_perfect_prediction():
    _, masks = random_maps()
    assert paper_dice(masks.float(), masks) == pytest.approx(1.0, abs=TOL)


def test_dsc_partial_overlap():
    # Candidates 0.3/0.6/0.9: P+R = 5/6 + 1 (best), 3/4 + 3/5, 1 + 2/5 -> th = 0.3.
    # Image Dice: 2*2/(3+2) = 0.8; 1 (normal, nothing >= 0.3); 2*3/(3+3) = 1.
    maps, masks = rows(
        ([0.9, 0.3, 0.6, 0.1], [1, 1, 0, 0]),
        ([0.2, 0.1, 0.1, 0.1], [0, 0, 0, 0]),
        ([0.1, 0.9, 0.6, 0.3], [0, 1, 1, 1]),
    )
    assert paper_dice(maps, masks) == pytest.approx((0.8 + 1 + 1) / 3, abs=TOL)
    f1 = F1MaxDice()
    f1.update(make_batch(maps, masks))
    assert f1.compute().item() == pytest.approx(10 / 11, abs=TOL)  # 2TP / (2TP + FP + FN) at th = 0.3
    assert reference_paper_dice(maps, masks) == pytest.approx((0.8 + 1 + 1) / 3, abs=TOL)


def test_dsc_tie_of_precision_plus_recall_takes_the_smallest_threshold():
    # th = 0.9: P + R = 1 + 1/2; th = 0.5: 1/2 + 1.  numpy's argmax over sklearn's ascending thresholds
    # takes 0.5: Dice 2/3 for both images (0.9 would give 1 and 0).
    maps, masks = rows(([0.9, 0.7], [1, 0]), ([0.5, 0.6], [1, 0]))
    assert paper_dice(maps, masks) == pytest.approx(2 / 3, abs=TOL)
    assert reference_paper_dice(maps, masks) == pytest.approx(2 / 3, abs=TOL)


def test_dsc_without_anomalous_pixels_is_nan():
    maps, masks = rows(([0.1, 0.2], [0, 0]))
    with pytest.warns(UserWarning, match="no anomalous pixel"):
        assert math.isnan(paper_dice(maps, masks))


# ------------------------------------------------------------------------------------ batch independence
def test_results_do_not_depend_on_batch_size():
    maps, masks = random_maps(num_images=18, levels=20)
    paths = [f"/data/{'bottle' if i % 3 else 'cable'}/test/defect/{i:03d}.png" for i in range(18)]

    def evaluate(batch_size):
        metrics = [
            PaperDice(),
            F1MaxDice(),
            PerCategory(AUPR(fields=["anomaly_map", "gt_mask"])),
            PerCategory(PaperDice()),
        ]
        for metric in metrics:
            update_in_batches(metric, maps, masks, batch_size, paths)
        return [metric.compute().item() for metric in metrics]

    np.testing.assert_allclose(evaluate(1), evaluate(18), rtol=0, atol=TOL)
    np.testing.assert_allclose(evaluate(5), evaluate(18), rtol=0, atol=TOL)


# ------------------------------------------------------------------------------------------ per category
def two_categories():
    maps_a, masks_a = random_maps(num_images=9, seed=1)
    maps_b, masks_b = random_maps(num_images=12, seed=2, levels=8)
    paths_a = [f"/data/mvtec/bottle/test/broken/{i:03d}.png" for i in range(9)]
    paths_b = [f"/data/mvtec/pcb1/test/missing/{i:03d}.png" for i in range(12)]
    # Interleave the samples so that batches mix the categories, as in a unified test set.
    order = torch.randperm(21, generator=torch.Generator().manual_seed(0))
    maps = torch.cat([maps_a, maps_b])[order]
    masks = torch.cat([masks_a, masks_b])[order]
    paths = [(paths_a + paths_b)[i] for i in order.tolist()]
    return maps, masks, paths, {"bottle": (maps_a, masks_a), "pcb1": (maps_b, masks_b)}


@pytest.mark.parametrize(
    ("make_metric", "reference"),
    [
        (lambda: AUPR(fields=["anomaly_map", "gt_mask"]), pixel_ap),
        (PaperDice, reference_paper_dice),
        (
            lambda: AUROC(fields=["pred_score", "gt_label"]),
            lambda maps, masks: roc_auc_score(masks.flatten(1).any(1).numpy(), maps.amax(dim=(-2, -1)).numpy()),
        ),
    ],
    ids=["pixel_AP", "DSC", "image_AUROC"],
)
def test_per_category_values_and_macro_mean(make_metric, reference):
    maps, masks, paths, categories = two_categories()
    metric = PerCategory(make_metric(), name="m")
    update_in_batches(metric, maps, masks, batch_size=4, paths=paths)
    values = {category: value.item() for category, value in metric.compute_per_category().items()}
    expected = {category: reference(*data) for category, data in categories.items()}
    assert values == pytest.approx(expected, abs=TOL)
    assert metric.compute().item() == pytest.approx(np.mean(list(expected.values())), abs=TOL)
    assert metric.name == "m/mean"


def test_per_category_aupro_equals_aupro_of_each_category():
    maps, masks, paths, categories = two_categories()
    metric = PerCategory(AUPRO(fields=["anomaly_map", "gt_mask"]))
    update_in_batches(metric, maps, masks, batch_size=5, paths=paths)
    expected = {}
    for category, (category_maps, category_masks) in categories.items():
        alone = AUPRO(fields=["anomaly_map", "gt_mask"])
        alone.update(make_batch(category_maps, category_masks))
        expected[category] = alone.compute().item()
    values = {category: value.item() for category, value in metric.compute_per_category().items()}
    assert values == pytest.approx(expected, abs=TOL)
    # The per-category copies (AUPRO has a buffer) stay out of checkpoints; reset forgets them.
    assert not [key for key in metric.state_dict() if "per_category" in key]
    metric.reset()
    assert metric.categories == []


def test_per_category_non_strict_metric_skips_batches_without_masks():
    metric = PerCategory(AUPR(fields=["anomaly_map", "gt_mask"], strict=False))
    batch = ImageBatch(image=torch.zeros(2, 3, 4, 4), pred_score=torch.rand(2), image_path=["/d/a/test/x/0.png"] * 2)
    metric.update(batch)
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        assert metric.compute() is None


# ------------------------------------------------------------------------------- scores in [0, 16]
def uniaslike_maps(num_images, seed):
    """Products of four maps in [0, 2] (like UniAS's fused map), anomalous regions higher."""
    maps, masks = random_maps(num_images=num_images, size=20, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    factors = 2 * torch.rand(4, *maps.shape, generator=generator) ** 3
    raw = (factors.prod(0) * (0.3 + maps) ** 2).clamp(max=16)
    raw[masks] = raw[masks] + 6 * torch.rand(int(masks.sum()), generator=generator)
    return raw.clamp(max=16).float(), masks


def fit_post_processor(post_processor, maps, masks):
    """Fit thresholds and min/max as anomalib does after validation (the hooks ignore trainer and module)."""
    post_processor.on_validation_batch_end(None, None, make_batch(maps, masks))
    post_processor.on_validation_epoch_end(None, None)


def evaluate_post_processed(post_processor, maps, masks):
    metrics = {
        "pixel_AP": AUPR(fields=["anomaly_map", "gt_mask"]),
        "pixel_AUROC": AUROC(fields=["anomaly_map", "gt_mask"]),
        "image_AUROC": AUROC(fields=["pred_score", "gt_label"]),
        "DSC": PaperDice(),
    }
    for start in range(0, maps.shape[0], 6):
        batch = make_batch(maps[start : start + 6], masks[start : start + 6])
        post_processor.on_test_batch_end(None, None, batch)
        assert batch.anomaly_map.min() >= 0 and batch.anomaly_map.max() <= 1
        for metric in metrics.values():
            metric.update(batch)
    return {name: metric.compute().item() for name, metric in metrics.items()}


def test_post_processor_keeps_sklearn_values_of_raw_maps_in_0_16():
    validation_maps, validation_masks = uniaslike_maps(12, seed=3)
    test_maps, test_masks = uniaslike_maps(30, seed=4)
    # Test scores beyond the validation range, as happens with a separate validation split.
    test_maps[-5:] = (test_maps[-5:] * 4).clamp(max=16)
    assert test_maps.max() > validation_maps.max() and test_maps.max() > 1

    expected = {
        "pixel_AP": pixel_ap(test_maps, test_masks),
        "pixel_AUROC": roc_auc_score(test_masks.numpy().ravel(), test_maps.numpy().ravel()),
        "image_AUROC": roc_auc_score(test_masks.flatten(1).any(1).numpy(), test_maps.amax(dim=(-2, -1)).numpy()),
        "DSC": reference_paper_dice(test_maps, test_masks),
    }
    ours = UniASPostProcessor()
    fit_post_processor(ours, validation_maps, validation_masks)
    assert evaluate_post_processed(ours, test_maps, test_masks) == pytest.approx(expected, abs=TOL)

    # anomalib's default normalisation clamps everything beyond the validation range into ties.
    default = PostProcessor()
    fit_post_processor(default, validation_maps, validation_masks)
    clamped = evaluate_post_processed(default, test_maps, test_masks)
    assert abs(clamped["pixel_AP"] - expected["pixel_AP"]) > 1e-3


def test_post_processor_threshold_maps_to_one_half():
    maps, masks = uniaslike_maps(12, seed=5)
    post_processor = UniASPostProcessor()
    fit_post_processor(post_processor, maps, masks)
    threshold = post_processor.pixel_threshold
    batch = make_batch(maps, masks)
    post_processor.on_test_batch_end(None, None, batch)
    assert torch.equal(batch.pred_mask, maps > threshold)
    assert torch.equal(batch.pred_label, maps.amax(dim=(-2, -1)) > post_processor.image_threshold)
    # The inference / export path (forward) uses the same normalisation.
    output = post_processor(InferenceBatch(pred_score=maps.amax(dim=(-2, -1)), anomaly_map=maps))
    assert torch.equal(output.anomaly_map, batch.anomaly_map)
    assert torch.allclose(UniASPostProcessor._normalize(threshold, threshold, threshold, threshold), torch.tensor(0.5))


def test_post_processor_without_fitted_statistics_still_preserves_ranks():
    maps, masks = uniaslike_maps(10, seed=6)
    batch = make_batch(maps, masks)
    UniASPostProcessor().on_test_batch_end(None, None, batch)
    metric = AUPR(fields=["anomaly_map", "gt_mask"])
    metric.update(batch)
    assert metric.compute().item() == pytest.approx(pixel_ap(maps, masks), abs=TOL)


# ------------------------------------------------------------------------------------------- evaluator
def test_unias_evaluator_metrics_are_exact_on_raw_maps_too():
    """Without post-processing the curve metrics must not squash the batches that leave [0, 1]."""
    maps, masks = uniaslike_maps(18, seed=9)
    maps[:6] *= 0.9 / maps[:6].max()  # the first batch stays inside [0, 1], the others do not
    metrics = {metric.name: metric for metric in unias_evaluator(per_category=False).test_metrics}
    for metric in metrics.values():
        update_in_batches(metric, maps, masks, batch_size=6)
    values = {name: metrics[name].compute().item() for name in ("image_AUROC", "pixel_AUROC", "pixel_AP", "DSC")}
    assert values == pytest.approx(
        {
            "image_AUROC": roc_auc_score(masks.flatten(1).any(1).numpy(), maps.amax(dim=(-2, -1)).numpy()),
            "pixel_AUROC": roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel()),
            "pixel_AP": pixel_ap(maps, masks),
            "DSC": reference_paper_dice(maps, masks),
        },
        abs=TOL,
    )


def test_unias_evaluator_metric_names():
    names = [metric.name for metric in unias_evaluator().test_metrics]
    assert names == [
        "image_AUROC/mean", "pixel_AUROC/mean", "pixel_AP/mean", "DSC/mean", "F1max_Dice/mean", "pixel_AUPRO/mean"
    ]  # fmt: skip
    flat = [metric.name for metric in unias_evaluator(per_category=False).test_metrics]
    assert flat == ["image_AUROC", "pixel_AUROC", "pixel_AP", "DSC", "F1max_Dice", "pixel_AUPRO"]


EVALUATOR_YAML = """
evaluator:
  class_path: anomalib_unias.metrics.PerCategoryEvaluator
  init_args:
    test_metrics:
      - class_path: anomalib_unias.metrics.PerCategory
        init_args:
          name: pixel_AP
          metric:
            class_path: anomalib.metrics.AUPR
            init_args: {fields: [anomaly_map, gt_mask], strict: false}
      - class_path: anomalib_unias.metrics.PerCategory
        init_args:
          metric: {class_path: anomalib_unias.metrics.PaperDice, init_args: {strict: false}}
"""


def test_evaluator_from_yaml_class_path_config():
    parser = ArgumentParser()
    parser.add_argument("--evaluator", type=Evaluator)
    config = parser.parse_object(yaml.safe_load(EVALUATOR_YAML))
    evaluator = parser.instantiate_classes(config).evaluator
    assert isinstance(evaluator, PerCategoryEvaluator)
    assert [metric.name for metric in evaluator.test_metrics] == ["pixel_AP/mean", "PaperDice/mean"]
    maps, masks, paths, categories = two_categories()
    for metric in evaluator.test_metrics:
        update_in_batches(metric, maps, masks, batch_size=8, paths=paths)
    assert evaluator.test_metrics[0].compute_per_category()["pcb1"].item() == pytest.approx(
        pixel_ap(*categories["pcb1"]), abs=TOL
    )


class MapsAsImages(Dataset):
    """Samples whose image carries a raw [0, 16] score map, so that a trivial model can 'predict' it."""

    def __init__(self, maps, masks, paths):
        self.maps, self.masks, self.paths = maps, masks, paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return ImageItem(
            image=self.maps[index].expand(3, *self.maps.shape[-2:]).clone(),
            gt_mask=self.masks[index],
            gt_label=self.masks[index].any(),
            image_path=self.paths[index],
        )


class _ReturnMap(torch.nn.Module):
    def forward(self, image):
        anomaly_map = image[:, 0]
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(-2, -1)), anomaly_map=anomaly_map)


class MapModel(AnomalibModule):
    """Minimal anomalib model: the map is the first image channel."""

    def __init__(self):
        super().__init__(
            pre_processor=False, post_processor=UniASPostProcessor(), evaluator=unias_evaluator(), visualizer=False
        )
        self.model = _ReturnMap()

    def training_step(self, batch, *args, **kwargs):
        del batch, args, kwargs

    def validation_step(self, batch, *args, **kwargs):
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def configure_optimizers(self):
        return None

    @property
    def trainer_arguments(self):
        return {}

    @property
    def learning_type(self):
        return LearningType.ONE_CLASS

    def configure_callbacks(self):
        return [*super().configure_callbacks(), CategoryTableLogger()]


def test_lightning_test_logs_per_category_values_on_raw_scale(caplog: pytest.LogCaptureFixture) -> None:
    raw = {}
    for category, seed in (("bottle", 7), ("pcb1", 8)):
        maps, masks = uniaslike_maps(10, seed=seed)
        # The first batch stays inside [0, 1] and the others do not: torchmetrics would squash only those.
        maps[:4] *= 0.9 / maps[:4].max()
        raw[category] = (maps, masks, [f"/data/{category}/test/defect/{i:03d}.png" for i in range(10)])
    # Category-sorted loader, batch size 4: some batches mix both categories.
    maps = torch.cat([raw[c][0] for c in raw])
    masks = torch.cat([raw[c][1] for c in raw])
    paths = raw["bottle"][2] + raw["pcb1"][2]
    loader = DataLoader(MapsAsImages(maps, masks, paths), batch_size=4, collate_fn=ImageBatch.collate)

    model = MapModel()
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, loader)  # fits the post-processor's thresholds on the raw maps
    with caplog.at_level("INFO", logger="anomalib_unias"):
        (results,) = trainer.test(model, loader)

    for category, (category_maps, category_masks, _) in raw.items():
        assert results[f"pixel_AP/{category}"] == pytest.approx(pixel_ap(category_maps, category_masks), abs=TOL)
        assert results[f"DSC/{category}"] == pytest.approx(reference_paper_dice(category_maps, category_masks), abs=TOL)
        assert results[f"pixel_AUROC/{category}"] == pytest.approx(
            roc_auc_score(category_masks.numpy().ravel(), category_maps.numpy().ravel()), abs=TOL
        )
    for name in ("image_AUROC", "pixel_AUROC", "pixel_AP", "DSC", "F1max_Dice", "pixel_AUPRO"):
        mean = (results[f"{name}/bottle"] + results[f"{name}/pcb1"]) / 2
        assert results[f"{name}/mean"] == pytest.approx(mean, abs=TOL)
    table = caplog.text
    assert "| category | image_AUROC | pixel_AUROC | pixel_AP | DSC | F1max_Dice | pixel_AUPRO |" in table
    assert f"| pcb1 | {100 * results['image_AUROC/pcb1']:.2f} |" in table


# ---------------------------------------------------------------------------------------------- report
def test_format_category_table():
    logged = {
        "pixel_AP/bottle": torch.tensor(0.5),
        "pixel_AP/cable": 0.25,
        "pixel_AP/mean": 0.375,
        "DSC/cable": 0.1,
        "DSC/mean": 0.1,
        "train/loss": 3.0,  # no "/mean": not a per-category metric
        "image_F1Score": 0.9,
    }
    expected = """\
| category | pixel_AP | DSC |
|---|---|---|
| bottle | 50.00 | n/a |
| cable | 25.00 | 10.00 |
| mean | 37.50 | 10.00 |

""" + NOT_COMPUTABLE_NOTE.format(categories="bottle")
    assert format_category_table(logged) == expected
    assert format_category_table({"image_AUROC": 1.0}) == ""


IMPORT_COST_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
import anomalib.metrics, anomalib.models, anomalib.visualization
before = set(sys.modules)
import anomalib_unias.metrics
added = sorted(set(sys.modules) - before)
print(json.dumps({"added": added, "cv2_before": "cv2" in before, "skimage_before": "skimage" in before}))
"""


@pytest.mark.slow
def test_metrics_import_no_data_code(run, tmp_path) -> None:
    """``anomalib_unias.metrics`` loads neither our data package (demo generator) nor cv2/scikit-image itself.

    anomalib's own ``anomalib.metrics`` already imports cv2 (via ``anomalib.data``) and scikit-image (via
    ``anomalib.deploy``); what matters is that importing ours adds no image-processing library.
    """
    import json

    # The hook off: it would load our entry points (the whole package) when anomalib.models is imported.
    output = run([sys.executable, "-c", IMPORT_COST_SCRIPT], cwd=tmp_path, env={"ANOMALIB_PLUGINS_DISABLE": "1"}).stdout
    result = json.loads(output.strip().splitlines()[-1])
    heavy = [name for name in result["added"] if name.split(".")[0] in {"cv2", "skimage", "PIL", "tifffile"}]
    ours = [name for name in result["added"] if name.startswith("anomalib_unias.data")]
    assert heavy == [], heavy
    assert ours == [], ours
    assert "anomalib_unias.layout" in result["added"]


def test_a_nan_value_of_a_defined_category_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Both classes present, yet the metric comes out NaN (NaN scores): the category is n/a and the log says why."""
    from anomalib.metrics import create_anomalib_metric
    from torchmetrics import MeanMetric

    weighted_mean = create_anomalib_metric(MeanMetric)  # the mean score of the defective images
    metric = PerCategory(weighted_mean(fields=["pred_score", "gt_label"], strict=False), name="defect_score")
    for category, scores in (("good", [0.2, 0.9]), ("broken", [0.3, float("nan")])):
        metric.update(
            ImageBatch(
                image=torch.zeros(2, 3, 4, 4),
                gt_label=torch.tensor([0, 1]),
                pred_score=torch.tensor(scores),
                image_path=[f"root/{category}/test/{kind}/0.png" for kind in ("good", "bad")],
            )
        )
    with caplog.at_level("WARNING"):
        values = metric.compute_per_category()
    assert set(values) == {"good"}
    assert "defect_score came out NaN (or none) for broken although both classes are present" in caplog.text
