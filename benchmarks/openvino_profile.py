"""Where an exported UniAS spends its time: OpenVINO's per-layer counters, FP32 export against INT8.

    python benchmarks/openvino_profile.py           # MTD deployment (324 x 270 in, 128 x 128 worked), batch 1 and 8
    python benchmarks/openvino_profile.py --quick   # smoke test of this script (2 calls per batch)

The model of ``benchmarks/line_speed.py`` (``configs/cpu.yaml``'s widths, random weights: time does not depend
on them) exported by anomalib's ``to_openvino`` and quantised as the shipped ``int8_variant`` (``head-int8``: the
trained head in INT8, the backbone, feature preparation and map tail kept in FP32). Both run on the runtime's
defaults (bf16 on CPUs with bfloat16 units) with the CPU plugin's performance counters on: each layer's time per
call, summed by the precision its kernel ran in and by layer type. The sums are layer time only (the counters
leave out the runtime's own overhead per call), so they say which part INT8 makes faster and which it does not;
images/s are ``line_speed.py``'s.

Writes ``openvino_profile.md`` to ``--output`` (default ``benchmarks/results/``). Run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, compile_for_cpu, run_stamp
from line_speed import DEPLOYMENTS, worker_export

DEPLOYMENT = "mtd"
LAYER_GROUPS = {
    "Convolution": "convolutions",
    "GroupConvolution": "convolutions",
    "FullyConnected": "matrix products",
    "FullyConnectedQuantizedLegacy": "matrix products",
    "MatMul": "matrix products",
    "Reorder": "layout and precision conversions",
    "Convert": "layout and precision conversions",
    "Transpose": "layout and precision conversions",
    "Interpolate": "resizes",
}
"""OpenVINO CPU layer types -> the group a table row sums them in (anything else: "other layers")."""


def kernel_precision(exec_type: str) -> str:
    """The precision a CPU kernel ran in, from its exec type (``brgconv_avx512_I8``, ``jit_avx512_bf16``, ...)."""
    suffix = exec_type.rsplit("_", 1)[-1].lower()
    return {"i8": "int8", "u8": "int8", "bf16": "bf16", "f32": "f32", "f16": "f16"}.get(suffix, "other")


def profile(xml: str | Path, threads: int, batches: tuple[int, ...], calls: int) -> dict[int, dict[str, dict]]:
    """Mean ms per call of every layer, summed by kernel precision and by layer group, per batch size."""
    import numpy as np

    request = compile_for_cpu(xml, threads, performance_counters=True).create_infer_request()
    rng = np.random.default_rng(0)
    result = {}
    for batch in batches:
        images = rng.random((batch, 3, *DEPLOYMENTS[DEPLOYMENT]["input"]), dtype=np.float32)
        request.infer({0: images})  # the first call compiles kernels for this shape
        by_precision: collections.Counter[str] = collections.Counter()
        by_group: collections.Counter[str] = collections.Counter()
        for _ in range(calls):
            request.infer({0: images})
            for layer in request.profiling_info:
                ms = layer.real_time.total_seconds() * 1000 / calls
                by_precision[kernel_precision(layer.exec_type)] += ms
                by_group[LAYER_GROUPS.get(layer.node_type, "other layers")] += ms
        result[batch] = {"precision": dict(by_precision), "group": dict(by_group)}
    return result


def table(profiles: dict[str, dict[int, dict[str, dict]]], key: str, title: str) -> list[str]:
    """One row per precision or group and batch: ms per call of each model side by side, and what INT8 saves."""
    models = list(profiles)
    lines = [
        "",
        f"ms per call by {title}:",
        "",
        f"| {title} | batch | " + " | ".join(models) + " | saved by INT8 |",
        "|---|---|" + "---|" * len(models) + "---|",
    ]
    batches = next(iter(profiles.values()))
    for batch in batches:
        names = sorted({name for model in models for name in profiles[model][batch][key]})
        rows = [*names, "all layers"]
        for name in rows:
            values = [
                sum(profiles[model][batch][key].values())
                if name == "all layers"
                else profiles[model][batch][key].get(name, 0.0)
                for model in models
            ]
            cells = " | ".join(f"{value:.2f}" for value in values)
            lines.append(f"| {name} | {batch} | {cells} | {values[0] - values[-1]:+.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="profiled calls per batch (default 20, --quick 2)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 calls per batch")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/openvino_profile.py", *sys.argv[1:]])
    calls = args.calls or (2 if args.quick else 20)
    start = time.perf_counter()
    batches = DEPLOYMENTS[DEPLOYMENT]["batches"]
    with tempfile.TemporaryDirectory(prefix="unias_openvino_profile_") as tmp:
        spec = {"deployment": DEPLOYMENT, "model": "unias", "threads": args.threads, "folder": tmp, "precisions": True}
        paths = {row["step"]: row["path"] for row in worker_export(spec)}  # line_speed.py's FP32 and head-int8 models
        models = {"fp32": paths["fp32"], "int8 (head-int8)": paths["int8"]}
        profiles = {name: profile(xml, args.threads, batches, calls) for name, xml in models.items()}
    height, width = DEPLOYMENTS[DEPLOYMENT]["input"]
    lines = [
        "# Where an exported UniAS spends its time: OpenVINO layer counters, FP32 export against INT8",
        "",
        f"`{command}` ({run_stamp()}; {time.perf_counter() - start:.0f} s); {args.threads} threads, {calls} profiled "
        f"calls per batch. The {DEPLOYMENT} deployment of `line_speed.py` ({height} x {width} in, "
        "configs/cpu.yaml's model, random weights), both on the runtime's defaults (the precision hint: bf16 on "
        "CPUs with bfloat16 units). Layer time only: the counters leave out the runtime's overhead per call.",
    ]
    lines += table(profiles, "precision", "kernel precision")
    lines += table(profiles, "group", "layer group")
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "openvino_profile.md").write_text(text)


if __name__ == "__main__":
    main()
