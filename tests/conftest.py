"""Shared test fixtures: one generated demo data set per pytest run and a runner for fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts' helpers: one rule for where the data lies
from _common import DATA_ENV, data_root  # noqa: E402


def require_data(name: str) -> Path:
    """:func:`data_root` of ``name``; skip the test where it is absent, but fail under ``CI=true``."""
    root = data_root(name)
    if not root.is_dir():
        message = f"real data set {name!r} not found at {root} (set {DATA_ENV} to the folder that holds it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def run_process(
    args: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``args`` offline (``HF_HUB_OFFLINE=1`` set before the interpreter starts), with ``tests`` importable."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(
        args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


RESULT_PREFIX = "RESULT"
"""A script run by :func:`run_scripts_concurrently` prints its result as one line: this, then JSON."""


def run_scripts_concurrently(
    runs: dict[str, tuple[list[str], dict[str, str]]], cwd: Path, timeout: int = 300
) -> dict[str, Any]:
    """Run each ``name: (python arguments, environment)`` in its own interpreter, all at once; their results.

    A run passes when it exits 0 and prints a ``RESULT<json>`` line; its last such line is its result.
    """
    processes = {
        name: subprocess.Popen(
            [sys.executable, *arguments], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (arguments, env) in runs.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=timeout)
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        assert process.returncode == 0, f"{name} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
        assert lines, f"{name} printed no result:\n{stdout[-3000:]}"
        results[name] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return results


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated three-category demo data set (brick, grass, gravel), made once per run."""
    from anomalib_unias.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "unias_demo"
    generate_demo_dataset(root, num_train=16, num_test_good=4, num_test_defect=6, image_size=96)
    return root


@pytest.fixture
def run() -> Callable[..., subprocess.CompletedProcess]:
    """:func:`run_process` as a fixture."""
    return run_process
