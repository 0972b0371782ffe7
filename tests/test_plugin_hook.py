"""The entry-point hook (``anomalib_plugin_hook``) with the real anomalib, in fresh interpreters.

The interpreter's site-packages holds the hook's ``.pth`` file (installed with this package); a folder
first on ``PYTHONPATH`` holds this repository's hook module and a throwaway plugin distribution
(``toy-anomalib-plugin``: a model, a data module, a broken entry point and one that is not a model).
The plugin is not this
project, which proves the hook serves any plugin and that UniAS needs nothing special.  Each scenario
runs in its own interpreter, all of them concurrently (importing anomalib takes ~10-15 s here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import REPO as REPO_ROOT
from .conftest import run_scripts_concurrently

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

TOY_PACKAGE = {
    "__init__.py": """
        from .data import ToyData
        from .model import ToyModel


        def helper():
            '''An entry point that is not a model.'''
    """,
    "model.py": """
        from anomalib import LearningType
        from anomalib.models.components import AnomalibModule


        class ToyModel(AnomalibModule):
            def __init__(self, width: int = 3) -> None:
                super().__init__()
                self.width = width

            @property
            def trainer_arguments(self) -> dict:
                return {}

            @property
            def learning_type(self) -> LearningType:
                return LearningType.ONE_CLASS
    """,
    "data.py": """
        from anomalib.data import Folder


        class ToyData(Folder):
            pass
    """,
}

ENTRY_POINTS = """
    [anomalib.models]
    ToyModel = toy_anomalib_plugin:ToyModel
    BrokenModel = toy_anomalib_plugin:DoesNotExist
    NotAModel = toy_anomalib_plugin:helper

    [anomalib.data]
    ToyData = toy_anomalib_plugin:ToyData
"""

# Shared by the scenarios: what the interpreter looked like before anything was imported, and a CLI run.
PRELUDE = """
    import contextlib, io, json, sys, warnings
    START_MODULES = sorted(sys.modules)
    HOOKED = any(type(f).__name__ == "_Finder" for f in sys.meta_path)
    warnings.simplefilter("always")
    result = {"start_modules": START_MODULES, "hooked_at_start": HOOKED}

    def cli_config(model, data):
        import yaml
        from anomalib.cli.cli import main
        sys.argv = ["anomalib", "fit", "--model", model, "--data", data, "--data.name", "toy",
                    "--data.normal_dir", "normal", "--print_config"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main()
        config = yaml.safe_load(out.getvalue()) or {}
        return [config.get("model", {}).get("class_path"), config.get("data", {}).get("class_path")]
"""

SCENARIOS = {
    # anomalib first, as the CLI, get_model and benchmark configs do.
    "enabled": (
        {},
        """
        with warnings.catch_warnings(record=True) as caught:
            import anomalib.models
        from anomalib.data import get_datamodule
        from anomalib.models import get_model
        result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        result["hooked_while_fix_targets_pending"] = any(type(f).__name__ == "_Finder" for f in sys.meta_path)
        import importlib
        from importlib.metadata import entry_points
        for name in sorted({ep.name for ep in entry_points(group="anomalib_plugin_hook.fixes")}):
            importlib.import_module(name)  # every module a fix patches (anomalib_unias's: the CLI, the engine, ...)
        result["hooked_after"] = any(type(f).__name__ == "_Finder" for f in sys.meta_path)
        result["loader"] = type(anomalib.models.__loader__).__name__
        result["by_name"] = [get_model("ToyModel").width, get_model("toy_model").width]
        result["by_class_path"] = get_model({"class_path": "ToyModel", "init_args": {"width": 5}}).width
        result["by_full_class_path"] = get_model({"class_path": "toy_anomalib_plugin.ToyModel"}).width
        data = get_datamodule({"class_path": "ToyData", "init_args": {"name": "toy", "normal_dir": "normal"}})
        result["datamodule"] = type(data).__name__
        result["cli"] = cli_config("ToyModel", "ToyData")
        """,
    ),
    # The plugin first: it imports anomalib.models while being imported itself.
    "plugin_first": (
        {},
        """
        from toy_anomalib_plugin import ToyModel
        from anomalib.data import get_datamodule
        from anomalib.models import get_model
        result["by_class_path"] = get_model({"class_path": "ToyModel", "init_args": {"width": 7}}).width
        result["by_full_class_path"] = get_model({"class_path": "toy_anomalib_plugin.ToyModel"}).width
        result["by_name"] = [get_model("ToyModel").width]
        data = get_datamodule({"class_path": "ToyData", "init_args": {"name": "toy", "normal_dir": "normal"}})
        result["datamodule"] = type(data).__name__
        """,
    ),
    "disabled": (
        {"ANOMALIB_PLUGINS_DISABLE": "1"},
        """
        from anomalib.models import UnknownModelError, get_model
        try:
            get_model("ToyModel")
            result["by_name"] = "found"
        except UnknownModelError:
            result["by_name"] = "unknown"
        result["cli"] = cli_config("toy_anomalib_plugin.ToyModel", "toy_anomalib_plugin.ToyData")
        """,
    ),
}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder put first on ``PYTHONPATH``: this repository's hook module and the toy plugin distribution.

    The interpreter's own site-packages holds the hook's ``.pth`` (installed with this package); its
    ``import anomalib_plugin_hook`` finds the repository's copy here first.  No nested virtual
    environment: one created from inside a venv would see the base interpreter's packages, not the venv's.
    """
    root = tmp_path_factory.mktemp("hook_path")
    shutil.copy(REPO_ROOT / "anomalib_plugin_hook.py", root / "anomalib_plugin_hook.py")
    package = root / "toy_anomalib_plugin"
    package.mkdir()
    for name, source in TOY_PACKAGE.items():
        (package / name).write_text(textwrap.dedent(source))
    dist_info = root / "toy_anomalib_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-anomalib-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    return root


@pytest.fixture(scope="module")
def results(plugin_env: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run every scenario concurrently; return each one's JSON result."""
    workdir = tmp_path_factory.mktemp("hook_runs")
    base_env = {k: v for k, v in os.environ.items() if k not in {"ANOMALIB_PLUGINS_DISABLE", "PYTHONPATH"}}
    base_env["PYTHONPATH"] = str(plugin_env)
    runs = {
        name: (["-c", textwrap.dedent(PRELUDE) + textwrap.dedent(body) + "\nprint('RESULT' + json.dumps(result))\n"],
               {**base_env, **extra_env})
        for name, (extra_env, body) in SCENARIOS.items()
    }  # fmt: skip
    return run_scripts_concurrently(runs, cwd=workdir)


def test_hook_costs_one_module_at_startup(results: dict[str, dict]) -> None:
    """At interpreter start the hook is installed and imports nothing (no anomalib, torch, importlib.metadata)."""
    enabled, disabled = results["enabled"], results["disabled"]
    assert enabled["hooked_at_start"]
    assert not disabled["hooked_at_start"]
    assert "anomalib_plugin_hook" in enabled["start_modules"]
    # Both runs import the hook module (the .pth does); install() itself must not import anything.
    assert set(enabled["start_modules"]) == set(disabled["start_modules"])
    heavy = {"anomalib", "anomalib_unias", "toy_anomalib_plugin", "torch"}
    assert not [name for name in enabled["start_modules"] if name.split(".")[0] in heavy]


def test_hook_registers_plugin_models_and_data(results: dict[str, dict]) -> None:
    """get_model by name and by class_path, get_datamodule and the CLI's short names all find the plugin."""
    enabled = results["enabled"]
    assert enabled["by_name"] == [3, 3]
    assert enabled["by_class_path"] == 5
    assert enabled["by_full_class_path"] == 3
    assert enabled["datamodule"] == "ToyData"
    assert enabled["cli"] == ["toy_anomalib_plugin.ToyModel", "toy_anomalib_plugin.ToyData"]


def test_hook_leaves_no_trace_after_use(results: dict[str, dict]) -> None:
    """Once the served and fixed modules are imported the finder is gone and the real loader is back."""
    assert results["enabled"]["hooked_while_fix_targets_pending"]
    assert not results["enabled"]["hooked_after"]
    assert results["enabled"]["loader"] == "SourceFileLoader"


def test_broken_entry_points_only_warn(results: dict[str, dict]) -> None:
    """A failing or wrong entry point is skipped with a warning naming it; the others still work."""
    warnings = results["enabled"]["warnings"]
    broken = [w for w in warnings if "'BrokenModel = toy_anomalib_plugin:DoesNotExist'" in w]
    not_a_model = [w for w in warnings if "'NotAModel = toy_anomalib_plugin:helper'" in w]
    assert broken
    assert "toy-anomalib-plugin" in broken[0]
    assert "AttributeError" in broken[0]
    assert not_a_model
    assert "not a subclass" in not_a_model[0]


def test_plugin_imported_before_anomalib(results: dict[str, dict]) -> None:
    """A plugin that imports anomalib.models from its own __init__ is registered lazily, still by every route."""
    first = results["plugin_first"]
    assert first["by_class_path"] == 7
    assert first["by_full_class_path"] == 3
    assert first["by_name"] == [3]
    assert first["datamodule"] == "ToyData"


def test_disabled_hook_keeps_full_class_paths(results: dict[str, dict]) -> None:
    """ANOMALIB_PLUGINS_DISABLE=1: short names are unknown, but --model package.Class works as in plain anomalib."""
    disabled = results["disabled"]
    assert disabled["by_name"] == "unknown"
    assert disabled["cli"] == ["toy_anomalib_plugin.ToyModel", "toy_anomalib_plugin.ToyData"]


def test_pth_file_imports_only_the_standalone_hook() -> None:
    """The .pth line must not import a package (that would load torch/anomalib at every interpreter start)."""
    lines = [line for line in (REPO_ROOT / "anomalib_plugin_hook.pth").read_text().splitlines() if line.strip()]
    assert lines == ["import anomalib_plugin_hook; anomalib_plugin_hook.install()"]
    hook_imports = [
        line.split()[1]
        for line in (REPO_ROOT / "anomalib_plugin_hook.py").read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert hook_imports == ["os", "sys"]


ANOMALIB_SUBPACKAGES = (
    "anomalib.callbacks", "anomalib.cli", "anomalib.data", "anomalib.deploy", "anomalib.engine", "anomalib.loggers",
    "anomalib.metrics", "anomalib.models", "anomalib.post_processing", "anomalib.pre_processing", "anomalib.utils",
    "anomalib.visualization",
)  # fmt: skip

IMPORT_FIRST = """
import warnings, sys, json
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import {first}
    from anomalib.data import get_datamodule
    from anomalib.models import get_model, list_models
    names = {{}}
    for name in ("UniAS", "unias", "uni_a_s"):
        names[name] = type(get_model(name, backbone="tf_efficientnet_lite0", input_size=(64, 64), pixel_dim=32,
                                     hidden_dim=32, ffn_dim=64, num_encoder_layers=1, neighbour_size=3)).__name__
    for name in ("UnifiedFolder", "UniASDemo", "UnifiedMVTecAD", "UnifiedVisa"):
        names[name] = type(get_datamodule({{"class_path": name, "init_args": {{"root": "."}}}})).__name__
    names["listed"] = sorted(name for name in list_models() if "a_s" in name or "unias" in name)
print("RESULT" + json.dumps({{"names": names, "warnings": [str(w.message) for w in caught
                                                     if issubclass(w.category, RuntimeWarning)]}}))
"""


def test_registration_does_not_depend_on_which_anomalib_module_comes_first(tmp_path: Path) -> None:
    """Fresh interpreters importing each public anomalib sub-package first all find every entry point of ours."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("ANOMALIB_PLUGINS_DISABLE", None)
    pending = list(ANOMALIB_SUBPACKAGES)
    results = {}
    while pending:  # two at a time: each interpreter imports anomalib (~10 s of CPU)
        batch, pending = pending[:2], pending[2:]
        processes = {
            first: subprocess.Popen([sys.executable, "-c", IMPORT_FIRST.format(first=first)], cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for first in batch
        }  # fmt: skip
        for first, process in processes.items():
            stdout, stderr = process.communicate(timeout=300)
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
            assert process.returncode == 0 and lines, f"{first} first:\n{stderr[-3000:]}"
            results[first] = json.loads(lines[-1].removeprefix("RESULT"))
    for first, result in results.items():
        assert result["warnings"] == [], (first, result["warnings"])
        names = result["names"]
        assert names["UniAS"] == names["unias"] == names["uni_a_s"] == "UniAS", first
        for data in ("UnifiedFolder", "UniASDemo", "UnifiedMVTecAD", "UnifiedVisa"):
            assert names[data] == data, first
        assert names["listed"] == ["uni_a_s"], first  # anomalib's snake_case of the class name (README says so)


OURS_FIRST = """
import contextlib, io, json, sys
import {first}
from anomalib.cli.cli import main
found = {{}}
for data in ("UnifiedFolder", "UniASDemo", "UnifiedMVTecAD", "UnifiedVisa"):
    sys.argv = ["anomalib", "train", "--model", "UniAS", "--data", data, "--data.root", ".", "--print_config"]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
        main()
    found[data] = [line.split()[-1] for line in output.getvalue().splitlines() if "class_path:" in line]
print("RESULT" + json.dumps(found))
"""


@pytest.mark.parametrize("first", ["anomalib_unias", "anomalib_unias.data", "anomalib_unias.metrics"])
def test_our_package_imported_before_anomalibs_cli_keeps_every_short_name(first: str, tmp_path: Path) -> None:
    """A script that imports this package (or a module of it) and then runs anomalib's CLI in the same process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("ANOMALIB_PLUGINS_DISABLE", None)
    result = subprocess.run(
        [sys.executable, "-c", OURS_FIRST.format(first=first)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    for data, class_paths in json.loads(lines[-1].removeprefix("RESULT")).items():
        assert class_paths == ["anomalib_unias.UniAS", f"anomalib_unias.data.{data}"], (first, data)
