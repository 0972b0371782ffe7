"""Every command in the README's ``bash`` blocks runs, in order, in a copy of this repository.

Commands are taken from the README itself, so a command added there is run here.  Two are not run:
``pip install ...`` (what CI does first) and ``python -m pytest`` (this suite).  Commands run as written
unless a budget below shortens them: long trainings get one epoch of a few steps (the command, its
config, data module and outputs are what is checked, not the length), the benchmark script gets tiny
widths.  Data the README points at is provided in the copy: ``../shared/data/mtd`` and
``../shared/data/aitex`` (the real sets when they lie beside this repository, else generated stand-ins in
their layout) and stand-ins for MVTec AD and VisA in the configs' default roots; the paper configs build
their B4 backbone with ``pre_trained false`` (no network here).  The demo (the README's first command) runs
fully as written, and its checkpoint serves the test, predict, export and resume commands.
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES

from .conftest import REPO, data_root, run_process
from .tiny import TINY_UNIAS

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

README = REPO / "README.md"
REAL_MTD = data_root("mtd")
REAL_AITEX = data_root("aitex")
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
         "--trainer.limit_test_batches", "2"]  # fmt: skip
PAPER = [*SHORT, "--model.pre_trained", "false", "--data.num_workers", "0", "--data.train_batch_size", "2",
         "--data.eval_batch_size", "8"]  # fmt: skip
TINY = ["--set", *(f"{key}={list(value) if isinstance(value, tuple) else value}".replace(" ", "")
                   for key, value in TINY_UNIAS.items() if key != "backbone")]  # fmt: skip
BUDGETS = {  # command prefix -> arguments appended
    "anomalib train --config configs/cpu.yaml": SHORT,
    "anomalib train --config configs/mtd.yaml": SHORT,
    "anomalib train --config configs/unias.yaml": PAPER,
    "anomalib train --config configs/unias_visa.yaml": PAPER,
    "anomalib train --config configs/demo.yaml --trainer.strategy ddp": SHORT,
    "python benchmarks/quality.py": [
        "--max-epochs",
        "1",
        "--curve-points",
        "1",
        "--coreset-ratio",
        "0.002",
        *TINY,
        "image_size=null",
        "train_tiles=null",
    ],  # the tiny input_size would tile MTD
}
NOT_RUN = ("pip install", "python -m pytest")


def readme_python_blocks() -> list[str]:
    """The README's ``python`` blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def readme_commands() -> list[str]:
    """The commands of the README's ``bash`` blocks: comments removed, ``&&`` chains split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split(" #")[0].strip()
            if code and not code.startswith("#"):
                commands += [part.strip() for part in code.split("&&")]
    return commands


def budget(command: str) -> list[str]:
    matches = [prefix for prefix in BUDGETS if command.startswith(prefix)]
    return BUDGETS[max(matches, key=len)] if matches else []


def stand_in(template: Path, root: Path, categories: tuple[str, ...] | list[str]) -> None:
    for category in categories:
        shutil.copytree(template, root / category)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with the data the README's commands read."""
    from anomalib_unias.data import generate_demo_dataset

    work = tmp_path_factory.mktemp("readme")
    repo = work / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".git", "results", "datasets", "runs", "*.egg-info",
                                                             "__pycache__", "openvino_cache"))  # fmt: skip
    template_root = generate_demo_dataset(work / "template", categories=["brick"], num_train=4, num_test_good=2,
                                          num_test_defect=3, image_size=64)  # fmt: skip
    template = template_root / "brick"
    mtd = work / "shared" / "data" / "mtd"
    mtd.parent.mkdir(parents=True)
    if REAL_MTD.is_dir():
        mtd.symlink_to(REAL_MTD)
    else:
        stand_in(template, mtd, ["magnetic_tile"])
    aitex = work / "shared" / "data" / "aitex"
    if REAL_AITEX.is_dir():
        aitex.symlink_to(REAL_AITEX)
    else:
        stand_in(template, aitex, ["fabric01", "fabric02"])
    stand_in(template, repo / "datasets" / "MVTecAD", MVTEC_CATEGORIES)
    stand_in(template, repo / "datasets" / "visa" / "visa_pytorch", VISA_CATEGORIES)
    return repo


def test_readme_starts_with_the_two_setup_commands() -> None:
    commands = readme_commands()
    assert commands[:3] == [
        'pip install -e ".[test]"',
        "anomalib train --config configs/demo.yaml",
        "python -m pytest -q",
    ]


def test_every_readme_command_runs(workspace: Path) -> None:
    ran = []
    for command in readme_commands():
        if command.startswith(NOT_RUN):
            continue
        args = [*shlex.split(command), *budget(command)]
        if args[:2] == ["python", "benchmarks/quality.py"]:
            args += ["--output", str(workspace / "quality_smoke")]
        if args[0] == "python":
            args[0] = sys.executable  # this environment's interpreter, venv or not
        before = set(workspace.glob("runs/benchmark/*/results.csv"))
        result = run_process(args, cwd=workspace, timeout=1200, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2500:]}\n{result.stderr[-4000:]}"
        if args[:2] == ["anomalib", "benchmark"]:  # it exits 0 even when every job failed: read its CSV
            (csv_file,) = set(workspace.glob("runs/benchmark/*/results.csv")) - before
            rows = list(csv.DictReader(csv_file.open()))
            assert rows, command
            assert all(0 <= float(row["pixel_AP/mean"]) <= 1 for row in rows), command
        ran.append(command)
    assert any(command.startswith("anomalib export") for command in ran)
    for block in readme_python_blocks():  # after the commands: they make the data and exports the blocks read
        result = run_process([sys.executable, "-c", block], cwd=workspace, timeout=1200, check=False)
        assert result.returncode == 0, f"{block}\n{result.stdout[-2500:]}\n{result.stderr[-4000:]}"
    assert list((workspace / "results" / "UniAS" / "UniASDemo").glob("v*/weights/lightning/model.ckpt"))
    assert list((workspace / "results").rglob("model.xml")), "the OpenVINO export wrote nothing"
    assert list((workspace / "results").rglob("model.pt")), "the Torch export wrote nothing"
    assert (workspace / "quality_smoke" / "quality.md").is_file()
    assert (workspace / "quality_smoke" / "learning_curve.png").is_file()
    assert (workspace / "quality_smoke" / "anomaly_maps.png").is_file()


def test_readme_layout_names_every_module_of_the_package() -> None:
    """The README's layout section names each module of ``anomalib_unias`` (and no module that is gone)."""
    section = README.read_text().split("## Layout", 1)[1]
    block = re.search(r"```\n(.*?)```", section, flags=re.DOTALL).group(1)
    named = set(re.findall(r"([a-z_]+\.py)\b", block)) - {"anomalib_plugin_hook.py"}
    package = REPO / "anomalib_unias"
    modules = {path.name for path in package.rglob("*.py") if path.name != "__init__.py"}
    assert named == modules
    for folder in {path.parent.name for path in package.rglob("*.py") if path.parent != package}:
        assert f"{folder}/" in block, folder
