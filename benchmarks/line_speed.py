"""Line speed of the shipped CPU models: UniAS (configs/cpu.yaml's) against anomalib's PatchCore, both exported.

    python benchmarks/line_speed.py             # MTD-size images and AITEX strips, export time per tile count
    python benchmarks/line_speed.py --quick     # smoke test of this script (few repeats, small memory bank)

Two deployments, each at the resolution the recipe trains at, fed images of the data's own size (the graph
resizes, as in deployment):

* ``mtd``: 324 x 270 grey tiles, worked at 128 x 128 (``configs/cpu.yaml`` / ``mtd.yaml`` on MTD);
* ``aitex``: 256 x 4096 fabric strips, worked at 128 x 2048 in 128-px tiles at stride 64 (31 tiles,
  ``configs/cpu.yaml``'s ``image_size: auto`` on AITEX).

For each, UniAS (Lite0, the CPU recipes' widths, random weights: speed does not depend on them) in PyTorch eager
and exported by anomalib's ``to_openvino`` (FP32, FP16, INT8 as ``INT8_PTQ`` ships it), and anomalib's PatchCore
on the same backbone at the same resolution (blocks 2 and 4 as in ``benchmarks/quality.py``; anomalib's own
tiling for the strips, 128-px tiles without overlap) in eager and as anomalib's OpenVINO FP32 export; PatchCore's
memory bank holds random features of the size a 10 % coreset of the data set's training patches would have.
Images/s at batch 1 and at a larger batch, and each configuration's peak memory (every one in its own process).
Then UniAS eager and INT8 once more in one process, in alternating rounds (``--rounds``): INT8 as a multiple of
eager measured over the same minutes of the machine, which separate processes minutes apart are not.

Then the export itself: seconds of ``to_openvino`` for UniAS models of 4, 31 and 189 tiles (a 2 x 2 grid, an
AITEX strip at half size, a full-size strip at stride 64): the tiles are cut and blended by one gather each, so
the graph does not grow with the tile count.

Writes ``line_speed.md`` / ``line_speed.csv`` to ``--output`` (default ``benchmarks/results/``).  Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    compile_for_cpu,
    median_seconds,
    openvino_speed,
    peak_rss_mib,
    run_stamp,
    run_worker,
)

BACKBONE = "tf_efficientnet_lite0"
CPU_WIDTHS = {"pixel_dim": 64, "hidden_dim": 64, "ffn_dim": 256, "num_encoder_layers": 1, "neighbour_size": 5}
"""The head widths of configs/cpu.yaml and configs/mtd.yaml."""
DEPLOYMENTS = {
    "mtd": {"input": (324, 270), "image_size": (128, 128), "stride": None, "batches": (1, 8), "train_images": 761},
    "aitex": {
        "input": (256, 4096),
        "image_size": (128, 2048),
        "stride": (64, 64),
        "batches": (1, 2),  # anomalib's tiled PatchCore exports with its example's batch of 2 fixed
        "train_images": 46,
    },
}
"""Per deployment: the images fed in, the working size, the tile stride (None: no tiling), batch sizes, and the
number of training images (which sizes PatchCore's memory bank)."""
EXPORT_TILINGS = {4: ((256, 256), (128, 128)), 31: ((128, 2048), (64, 64)), 189: ((256, 4096), (64, 64))}
"""Tile count -> (image_size, tile stride) of 128-px tiles, for the export-time table."""
PATCHCORE_LAYERS = ("blocks.2", "blocks.4")
CORESET_RATIO = 0.1
INT8_CALIBRATION = 8


# --------------------------------------------------------------------------------------------- models
def unias_model(image_size: tuple[int, int], stride: tuple[int, int] | None) -> Any:
    import torch

    from anomalib_unias import UniAS

    torch.manual_seed(0)
    return UniAS(
        backbone=BACKBONE,
        pre_trained=False,
        input_size=(128, 128),
        image_size=image_size,
        tile_stride=stride,
        visualizer=False,
        **CPU_WIDTHS,
    ).eval()


def patchcore_model(deployment: dict[str, Any], bank_scale: float) -> Any:
    """PatchCore (anomalib) on Lite0 at the deployment's working size, its memory bank random of a coreset's size."""
    import torch
    from anomalib.data.utils.tiler import Tiler
    from anomalib.models import Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    height, width = deployment["image_size"]
    transform = Compose([Resize((height, width), antialias=False), Normalize(mean=[0.5] * 3, std=[0.5] * 3)])
    model = Patchcore(
        backbone=BACKBONE,
        layers=list(PATCHCORE_LAYERS),
        pre_trained=False,
        pre_processor=PreProcessor(transform=transform),
        visualizer=False,
    )
    tiled = deployment["stride"] is not None
    if tiled:
        model.model.tiler = Tiler(tile_size=(128, 128), stride=(128, 128))
    model.eval()
    with torch.no_grad():  # the feature width and patches per image, from one forward of the feature extractor
        features = model.model.feature_extractor(torch.zeros(1, 3, 128, 128))
    channels = sum(features[layer].shape[1] for layer in PATCHCORE_LAYERS)
    patches_per_tile = features[PATCHCORE_LAYERS[0]].shape[-2] * features[PATCHCORE_LAYERS[0]].shape[-1]
    tiles = (height // 128) * (width // 128)
    bank = int(deployment["train_images"] * tiles * patches_per_tile * CORESET_RATIO * bank_scale)
    generator = torch.Generator().manual_seed(0)
    model.model.memory_bank = torch.randn(bank, channels, generator=generator)
    for name in ("_image_threshold", "_pixel_threshold"):  # thresholds and min/max as validation would leave them
        getattr(model.post_processor, name).fill_(1.0)
    for name in ("image_min", "pixel_min"):
        getattr(model.post_processor, name).fill_(0.0)
    for name in ("image_max", "pixel_max"):
        getattr(model.post_processor, name).fill_(2.0)
    return model


def build(spec: dict[str, Any]) -> Any:
    deployment = DEPLOYMENTS[spec["deployment"]]
    if spec["model"] == "patchcore":
        return patchcore_model(deployment, spec["bank_scale"])
    return unias_model(deployment["image_size"], deployment["stride"])


# --------------------------------------------------------------------------------------------- workers
def worker_eager(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(spec["threads"])
    model = build(spec)
    rows = []
    with torch.inference_mode():
        for batch in DEPLOYMENTS[spec["deployment"]]["batches"]:
            images = torch.rand(batch, 3, *DEPLOYMENTS[spec["deployment"]]["input"])
            seconds = median_seconds(lambda images=images: model(images), spec["repeats"])
            rows.append({"batch": batch, "images_per_s": batch / seconds, "peak_rss_mib": peak_rss_mib()})
    return rows


def worker_export(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Export with anomalib's ``to_openvino`` (dynamic input); FP16 and INT8 from that model for UniAS."""
    import numpy as np
    import openvino as ov
    import torch

    from anomalib_unias.export import quantize_int8

    torch.set_num_threads(spec["threads"])
    model = build(spec) if "deployment" in spec else unias_model(*spec["tiling"])
    start = time.perf_counter()
    xml = model.to_openvino(spec["folder"], "fp32")
    rows = [{"step": "fp32", "seconds": time.perf_counter() - start, "path": str(xml)}]
    if spec.get("precisions"):
        ov_model = ov.Core().read_model(xml)
        ov.save_model(ov_model, Path(xml).with_name("fp16.xml"), compress_to_fp16=True)
        rows.append({"step": "fp16", "seconds": 0.0, "path": str(Path(xml).with_name("fp16.xml"))})
        rng = np.random.default_rng(0)
        shape = DEPLOYMENTS[spec["deployment"]]["input"]
        images = [rng.random((1, 3, *shape), dtype=np.float32) for _ in range(INT8_CALIBRATION)]
        start = time.perf_counter()
        int8 = quantize_int8(ov_model, images, variant="head-int8")
        path = Path(xml).with_name("int8.xml")
        ov.save_model(int8, path, compress_to_fp16=False)
        rows.append({"step": "int8", "seconds": time.perf_counter() - start, "path": str(path)})
    return rows


def worker_openvino(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Time an exported model on the runtime's defaults (its precision hint: bf16 on CPUs with bfloat16 units).

    A graph whose batch is fixed (anomalib's tiled PatchCore: the export's example batch) is timed at that batch only.
    """
    import openvino as ov

    deployment = DEPLOYMENTS[spec["deployment"]]
    batch = ov.Core().read_model(spec["xml"]).inputs[0].get_partial_shape()[0]
    batches = deployment["batches"] if batch.is_dynamic else (batch.get_length(),)
    rows = openvino_speed(spec["xml"], spec["threads"], batches, deployment["input"], spec["repeats"])
    return [{**row, "fixed_batch": not batch.is_dynamic} for row in rows]


def worker_paired(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """UniAS eager and its INT8 export in one process, timed in alternating blocks on the same images.

    Each round times both (the median of ``repeats`` calls each), the order swapped every round, so the ratio of a
    round compares the same minutes of the machine: the separate processes of the main table run minutes apart,
    and a shared machine's speed drifts between them.
    """
    import torch

    torch.set_num_threads(spec["threads"])
    deployment = DEPLOYMENTS[spec["deployment"]]
    model = build(spec)
    request = compile_for_cpu(spec["xml"], spec["threads"]).create_infer_request()
    rows = []
    with torch.inference_mode():
        for batch in deployment["batches"]:
            images = torch.rand(batch, 3, *deployment["input"])
            array = images.numpy()
            calls = {
                "eager": lambda images=images: model(images),
                "int8": lambda array=array: request.infer({0: array}),
            }
            for round_index in range(spec["rounds"]):
                order = ("eager", "int8") if round_index % 2 == 0 else ("int8", "eager")
                seconds = {name: median_seconds(calls[name], spec["repeats"]) for name in order}
                rows.append(
                    {
                        "batch": batch,
                        "round": round_index,
                        "eager_images_per_s": batch / seconds["eager"],
                        "int8_images_per_s": batch / seconds["int8"],
                    }
                )
    return rows


WORKERS = {"eager": worker_eager, "export": worker_export, "openvino": worker_openvino, "paired": worker_paired}


# ---------------------------------------------------------------------------------------------- parent
def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    common = {"threads": args.threads, "repeats": args.repeats, "bank_scale": args.bank_scale}
    for name in DEPLOYMENTS:
        for model in ("unias", "patchcore"):
            spec = {**common, "deployment": name, "model": model}
            label = {"deployment": name, "model": model}
            print(f"[{name}] {model}: eager ...", flush=True)
            rows += [{**label, "runtime": "pytorch fp32", **row} for row in run_worker(__file__, "eager", spec)]
            print(f"[{name}] {model}: export ...", flush=True)
            exported = run_worker(
                __file__, "export", {**spec, "folder": str(work / name / model), "precisions": model == "unias"}
            )
            rows += [{**label, "runtime": "export", **row} for row in exported if row["step"] == "fp32"]
            for row in exported:
                print(f"[{name}] {model}: OpenVINO {row['step']} ...", flush=True)
                timed = run_worker(__file__, "openvino", {**spec, "xml": row["path"]})
                rows += [{**label, "runtime": f"openvino {row['step']}", **timed_row} for timed_row in timed]
            if model == "unias":
                (int8,) = (row["path"] for row in exported if row["step"] == "int8")
                print(f"[{name}] unias: eager and INT8 in alternating rounds ...", flush=True)
                paired = run_worker(__file__, "paired", {**spec, "xml": int8, "rounds": args.rounds})
                rows += [{**label, "runtime": "paired", **row} for row in paired]
    for tiles, (image_size, stride) in EXPORT_TILINGS.items():
        print(f"export of a {tiles}-tile UniAS ...", flush=True)
        spec = {**common, "tiling": [list(image_size), list(stride)], "folder": str(work / f"tiles{tiles}")}
        (row,) = run_worker(__file__, "export", spec)
        rows.append({"model": "unias", "runtime": "export", "tiles": tiles, "image": "x".join(map(str, image_size)),
                     "seconds": row["seconds"]})  # fmt: skip
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# Line speed: UniAS (configs/cpu.yaml's model) against anomalib's PatchCore, both exported",
        "",
        f"`{args.command}` ({run_stamp()}; {seconds:.0f} s); "
        f"{len(os.sched_getaffinity(0))} usable cores, {args.threads} threads.  Random weights; "
        "OpenVINO on its defaults (the hint column: what the CPU plugin ran in).",
        "",
        "| deployment | model | runtime | OV hint | batch | images/s | ms/image | x eager | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    eager = {
        (r["deployment"], r["model"], r["batch"]): r["images_per_s"] for r in rows if r["runtime"] == "pytorch fp32"
    }
    for row in rows:
        if "images_per_s" not in row:
            continue
        base = eager.get((row["deployment"], row["model"], row["batch"]))
        height, width = DEPLOYMENTS[row["deployment"]]["input"]
        batch = f"{row['batch']} (fixed)" if row.get("fixed_batch") else row["batch"]
        speedup = f"{row['images_per_s'] / base:.2f}" if base else "n/a"
        lines.append(
            f"| {row['deployment']} ({height} x {width} in) | {row['model']} | {row['runtime']} | "
            f"{row.get('execution_precision', 'f32')} | {batch} | {row['images_per_s']:.2f} | "
            f"{1000 / row['images_per_s']:.1f} | {speedup} | "
            f"{row['peak_rss_mib']:.0f} |"
        )
    lines += paired_table(rows, args)
    lines += [
        "",
        "Export seconds (`to_openvino`, FP32):",
        "",
        "| model | deployment or tiles | seconds |",
        "|---|---|---|",
    ]
    for row in rows:
        if row["runtime"] == "export":
            where = row.get("deployment") or f"{row['tiles']} tiles ({row['image']})"
            lines.append(f"| {row['model']} | {where} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def paired_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """INT8 as a multiple of eager from :func:`worker_paired`'s rounds: median, range, rounds at 3x or more."""
    lines = [
        "",
        f"UniAS INT8 against eager PyTorch timed in one process, in {args.rounds} alternating rounds (each the median "
        f"of {args.repeats} calls per runtime, the order swapped every round; same images):",
        "",
        "| deployment | batch | eager images/s (median) | INT8 images/s (median) | INT8 x eager (median) "
        "| lowest | highest | rounds at 3x or more |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row["runtime"] == "paired":
            groups.setdefault((row["deployment"], row["batch"]), []).append(row)
    for (deployment, batch), rounds in groups.items():
        ratios = [r["int8_images_per_s"] / r["eager_images_per_s"] for r in rounds]
        eager = statistics.median(r["eager_images_per_s"] for r in rounds)
        int8 = statistics.median(r["int8_images_per_s"] for r in rounds)
        lines.append(
            f"| {deployment} | {batch} | {eager:.2f} | {int8:.2f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f} | {max(ratios):.2f} | {sum(ratio >= 3 for ratio in ratios)} of {len(ratios)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measure (default 8, --quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating eager/INT8 rounds (default 6, --quick 2)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats, 1 %% of the memory bank")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.command = shlex.join(["python", "benchmarks/line_speed.py", *sys.argv[1:]])
    args.repeats = args.repeats or (2 if args.quick else 8)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.bank_scale = 0.01 if args.quick else 1.0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unias_line_speed_") as tmp:
        rows = measure(args, Path(tmp))
    text = report(rows, args, time.perf_counter() - start)
    print(text)
    stem = "line_speed_quick" if args.quick else "line_speed"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{stem}.md").write_text(text)
    fields = [
        "deployment",
        "model",
        "runtime",
        "execution_precision",
        "batch",
        "images_per_s",
        "peak_rss_mib",
        "tiles",
        "seconds",
        "round",
        "eager_images_per_s",
        "int8_images_per_s",
    ]
    with (args.output / f"{stem}.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(WORKERS[sys.argv[2]](json.loads(sys.argv[3]))))
    else:
        main()
