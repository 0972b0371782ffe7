"""Helpers shared by the benchmark scripts: where things are, the machine, timing and memory, the test-set halves."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
"""Where the scripts write their result files (each script's ``--output`` default lies under it)."""
QUALITY_SEED = 133
"""``quality.py``'s default ``--seed`` (the recipes' ``seed_everything``); ``tiling_diagnosis.py`` names runs by it."""
DATA_ENV = "UNIAS_DATA"
"""Environment variable naming the folder of the real data sets (default: ``../shared/data`` beside the repo)."""


def data_root(name: str) -> Path:
    """The folder of the real data set ``name`` (``mtd``, ``aitex``): ``$UNIAS_DATA/name``."""
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data")) / name


def checkpoint_parser(doc: str, data: str, output_help: str = "result file") -> argparse.ArgumentParser:
    """The command line of a script that reads one trained checkpoint: ``CKPT --root ROOT --output OUT``.

    ``doc``: the script's docstring (its first line is the description); ``data``: the default data set.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--root", default=str(data_root(data)))
    parser.add_argument("--output", type=Path, required=True, help=output_help)
    return parser


def checkpoint_arguments(doc: str, data: str, output_help: str = "result file") -> argparse.Namespace:
    """The parsed :func:`checkpoint_parser` command line."""
    return checkpoint_parser(doc, data, output_help).parse_args()


SIMD_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "VNNI", "avx512_bf16": "BF16", "amx_int8": "AMX"}
"""The /proc/cpuinfo flags that change PyTorch and OpenVINO speed, and how result files name them."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), and the SIMD extensions of :data:`SIMD_FLAGS` it has."""
    name, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    simd = [label for flag, label in SIMD_FLAGS.items() if flag in flags]
    return f"{name} ({', '.join(simd) or 'no AVX2'})"


def median_seconds(
    call: Callable[[], object], repeats: int, warmups: int = 1, wait: Callable[[], object] = lambda: None
) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` calls after ``warmups`` untimed ones.

    ``wait`` runs after each call inside the timing (e.g. ``torch.cuda.synchronize``).  The median, because a
    call that shares the cores with another process can be many times slower (OpenMP threads wait for a
    descheduled sibling).
    """
    for _ in range(warmups):
        call()
    wait()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        wait()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def compile_for_cpu(model: str | Path, threads: int, performance_counters: bool = False) -> Any:
    """An OpenVINO model compiled for the CPU as the speed tables time it.

    ``threads`` threads and the latency hint; everything else (the precision hint included) on the runtime's defaults.
    ``performance_counters`` turns on the per-layer counters (``profiling_info`` of a request), for profiles only.
    """
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": performance_counters}
    return ov.Core().compile_model(model, "CPU", config)


def openvino_speed(
    model: str | Path, threads: int, batches: Sequence[int], image_shape: Sequence[int], repeats: int
) -> list[dict]:
    """Images/s of an OpenVINO model on the CPU at each batch size, on the runtime's default precision hint.

    One row per batch: ``batch``, ``images_per_s`` (median of ``repeats`` calls on random images of
    ``image_shape``), this process's ``peak_rss_mib`` so far and ``execution_precision`` (what the CPU plugin
    runs the float layers in: f32, or bf16 by default on CPUs with bfloat16 units).
    """
    import numpy as np

    compiled = compile_for_cpu(model, threads)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        images = rng.random((batch, 3, *image_shape), dtype=np.float32)
        seconds = median_seconds(lambda images=images: request.infer({0: images}), repeats)
        rows.append(
            {
                "batch": batch,
                "images_per_s": batch / seconds,
                "peak_rss_mib": peak_rss_mib(),
                "execution_precision": precision,
            }
        )
    return rows


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB: ``VmHWM`` of /proc/self/status.

    Unlike ``getrusage``'s ``ru_maxrss``, which Linux carries over an exec (after a fork: the parent's peak), it
    starts afresh with each program, so a worker process reports its own peak.  (A parent reads its finished
    children's largest peak with ``getrusage(RUSAGE_CHILDREN)``.)
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    msg = "no VmHWM line in /proc/self/status (Linux only)"
    raise OSError(msg)


HALVES = ("select", "holdout")
"""The test set's two halves: choices (recipes, thresholds) are made on ``select``, results reported on ``holdout``."""


def assign_halves(paths: Sequence[str]) -> dict[str, str]:
    """Each test image's half: alternate images (sorted by name, the first ``select``) in each defect folder."""
    by_folder: dict[str, list[str]] = {}
    for path in sorted(map(str, paths)):
        by_folder.setdefault(str(Path(path).parent), []).append(path)
    return {path: HALVES[index % 2] for folder in by_folder.values() for index, path in enumerate(folder)}


def run_worker(script: str | Path, kind: str, spec: dict) -> list[dict]:
    """Run ``script --worker kind SPEC`` in a fresh interpreter (its peak memory is its own); return its JSON result.

    The worker prints its result as JSON on its last stdout line; the repository is put on its ``PYTHONPATH``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(script), "--worker", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        msg = f"worker {kind} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(result.stdout.strip().splitlines()[-1])


def commit() -> str:
    """The repository's commit (short hash, ``+changes`` when the tree differs from it), for result headers."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_stamp() -> str:
    """When, at which commit and on which CPU a result was made: the header of every result file."""
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, {cpu_name()}"
