"""Same command, same numbers; a killed run resumed from its last checkpoint equals the uninterrupted run.

Real ``anomalib train`` processes on the tiny setting and the generated demo data (CPU).  anomalib's CLI
never applies ``--seed_everything`` and its ``train --ckpt_path`` used to report the checkpoint it
resumed from; both are fixed by ``anomalib_unias.anomalib_fixes`` through the plugin hook.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from .tiny import TINY_UNIAS

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

Runner = Callable[..., subprocess.CompletedProcess]


def train_command(demo_root: Path, results: Path, *extra: str) -> list[str]:
    model_args = [
        f"--model.{key}={list(value) if isinstance(value, tuple) else value}" for key, value in TINY_UNIAS.items()
    ]
    return [
        "anomalib", "train", "--model", "UniAS", *model_args, "--seed_everything", "7",
        "--data", "UniASDemo", f"--data.root={demo_root}", "--data.train_batch_size=8", "--data.eval_batch_size=8",
        "--data.num_workers=0", "--trainer.max_epochs=3", "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false", f"--default_root_dir={results}", *extra,
    ]  # fmt: skip


def output(result: subprocess.CompletedProcess) -> str:
    """What the user sees: anomalib's results on stdout, the package's log lines (table, epochs) on stderr."""
    return result.stdout + result.stderr


def table(result: subprocess.CompletedProcess) -> list[str]:
    """The per-category results table logged after testing."""
    rows = [line for line in output(result).splitlines() if line.startswith("| ")]
    assert any(row.startswith("| mean |") for row in rows), output(result)[-2000:]
    return rows


def weights(results: Path, name: str = "model.ckpt") -> dict[str, torch.Tensor]:
    (path,) = results.glob(f"UniAS/UniASDemo/v*/weights/lightning/{name}")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    from .conftest import run_process

    results = tmp_path_factory.mktemp("uninterrupted")
    result = run_process(train_command(demo_root, results), cwd=results)
    return results, table(result), output(result)


def test_same_seed_same_metrics_and_weights(
    uninterrupted: tuple[Path, list[str], str], demo_root: Path, tmp_path: Path, run: Runner
) -> None:
    first_results, first_table, _ = uninterrupted
    result = run(train_command(demo_root, tmp_path), cwd=tmp_path)
    assert table(result) == first_table
    assert_same_tensors(weights(first_results), weights(tmp_path))


def test_killed_run_resumes_to_the_uninterrupted_result(
    uninterrupted: tuple[Path, list[str], str], demo_root: Path, tmp_path: Path, run: Runner
) -> None:
    """SIGKILL in the third epoch, resume from ``last.ckpt``: same weights and printed metrics as no kill."""
    killed = run(
        train_command(demo_root, tmp_path, "--trainer.callbacks+=tests.callbacks.KillDuringEpoch",
                      "--trainer.callbacks.epoch=2"),
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    (last,) = tmp_path.glob("UniAS/UniASDemo/v*/weights/lightning/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1  # epochs 0 and 1 finished

    resumed_root = tmp_path / "resumed"
    resumed = run(train_command(demo_root, resumed_root, f"--ckpt_path={last}"), cwd=tmp_path)
    first_results, first_table, _ = uninterrupted
    assert table(resumed) == first_table
    assert_same_tensors(weights(first_results, "last.ckpt"), weights(resumed_root, "last.ckpt"))
    assert_same_tensors(weights(first_results), weights(resumed_root))


def test_progress_bar_off_prints_one_line_per_epoch(uninterrupted: tuple[Path, list[str], str]) -> None:
    """With ``enable_progress_bar=false`` the user still sees each epoch end, with its loss and time."""
    lines = [line for line in uninterrupted[2].splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], lines
    assert all(re.fullmatch(r"epoch \d/3: train_loss \d+\.\d{4}, \d+\.\d s", line) for line in lines), lines
