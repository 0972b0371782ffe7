"""Deployment speed of UniAS on this machine's CPU: PyTorch eager vs OpenVINO FP32 / FP16 / INT8.

    python benchmarks/deploy_speed.py            # B4 and Lite0 at paper widths, 224 x 224 (tens of minutes)
    python benchmarks/deploy_speed.py --quick    # smoke test of this script: Lite0, tiny widths, 64 x 64
    python benchmarks/deploy_speed.py --backbones tf_efficientnet_lite0 --size 128 --image-size 256 4096 \
        --widths cpu --batch-sizes 1    # one 256 x 4096 strip, tiled into 128 x 128 tiles (configs/cpu.yaml's model)

Measures, per backbone (random weights: speed does not depend on them):

* inference images/s at each batch size (default 1 and 8) of the whole deployed pipeline (resize +
  normalisation, model, anomaly map, normalisation and thresholding): PyTorch eager FP32
  (``AnomalibModule.forward`` under ``torch.inference_mode``), and OpenVINO FP32, FP16 and INT8 (NNCF
  post-training quantisation on a few demo images, the map tail kept in FP32 as ``INT8_PTQ`` ships it),
  compiled for ``CPU`` with ``INFERENCE_NUM_THREADS``;
  the OpenVINO models come from ONE export with anomalib's ``to_openvino`` at a fixed input size with a
  dynamic batch (:func:`anomalib_unias.export.export_openvino_precisions`);
* the training step at batch 8 in PyTorch (forward + backward + gradient clipping + AdamW);
* the peak resident memory (RSS) of each configuration: every configuration runs in its own fresh
  process (OpenVINO ones import neither torch nor anomalib), and the peak is read after each batch size.

Times are medians of ``--repeats`` calls (training: half as many) after one warm-up call.

Prints markdown tables beside the reference code's numbers (measured on a 2-core Xeon with AVX-512/VNNI,
B4 at 224) and writes ``deploy_speed.csv`` / ``deploy_speed.md`` (``deploy_speed_quick.*`` with
``--quick``) to ``--output`` (default ``benchmarks/results/``).  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, median_seconds, openvino_speed, peak_rss_mib, run_stamp, run_worker

TRAIN_BATCH_SIZE = 8
BACKBONES = ("tf_efficientnet_b4", "tf_efficientnet_lite0")
WIDTHS = {
    "paper": {},
    "cpu": {"pixel_dim": 64, "hidden_dim": 64, "ffn_dim": 256, "num_encoder_layers": 1, "neighbour_size": 5},
    "tiny": {"pixel_dim": 32, "hidden_dim": 32, "ffn_dim": 64, "num_encoder_layers": 1, "neighbour_size": 3},
}
"""Head widths: the paper's, the CPU recipes' (configs/cpu.yaml, mtd.yaml), the tests'."""
REFERENCE = {  # reference code, tf_efficientnet_b4 at 224 x 224, paper widths, 2-core Xeon with AVX-512/VNNI
    "machine": "2-core Xeon, AVX-512/VNNI",
    "eval": {1: 1 / 0.636, 8: 1.63},  # images/s
    "train_step_s": 13.7,
}
OPENVINO_PRECISIONS = ("fp32", "fp16", "int8-head-int8")
"""The OpenVINO models timed; INT8 is the shipped variant (``INT8_PTQ``: the map tail kept in FP32)."""


# --------------------------------------------------------------------------------------------- workers
def _build_model(spec: dict[str, Any]) -> Any:
    import torch

    from anomalib_unias import UniAS

    torch.manual_seed(0)
    size = spec["size"]
    return UniAS(
        backbone=spec["backbone"],
        pre_trained=False,
        input_size=(size, size),
        image_size=tuple(spec["image"]),
        visualizer=False,
        **WIDTHS[spec["widths"]],
    )


def worker_torch_eval(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(spec["threads"])
    model = _build_model(spec).eval()
    rows = []
    with torch.inference_mode():
        for batch in spec["batch_sizes"]:
            images = torch.rand(batch, 3, *spec["image"])
            seconds = median_seconds(lambda images=images: model(images), spec["repeats"])
            rows.append({"batch": batch, "images_per_s": batch / seconds, "peak_rss_mib": peak_rss_mib()})
    return rows


def worker_torch_train(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(spec["threads"])
    module = _build_model(spec)
    network = module.model.train()
    optimizer = module.configure_optimizers()["optimizer"]  # the model's own recipe: AdamW, clipping below
    clip = module.trainer_arguments["gradient_clip_val"]
    images = torch.rand(TRAIN_BATCH_SIZE, 3, *spec["image"])

    def step() -> None:
        loss, _ = network(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.configure_gradient_clipping(optimizer, clip, "norm")
        optimizer.step()

    seconds = median_seconds(step, spec["train_repeats"])
    return [{"batch": TRAIN_BATCH_SIZE, "seconds_per_step": seconds, "peak_rss_mib": peak_rss_mib()}]


def worker_openvino(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return openvino_speed(spec["model"], spec["threads"], spec["batch_sizes"], spec["image"], spec["repeats"])


WORKERS = {"torch-eval": worker_torch_eval, "torch-train": worker_torch_train, "openvino": worker_openvino}


# ---------------------------------------------------------------------------------------------- parent
def calibration_images(count: int, size: tuple[int, int], folder: Path) -> list[Any]:
    """``count`` demo training images (all categories), resized (antialiased) to ``size``, as (1, 3, h, w)."""
    from anomalib.data.utils import read_image
    from torch.nn import functional as F  # noqa: N812

    from anomalib_unias.data import DEMO_CATEGORIES, generate_demo_dataset

    per_category = -(-count // len(DEMO_CATEGORIES))
    generate_demo_dataset(folder, num_train=per_category, num_test_good=0, num_test_defect=0)
    files = sorted(folder.glob("*/train/good/*.png"))[:count]
    images = []
    for path in files:
        image = read_image(path, as_tensor=True)[None]
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
        images.append(image.clamp(0, 1).numpy())
    return images


def measure_backbone(backbone: str, args: argparse.Namespace, work: Path, calibration: list[Any]) -> list[dict]:
    """Export one backbone, then run every configuration in its own process; returns the result rows."""
    from anomalib_unias.export import export_openvino_precisions

    spec = {"backbone": backbone, "size": args.size, "image": args.image_size, "widths": args.widths}
    spec |= {"threads": args.threads, "batch_sizes": args.batch_sizes, "repeats": args.repeats}
    spec["train_repeats"] = max(1, args.repeats // 2)
    image = "x".join(map(str, args.image_size))
    base = {"backbone": backbone, "size": args.size, "image": image, "widths": args.widths}
    rows: list[dict] = []
    print(f"[{backbone}] exporting to OpenVINO ...", flush=True)
    paths, seconds = export_openvino_precisions(
        _build_model(spec),
        work / backbone,
        calibration_images=[] if args.skip_int8 else calibration,
        input_size=tuple(args.image_size),
        int8_variants=("head-int8",),
        onnx_kwargs={"optimize": False} if args.quick else None,
    )
    rows += [{**base, "mode": "export", "runtime": f"openvino {name}", "seconds": s} for name, s in seconds.items()]
    print(f"[{backbone}] PyTorch eager ...", flush=True)
    rows += [
        {**base, "mode": "eval", "runtime": "pytorch fp32", **row} for row in run_worker(__file__, "torch-eval", spec)
    ]
    rows += [
        {**base, "mode": "train", "runtime": "pytorch fp32", **row} for row in run_worker(__file__, "torch-train", spec)
    ]
    for precision in OPENVINO_PRECISIONS:
        if precision in paths:
            print(f"[{backbone}] OpenVINO {precision} ...", flush=True)
            result = run_worker(__file__, "openvino", {**spec, "model": str(paths[precision])})
            rows += [{**base, "mode": "eval", "runtime": f"openvino {precision}", **row} for row in result]
    return rows


def _reference_applies(row: dict) -> bool:
    return row["backbone"] == "tf_efficientnet_b4" and row["image"] == "224x224" and row["widths"] == "paper"


def markdown_report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"# UniAS deployment speed ({'quick smoke test, ' if args.quick else ''}{args.widths} widths)",
        "",
        f"`{args.command}` ({run_stamp()}).",
        "",
        f"{len(os.sched_getaffinity(0))} usable cores.  Threads: {args.threads}.  "
        f"Images {args.image_size[0]} x {args.image_size[1]}"
        + (f", tiled into {args.size} x {args.size} tiles" if tuple(args.image_size) != (args.size, args.size) else "")
        + f"; random weights.  Reference code: {REFERENCE['machine']}, "
        "tf_efficientnet_b4 at 224, PyTorch (a different CPU: compare with care).",
        "",
        "## Inference (whole pipeline: pre-processing, model, anomaly map, post-processing)",
        "",
        "| backbone | runtime | OV precision hint | batch | images/s | ms/image | reference images/s "
        "| ours / reference "
        "| peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in rows if r["mode"] == "eval"):
        reference = REFERENCE["eval"].get(row["batch"]) if _reference_applies(row) else None
        ratio = f"{row['images_per_s'] / reference:.2f}x" if reference else ""
        lines.append(
            f"| {row['backbone']} | {row['runtime']} | {row.get('execution_precision', 'f32')} | {row['batch']} "
            f"| {row['images_per_s']:.2f} | {1000 / row['images_per_s']:.1f} "
            f"| {f'{reference:.2f}' if reference else ''} | {ratio} | {row['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"## Training step, batch {TRAIN_BATCH_SIZE} (forward + backward + clip + AdamW, PyTorch)",
        "",
        "| backbone | s/step | reference s/step | reference / ours | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for row in (r for r in rows if r["mode"] == "train"):
        reference = REFERENCE["train_step_s"] if _reference_applies(row) else None
        ratio = f"{reference / row['seconds_per_step']:.2f}x" if reference else ""
        lines.append(
            f"| {row['backbone']} | {row['seconds_per_step']:.3f} | {reference or ''} | {ratio} "
            f"| {row['peak_rss_mib']:.0f} |"
        )
    lines += ["", "## Export (one anomalib to_openvino, then FP16 / INT8 from it)", "", "| backbone | step | s |"]
    lines += ["|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['runtime']} | {r['seconds']:.1f} |" for r in rows if r["mode"] == "export"]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["backbone", "size", "image", "widths", "mode", "runtime", "execution_precision", "batch"]
    fields += ["images_per_s", "seconds_per_step", "seconds", "peak_rss_mib"]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=None, help=f"default: {' '.join(BACKBONES)} (--quick: lite0)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measure (default 6, --quick 3)")
    parser.add_argument("--size", type=int, default=None, help="model input side (default 224, --quick 64)")
    parser.add_argument(
        "--image-size", nargs=2, type=int, default=None, metavar=("H", "W"), help="images; larger: tiled"
    )
    parser.add_argument("--widths", choices=list(WIDTHS), default=None, help="head widths (paper; --quick: tiny)")
    parser.add_argument("--skip-int8", action="store_true", help="no OpenVINO INT8 model")
    parser.add_argument("--calibration-images", type=int, default=None, help="INT8 calibration (default 16, --quick 4)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny widths at 64 x 64, Lite0 only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/deploy_speed.py", *(sys.argv[1:] if argv is None else argv)])
    quick = args.quick
    args.backbones = args.backbones or (list(BACKBONES[1:]) if quick else list(BACKBONES))
    args.repeats = args.repeats or (3 if quick else 6)
    args.size = args.size or (64 if quick else 224)
    args.calibration_images = args.calibration_images or (4 if quick else 16)
    args.image_size = args.image_size or [args.size, args.size]
    args.widths = args.widths or ("tiny" if quick else "paper")
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="unias_deploy_speed_") as tmp:
        work = Path(tmp)
        calibration = (
            [] if args.skip_int8 else calibration_images(args.calibration_images, tuple(args.image_size), work / "demo")
        )
        for backbone in args.backbones:
            rows += measure_backbone(backbone, args, work, calibration)
    report = markdown_report(rows, args)
    print(report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "deploy_speed_quick" if args.quick else "deploy_speed"
    if tuple(args.image_size) != (args.size, args.size):
        stem += f"_tiled_{args.image_size[0]}x{args.image_size[1]}"
    write_csv(rows, args.output / f"{stem}.csv")
    (args.output / f"{stem}.md").write_text(report)
    print(f"Wrote {args.output / stem}.csv and .md in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(WORKERS[sys.argv[2]](json.loads(sys.argv[3]))))
    else:
        main()
