"""Shared test fixtures: one generated demo data set per pytest run and a runner for fresh processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
