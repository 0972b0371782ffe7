"""UniAS through anomalib's real command line, benchmark runner and model registry (subprocesses).

Tiny widths on the generated demo data (three categories) keep each run to about a minute on CPU.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .tiny import TINY_UNIAS

TINY_ARGS = {**TINY_UNIAS, "input_size": list(TINY_UNIAS["input_size"])}  # YAML/CLI spelling
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AP", "DSC", "F1max_Dice", "pixel_AUPRO")
CATEGORIES = ("brick", "grass", "gravel")


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from anomalib_unias.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "unias_demo"
    generate_demo_dataset(root, num_train=16, num_test_good=4, num_test_defect=6, image_size=96)
    return root


def test_anomalib_train_unified_demo_prints_per_category_metrics(demo_root: Path, tmp_path: Path) -> None:
    """`anomalib train --model UniAS` (short name, plugin hook) trains, tests and reports per category."""
    model_args = [f"--model.{k}={v}" for k, v in TINY_ARGS.items()]
    result = run(
        [
            "anomalib", "train", "--model", "UniAS", *model_args,
            "--data", "UniASDemo", f"--data.root={demo_root}", "--data.train_batch_size=8",
            "--data.eval_batch_size=8", "--data.num_workers=0",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
            f"--default_root_dir={tmp_path / 'results'}",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    out = result.stdout
    for metric in METRICS:
        assert f"{metric}/mean" in out
        for category in CATEGORIES:
            assert f"{metric}/{category}" in out
    table_rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert any(row.startswith("| mean |") for row in table_rows)
    images = tmp_path / "results" / "UniAS" / "UniASDemo"
    for category in CATEGORIES:
        assert list(images.glob(f"v*/images/{category}/*/*.png")), f"no images for {category}"


def benchmark_config(path: Path, demo_root: Path, categories: str) -> Path:
    init_args = "\n".join(f"      {k}: {v}" for k, v in TINY_ARGS.items())
    path.write_text(
        f"""accelerator:
  - cpu
benchmark:
  seed: 133
  model:
    class_path: UniAS
    init_args:
      max_epochs: 1
{init_args}
  data:
    class_path: UniASDemo
    init_args:
      root: {demo_root}
      train_batch_size: 8
      eval_batch_size: 8
      num_workers: 0
      categories: {categories}
"""
    )
    return path


def benchmark_rows(config: Path, cwd: Path) -> list[dict[str, str]]:
    run(["anomalib", "benchmark", "--config", str(config)], cwd=cwd, timeout=900)
    csvs = list((cwd / "runs").rglob("results.csv"))
    assert len(csvs) == 1, "no results CSV: anomalib benchmark exits 0 even when every job fails"
    with csvs[0].open() as handle:
        return list(csv.DictReader(handle))


def test_anomalib_benchmark_per_category_models(demo_root: Path, tmp_path: Path) -> None:
    """`class_path: UniAS` in a benchmark grid: one model per category, pAP and DSC columns in the CSV."""
    config = benchmark_config(tmp_path / "per_category.yaml", demo_root, "\n        grid: [[brick], [grass]]")
    rows = benchmark_rows(config, tmp_path)
    assert len(rows) == 2
    for row in rows:
        for metric in METRICS:
            assert 0 <= float(row[f"{metric}/mean"]) <= 1


def test_anomalib_benchmark_unified_model(demo_root: Path, tmp_path: Path) -> None:
    """A unified benchmark job reports every category and the macro mean."""
    rows = benchmark_rows(benchmark_config(tmp_path / "unified.yaml", demo_root, "null"), tmp_path)
    assert len(rows) == 1
    values = [float(rows[0][f"pixel_AP/{c}"]) for c in CATEGORIES]
    assert float(rows[0]["pixel_AP/mean"]) == pytest.approx(sum(values) / 3, abs=1e-6)
    assert 0 <= float(rows[0]["DSC/mean"]) <= 1


@pytest.mark.parametrize("spec", ["'UniAS'", "{'class_path': 'UniAS', 'init_args': {}}", "{'class_path': 'anomalib_unias.UniAS'}"])
def test_get_model_resolves_uniAS(spec: str, tmp_path: Path) -> None:
    """`get_model` by name and by class_path dict, in a fresh interpreter (no import of ours first)."""
    code = (
        "from anomalib.models import get_model; import json\n"
        f"spec = {spec}\n"
        f"kwargs = {TINY_ARGS!r}\n"
        "model = get_model(spec, **kwargs) if isinstance(spec, str) else get_model({**spec, 'init_args': kwargs})\n"
        "print(type(model).__module__, type(model).__name__)\n"
    )
    result = run([sys.executable, "-c", code], cwd=tmp_path)
    assert "anomalib_unias.lightning_model UniAS" in result.stdout


def test_full_class_path_works_with_the_hook_disabled(tmp_path: Path) -> None:
    code = (
        "import anomalib.models as m\n"
        "print(hasattr(m, 'UniAS'))\n"
        "from anomalib.models import get_model\n"
        "try:\n    get_model('UniAS')\nexcept Exception as e:\n    print('short name refused:', type(e).__name__)\n"
    )
    env_off = {**os.environ, "ANOMALIB_PLUGINS_DISABLE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env_off, capture_output=True, text=True, check=True)
    assert "False" in result.stdout
    assert "short name refused" in result.stdout
    result = subprocess.run(
        ["anomalib", "train", "--model", "anomalib_unias.UniAS", "--data", "anomalib_unias.data.UniASDemo", "--print_config"],
        cwd=tmp_path, env=env_off, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert "class_path: anomalib_unias.UniAS" in result.stdout
