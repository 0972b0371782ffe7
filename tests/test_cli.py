"""anomalib's model registry and CLI resolve UniAS (fresh interpreters; no import of ours first).

The README's commands (train, test, predict, export, benchmark) run in ``tests/test_readme.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_process
from .tiny import TINY_UNIAS

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

TINY_ARGS = {**TINY_UNIAS, "input_size": list(TINY_UNIAS["input_size"])}  # YAML/CLI spelling
SPECS = ["'UniAS'", "{'class_path': 'UniAS', 'init_args': {}}", "{'class_path': 'anomalib_unias.UniAS'}"]


@pytest.mark.parametrize("spec", SPECS)
def test_get_model_resolves_unias(spec: str, tmp_path: Path) -> None:
    """`get_model` by name and by class_path dict."""
    code = (
        "from anomalib.models import get_model; import json\n"
        f"spec = {spec}\n"
        f"kwargs = {TINY_ARGS!r}\n"
        "model = get_model(spec, **kwargs) if isinstance(spec, str) else get_model({**spec, 'init_args': kwargs})\n"
        "print(type(model).__module__, type(model).__name__)\n"
    )
    result = run_process([sys.executable, "-c", code], cwd=tmp_path)
    assert "anomalib_unias.lightning_model UniAS" in result.stdout


def test_full_class_path_works_with_the_hook_disabled(tmp_path: Path) -> None:
    code = (
        "import anomalib.models as m\n"
        "print(hasattr(m, 'UniAS'))\n"
        "from anomalib.models import get_model\n"
        "try:\n    get_model('UniAS')\nexcept Exception as e:\n    print('short name refused:', type(e).__name__)\n"
    )
    env_off = {**os.environ, "ANOMALIB_PLUGINS_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env_off, capture_output=True, text=True, check=True
    )
    assert "False" in result.stdout
    assert "short name refused" in result.stdout
    command = ["anomalib", "train", "--model", "anomalib_unias.UniAS", "--data", "anomalib_unias.data.UniASDemo"]
    result = subprocess.run(
        [*command, "--print_config"], cwd=tmp_path, env=env_off, capture_output=True, text=True, check=True, timeout=300
    )
    assert "class_path: anomalib_unias.UniAS" in result.stdout


def test_a_bad_argument_is_the_first_thing_the_cli_user_reads(tmp_path: Path) -> None:
    """jsonargparse wraps instantiation errors; our refusal (argument, rule, working value) must lead."""
    result = run_process(
        ["anomalib", "train", "--model", "UniAS", "--model.backbone", "tf_efficientnet_lite0", "--model.pixel_dim",
         "48", "--model.hidden_dim", "48", "--data", "UniASDemo", "--data.root", str(tmp_path / "demo")],
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("anomalib train: error: UniAS argument pixel_dim=48: must be a positive multiple of 32")
    assert not (tmp_path / "demo").exists()  # refused before the data set was generated


@pytest.mark.parametrize(
    ("subcommand", "file_exists", "starts"),
    [
        ("train", True, "UniAS argument thresholds="),  # it would be replaced by the fitted ones: refused, not ignored
        ("test", False, "Cannot read thresholds file"),  # a missing file: one line, not a 196-line parser error
    ],
)
def test_a_thresholds_file_the_command_cannot_use_is_refused_in_one_line(
    tmp_path: Path, subcommand: str, file_exists: bool, starts: str
) -> None:
    thresholds = tmp_path / "thresholds.json"
    if file_exists:
        thresholds.write_text('{"global": {"image": 1.0, "pixel": 1.0}, "categories": {}}')
    result = run_process(
        ["anomalib", subcommand, "--model", "UniAS", "--model.backbone", "tf_efficientnet_lite0",
         "--model.thresholds", str(thresholds), "--data", "UniASDemo", "--data.root", str(tmp_path / "demo")],
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"anomalib {subcommand}: error: {starts}")
    assert not (tmp_path / "demo").exists()
