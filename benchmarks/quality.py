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

The work is split by job: ``_baselines.py`` (PatchCore and PaDiM at their best, and the two substitutions
stated in the tables), ``_quality_scoring.py`` (every map fusion on both halves, the learning curve, the maps),
``_quality_report.py`` (tables and pictures); this file holds the command line and one model's job.
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
from pathlib import Path
from typing import Any

import yaml
from _baselines import BASELINE_BACKBONE, best_blur, padim, patchcore
from _common import QUALITY_SEED, REPO, RESULTS, data_root, peak_rss_mib, run_stamp
from _quality_report import LABELS, write_report
from _quality_scoring import FUSIONS, METRICS, ImageSizePixelAP, LearningCurve, MapCollector, evaluate, keep_half
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import seed_everything
from lightning.pytorch.trainer.states import TrainerFn
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_unias import UniAS
from anomalib_unias.backbone import FrozenBackbone, feature_network, install_bundled_weights
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.metrics import unias_evaluator
from anomalib_unias.post_processor import UniASPostProcessor
from anomalib_unias.resolution import WorkingResolution, data_image_sizes

DEFAULT_ROOT = data_root("mtd")
MODELS = ("unias", "patchcore", "padim")


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


def data_and_resolution(
    name: str, args: argparse.Namespace, recipe: dict[str, Any]
) -> tuple[UnifiedFolder, WorkingResolution]:
    """The data module, set up with validation on the select half, and the one working resolution of every model.

    ``image_size: auto`` is resolved here as the model resolves it (the same image sample), and written into the
    recipe, so that every model works at the same resolution.
    """
    datamodule = UnifiedFolder(
        root=args.root,
        train_batch_size=recipe["train_batch_size"] if name == "unias" else 16,
        eval_batch_size=recipe["eval_batch_size"],
        num_workers=args.num_workers,
        seed=args.seed,
    )
    # Set up once, as the trainer would: validation (thresholds, and the fusion of map_fusion: auto) sees the select
    # half of the test images only; the tests restrict the test set to each half in turn.
    datamodule.setup(TrainerFn.FITTING)
    keep_half(datamodule.val_data, "select")
    input_size = tuple(recipe["model"].get("input_size", (224, 224)))
    resolution = WorkingResolution.of(
        input_size=input_size,
        image_size=recipe["model"].get("image_size"),
        tile_stride=tuple(recipe["model"].get("tile_stride") or input_size),
        train_tiles=recipe["model"].get("train_tiles"),
    )
    if resolution.auto:
        resolution = resolution.resolve(data_image_sizes(datamodule)[1])
        recipe["model"]["image_size"], recipe["model"]["train_tiles"] = list(resolution.size), resolution.train_tiles
    return datamodule, resolution


def build_model(
    name: str, args: argparse.Namespace, recipe: dict[str, Any], image_size: tuple[int, int]
) -> tuple[AnomalibModule, dict[str, Any]]:
    """The model of job ``name`` and its settings (for the tables), every model with the same pre/post-processing."""
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
    if name == "unias":
        settings = {
            "recipe": Path(args.recipe).name,
            **recipe["model"],
            "max_epochs": recipe["max_epochs"],
            "train_batch_size": recipe["train_batch_size"],
        }
        return UniAS(**recipe["model"], **common), settings
    install_bundled_weights(["lite0"])  # anomalib's timm extractor reads the Hugging Face cache
    if name == "patchcore":
        settings = {
            "backbone": BASELINE_BACKBONE,
            "layers": args.patchcore_layers,
            "coreset_ratio": args.coreset_ratio,
            "num_neighbors": 9,
            "coreset": "greedy_coreset (raw features, squared L2)",
        }
        return patchcore(args.patchcore_layers, args.coreset_ratio, args.seed, **common), settings
    settings = {
        "backbone": BASELINE_BACKBONE,
        "layers": args.padim_layers,
        "n_features": "all",
        "inverse": "Cholesky, chunked",
    }
    return padim(args.padim_layers, **common), settings


def test_on_halves(
    name: str, model: AnomalibModule, engine: Engine, datamodule: UnifiedFolder, args: argparse.Namespace, job: dict
) -> tuple[dict[str, float], dict[str, float], float]:
    """Choose on the select half (UniAS: its own test; the baselines: their map blur), then test the held-out half.

    ``job`` holds the model's ``settings`` (the blur chosen is added) and its :class:`MapCollector`, which keeps
    the held-out test's maps.  Returns the held-out results (anomalib's metric names), the select half's metrics
    and the held-out test's seconds.
    """
    everything = datamodule.test_data.samples
    keep_half(datamodule.test_data, "select")
    if name == "unias":
        selection = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    else:  # the baselines at their best: their map blur chosen on the select half
        selection = best_blur(model, engine, datamodule, args.baseline_sigmas, job["settings"])
    datamodule.test_data.samples = everything
    keep_half(datamodule.test_data, "holdout")
    job["collector"].clear()
    start = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    seconds = time.perf_counter() - start
    return results, {metric: float(selection.get(f"{metric}/mean", float("nan"))) for metric in METRICS}, seconds


def run_job(name: str, args: argparse.Namespace) -> None:
    """Train and test one model; write its metrics, per-defect pAP, curve and panel maps to ``--output``."""
    output = Path(args.output)
    recipe = load_recipe(Path(args.recipe), args.set, args.max_epochs)
    seed_everything(args.seed, workers=True)
    datamodule, resolution = data_and_resolution(name, args, recipe)
    model, settings = build_model(name, args, recipe, resolution.size)
    epochs = recipe["max_epochs"] if name == "unias" else 1
    points = {max(1, round(epochs * k / args.curve_points)) for k in range(1, args.curve_points + 1)}
    curve = LearningCurve(datamodule, points) if name == "unias" else None
    # The baselines tile at the same tile size with anomalib's plain, non-overlapping tiles (UniAS tiles itself).
    tiling = (
        [TilerConfigurationCallback(enable=True, tile_size=resolution.input_size, stride=resolution.input_size)]
        if resolution.tiled and name != "unias"
        else []
    )
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
    levels, at_image_size = {}, {}
    if name == "unias":  # every map fusion on both test halves, before the test set is split for the tests
        settings["map"] = model.model.head.anomaly_map.fusion.name  # the recipe's, or the one auto chose
        image_size_scores = ImageSizePixelAP(datamodule.test_data.samples)
        fusions = ["configured", *FUSIONS]
        levels = evaluate(model, datamodule, fusions=fusions, metrics=METRICS, at_image_size=image_size_scores)
        at_image_size = image_size_scores.compute()
    job = {"settings": settings, "collector": collector}
    results, selection, test_seconds = test_on_halves(name, model, engine, datamodule, args, job)
    summary = {
        "model": name,
        **{metric: float(results.get(f"{metric}/mean", results.get(metric, float("nan")))) for metric in METRICS},
        "fit_seconds": round(fit_seconds, 1),
        "train_seconds": round(curve.train_seconds if curve else fit_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "test_images": len(collector.paths),
        "peak_rss_gb": round(peak_rss_mib() / 1024, 2),
        "run": run_record(args),
        "input_size": list(resolution.input_size),
        "image_size": list(resolution.size),
        "tile_stride": list(resolution.tile_stride),
        "settings": settings,
        "selection_half": selection,
    }
    per_category = {key: float(value) for key, value in results.items() if "/" in key and not key.endswith("/mean")}
    job = {
        "summary": summary,
        "curve": curve.rows if curve else [],
        "per_defect": collector.per_defect_ap(),
        "per_category": per_category,
        "levels": levels,
        "pixel_AP_at_image_size": at_image_size,
    }
    (output / f"{name}.json").write_text(json.dumps(job, indent=1))
    collector.save_panel_maps(output / f"{name}_maps.npz")
    print(json.dumps(summary), flush=True)


def run_record(args: argparse.Namespace) -> dict[str, str]:
    """The command (as a user types it), the date, the commit and the CPU of this run, for the reports' header."""
    words = ["python benchmarks/quality.py"]
    defaults = vars(build_parser().parse_args([]))
    for key, value in vars(args).items():
        if key != "job" and value != defaults[key]:
            flag = "--" + key.replace("_", "-")
            words += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return {"command": " ".join(words), "stamp": run_stamp()}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="MVTec-layout dataset root (default: MTD)")
    parser.add_argument("--recipe", default=str(REPO / "configs" / "mtd.yaml"), help="UniAS config YAML")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--output", default=str(RESULTS / "quality"))
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
    parser.add_argument("--seed", type=int, default=QUALITY_SEED)
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
        (output / f"{name}.json").unlink(missing_ok=True)  # a model that fails now must not report an earlier run
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
