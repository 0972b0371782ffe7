"""Accuracy of the deployed UniAS: pAP and DSC of PyTorch vs OpenVINO FP32, FP16 and INT8 on a test set.

    python benchmarks/int8_accuracy.py --ckpt results/UniAS/.../model.ckpt            # MTD (../shared/data/mtd)
    python benchmarks/int8_accuracy.py --ckpt model.ckpt --root datasets/unias_demo --int8-variants anomalib map-fp32
    python benchmarks/int8_accuracy.py --ckpt model.ckpt --openvino-model "anomalib export int8=path/model.xml"

Exports the checkpoint once with anomalib's ``to_openvino`` (default dynamic input: any image size,
resized inside the graph), saves FP16 and INT8 versions of that model (INT8: NNCF post-training
quantisation calibrated on training images, see :mod:`anomalib_unias.export`), then runs every
runtime on every test image at its original size, one image at a time:

* ``pytorch``: ``AnomalibModule.forward`` in eager mode, the same pipeline as the exported graph and
  as ``anomalib test`` (UniAS's pre-processor resizes without antialiasing, like the export);
* ``openvino fp32`` / ``fp16`` / ``int8`` (and other INT8 variants): the compiled OpenVINO models;
* each OpenVINO model twice: pinned to FP32 execution (``INFERENCE_PRECISION_HINT=f32``) and on the runtime's
  default (what ``OpenVINOInferencer(path)`` gives: bfloat16 on CPUs with bfloat16 units); the runtime column
  names the hint and what the plugin ran in;
* any model given with ``--openvino-model NAME=XML`` (e.g. what ``anomalib export --compression_type
  INT8_PTQ`` wrote), evaluated the same way.

On CPUs with bfloat16 units OpenVINO runs the FP32 parts of every model in bfloat16 by default, a different
precision than the one named: both are measured (``--precision-hints``).

Ground-truth masks are resized to the model size with nearest neighbour (the pre-processor's
transform, as in ``anomalib test``).  Metrics per category, macro mean over categories (the paper's
protocol): pixel AP (anomalib's ``AUPR`` with ``normalization=None``) and the paper's DSC
(:class:`~anomalib_unias.metrics.PaperDice`).  Prints a markdown table with each runtime's difference
to PyTorch (goal: INT8 loses at most 1 pAP point) and writes ``int8_accuracy.csv`` / ``.md`` to
``--output`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import openvino as ov
import torch
from _common import RESULTS, data_root, run_stamp
from anomalib.engine import Engine
from anomalib.metrics import AUPR
from torchvision import tv_tensors

from anomalib_unias import UniAS
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.export import INT8_VARIANTS, export_openvino_precisions
from anomalib_unias.fusion_selection import restore_fusion
from anomalib_unias.metrics import PaperDice, PerCategory

DEFAULT_ROOT = data_root("mtd")
REFERENCE_RUNTIME = "pytorch"

Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # image (1,3,H,W) -> (map, label)


def evenly_spaced(count: int, total: int) -> list[int]:
    """``count`` indices spread over ``range(total)`` (all of them when ``count >= total``)."""
    if count >= total:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def pytorch_predictors(model: UniAS) -> dict[str, Predictor]:
    def deployed(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(image)
        return out.anomaly_map, out.pred_label

    return {REFERENCE_RUNTIME: deployed}


def openvino_predictor(path: Path, threads: int, hint: str) -> tuple[Predictor, str]:
    """A compiled OpenVINO model; ``hint`` ``"f32"`` pins FP32 execution, ``"default"`` leaves the CPU plugin's own.

    Returns the predictor and the precision the plugin runs in (``f32``, or ``bf16`` by default on CPUs with
    bfloat16 units).
    """
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
    if hint != "default":
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(path, "CPU", config)

    def predict(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = compiled(image.numpy())
        return torch.from_numpy(out["anomaly_map"]), torch.from_numpy(out["pred_label"])

    return predict, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def evaluate(predict: Predictor, dataset: object, indices: list[int], masks: list[torch.Tensor]) -> dict:
    """PAP and DSC (per-category macro means) and the maps/labels of ``predict`` on the test images."""
    metrics = {
        "pAP": PerCategory(AUPR(fields=["anomaly_map", "gt_mask"], normalization=None), name="pAP"),
        "DSC": PerCategory(PaperDice(), name="DSC"),
    }
    maps, labels = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for index, mask in zip(indices, masks, strict=True):
            item = dataset[index]
            anomaly_map, label = predict(item.image[None].contiguous())
            anomaly_map = anomaly_map.float().reshape(mask.shape)
            batch = SimpleNamespace(anomaly_map=anomaly_map, gt_mask=mask, image_path=[item.image_path])
            for metric in metrics.values():
                metric.update(batch)
            maps.append(anomaly_map.reshape(-1).clone())
            labels.append(bool(label.reshape(-1)[0]))
    seconds = (time.perf_counter() - start) / max(1, len(indices))
    values = {name: 100 * float(metric.compute()) for name, metric in metrics.items()}
    return {**values, "maps": torch.cat(maps), "labels": np.asarray(labels), "s_per_image": seconds}


def fit_thresholds(model: UniAS, datamodule: UnifiedFolder) -> str:
    """Fit the model's thresholds on the validation split, as ``anomalib train`` does; describe them.

    Labels are compared across runtimes with these: a checkpoint whose validation never ran labels by the
    default cut, where every runtime trivially agrees.
    """
    with tempfile.TemporaryDirectory(prefix="unias_int8_validate_") as tmp:
        engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp)
        engine.validate(model=model, datamodule=datamodule, verbose=False)
    model.eval()
    fitted = model.post_processor.thresholds().global_thresholds
    return f"image {fitted.image:.4g}, pixel {fitted.pixel:.4g} on raw scores (global)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="trained UniAS checkpoint (.ckpt)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="MVTec-layout root (default: MTD)")
    parser.add_argument("--categories", nargs="+", default=None, help="default: every category under --root")
    parser.add_argument("--calibration-images", type=int, default=300, help="INT8 calibration training images")
    parser.add_argument(
        "--int8-variants", nargs="+", default=["head-int8", "map-fp32", "anomalib"], choices=list(INT8_VARIANTS)
    )
    parser.add_argument("--limit", type=int, default=None, help="only this many test images, evenly spaced")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--precision-hints", nargs="+", default=["f32", "default"], choices=["f32", "default"],
        help="OpenVINO INFERENCE_PRECISION_HINT per model: f32, and/or the CPU plugin's default (bf16 where it can)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--openvino-model", action="append", default=[], metavar="NAME=XML",
        help="also evaluate this exported OpenVINO model under NAME (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    extra_models = dict(item.split("=", 1) for item in args.openvino_model)
    torch.set_num_threads(args.threads)

    model = UniAS.load_from_checkpoint(args.ckpt)
    if model.model.head.architecture.fuses_automatically:  # keep the checkpoint's choice (validation would redo it)
        fusion = model.model.head.anomaly_map.fusion
        model = UniAS.load_from_checkpoint(args.ckpt, map_fusion=fusion.kind, map_strides=list(fusion.strides))
        restore_fusion(torch.load(args.ckpt, map_location="cpu", weights_only=False), model.model)  # and its z-score
    datamodule = UnifiedFolder(args.root, categories=args.categories, num_workers=0)
    datamodule.setup()
    thresholds = fit_thresholds(model, datamodule)
    print(f"thresholds fitted on the validation split: {thresholds}")
    train, test = datamodule.train_data, datamodule.test_data
    test_indices = evenly_spaced(args.limit or len(test), len(test))
    calibration = [train[i].image[None].numpy() for i in evenly_spaced(args.calibration_images, len(train))]
    # ground truth at model resolution, exactly as anomalib's test loop resizes it (nearest neighbour)
    transform = model.pre_processor.transform
    masks = [transform(test[i].image[None], tv_tensors.Mask(test[i].gt_mask[None]))[1] for i in test_indices]
    print(f"{len(test_indices)} test images, {len(calibration)} calibration images, categories {datamodule.categories}")

    predictors = pytorch_predictors(model)
    with tempfile.TemporaryDirectory(prefix="unias_int8_accuracy_") as tmp:
        start = time.perf_counter()
        paths, seconds = export_openvino_precisions(model, tmp, calibration, int8_variants=args.int8_variants)
        steps = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
        print(f"exported in {time.perf_counter() - start:.0f} s: {steps}")
        models = {f"openvino {name}": path for name, path in paths.items()} | {
            name: Path(xml) for name, xml in extra_models.items()
        }
        for name, path in models.items():
            for hint in args.precision_hints:
                predict, runs_in = openvino_predictor(path, args.threads, hint)
                predictors[f"{name} [{hint}: {runs_in}]"] = predict
        results = {}
        for name, predict in predictors.items():
            results[name] = evaluate(predict, test, test_indices, masks)
            print(f"{name}: pAP {results[name]['pAP']:.2f} DSC {results[name]['DSC']:.2f}", flush=True)

    reference = results[REFERENCE_RUNTIME]
    rows = []
    for name, result in results.items():
        diff = (result["maps"] - reference["maps"]).abs()
        rows.append(
            {
                "runtime": name,
                "pAP": result["pAP"],
                "pAP_diff": result["pAP"] - reference["pAP"],
                "DSC": result["DSC"],
                "DSC_diff": result["DSC"] - reference["DSC"],
                "map_max_abs_diff": float(diff.max()),
                "map_mean_abs_diff": float(diff.mean()),
                "labels_agree": float((result["labels"] == reference["labels"]).mean()),
                "labelled_anomalous": float(result["labels"].mean()),
                "s_per_image": result["s_per_image"],
            }
        )
    lines = [
        f"# UniAS deployed accuracy: {args.ckpt.name} on {args.root} ({len(test_indices)} test images)",
        "",
        f"`python benchmarks/int8_accuracy.py {' '.join(argv if argv is not None else sys.argv[1:])}` ({run_stamp()}, "
        f"{args.threads} threads, one image at a time).",
        "",
        "pAP and DSC in points (per-category macro mean); differences to PyTorch eager (`pytorch`); maps are the "
        "normalised anomaly maps in [0, 1) at model resolution; goal: INT8 loses at most 1 pAP point. Image "
        f"labels use the thresholds fitted on the validation split before export ({thresholds}).",
        "",
        "| runtime | pAP | ΔpAP | DSC | ΔDSC | max abs Δmap | mean abs Δmap | labels agree | labelled anomalous "
        "| s/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['runtime']} | {r['pAP']:.2f} | {r['pAP_diff']:+.2f} | {r['DSC']:.2f} | {r['DSC_diff']:+.2f} "
        f"| {r['map_max_abs_diff']:.2e} | {r['map_mean_abs_diff']:.2e} | {100 * r['labels_agree']:.1f}% "
        f"| {100 * r['labelled_anomalous']:.1f}% | {r['s_per_image']:.3f} |"
        for r in rows
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "int8_accuracy.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.output / "int8_accuracy.md").write_text(report)
    print(f"Wrote {args.output / 'int8_accuracy.csv'} and .md")


if __name__ == "__main__":
    main()
