"""Helpers shared by the benchmark scripts: where things are, the machine, the test-set halves."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "UNIAS_DATA"
"""Environment variable naming the folder of the real data sets (default: ``../shared/data`` beside the repo)."""


def data_root(name: str) -> Path:
    """The folder of the real data set ``name`` (``mtd``, ``aitex``): ``$UNIAS_DATA/name``."""
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data")) / name


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), and the SIMD extensions that matter for speed."""
    name, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    simd = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "BF16"),
                                      ("amx_int8", "AMX")) if flag in flags]  # fmt: skip
    return f"{name} ({', '.join(simd) or 'no AVX2'})"


HALVES = ("select", "holdout")
"""The test set's two halves: choices (recipes, thresholds) are made on ``select``, results reported on ``holdout``."""


def assign_halves(paths: Sequence[str]) -> dict[str, str]:
    """Each test image's half: alternate images (sorted by name, the first ``select``) in each defect folder."""
    by_folder: dict[str, list[str]] = {}
    for path in sorted(map(str, paths)):
        by_folder.setdefault(str(Path(path).parent), []).append(path)
    return {path: HALVES[index % 2] for folder in by_folder.values() for index, path in enumerate(folder)}


def commit() -> str:
    """The repository's commit (short hash, ``+changes`` when the tree differs from it), for result headers."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
