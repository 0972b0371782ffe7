"""Multi-process (DDP, gloo on CPU) training and testing through the real CLI: the numbers equal one process.

A 2-process ``anomalib train`` trains and tests; its checkpoint is then tested by one and by two
processes.  The 2-process test must not count repeated (padded) samples and must gather every
process's pixels per category, so its per-category and mean metrics equal the 1-process ones.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .tiny import TINY_UNIAS

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

Runner = Callable[..., subprocess.CompletedProcess]
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def common_args(demo_root: Path, results: Path) -> list[str]:
    model_args = [
        f"--model.{key}={list(value) if isinstance(value, tuple) else value}" for key, value in TINY_UNIAS.items()
    ]
    return [
        "--model", "UniAS", *model_args, "--data", "UniASDemo", f"--data.root={demo_root}",
        "--data.train_batch_size=4", "--data.eval_batch_size=5", "--data.num_workers=0",
        "--trainer.enable_progress_bar=false", f"--default_root_dir={results}",
    ]  # fmt: skip


def saved_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def ddp_checkpoint(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``anomalib train`` with 2 processes: trains, tests, prints the table, writes the checkpoint."""
    from .conftest import run_process

    results = tmp_path_factory.mktemp("ddp_train")
    result = run_process(
        ["anomalib", "train", *common_args(demo_root, results), *DDP, "--seed_everything=3",
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"],
        cwd=results,
    )  # fmt: skip
    assert "| mean |" in result.stdout + result.stderr  # the table is logged
    (checkpoint,) = results.glob("UniAS/UniASDemo/v*/weights/lightning/model.ckpt")
    return checkpoint


def test_two_process_test_equals_one_process(
    ddp_checkpoint: Path, demo_root: Path, tmp_path: Path, run: Runner
) -> None:
    values = {}
    for name, extra in (("single", ["--trainer.devices=1", "--trainer.accelerator=cpu"]), ("ddp", DDP)):
        output = tmp_path / f"{name}.json"
        run(
            ["anomalib", "test", *common_args(demo_root, tmp_path / name), f"--ckpt_path={ddp_checkpoint}", *extra,
             "--trainer.callbacks+=tests.callbacks.SaveTestMetrics", f"--trainer.callbacks.path={output}"],
            cwd=tmp_path,
        )  # fmt: skip
        values[name] = saved_metrics(output)
    assert values["single"]["world_size"] == 1
    assert values["ddp"]["world_size"] == 2
    single, ddp = values["single"]["metrics"], values["ddp"]["metrics"]
    per_category = [key for key in single if "/" in key]
    assert len(per_category) >= 6 * 4  # six metrics x (three categories + mean)
    for key in per_category:
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
