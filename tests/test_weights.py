"""Backbone weights: bundled Lite weights, local files, the Hugging Face cache and failing fast offline.

Nothing here downloads: the hub paths run in subprocesses with a private Hugging Face home and either
``HF_HUB_OFFLINE=1`` or ``HF_ENDPOINT`` pointing at a local server that accepts connections and never
answers (what a firewalled network looks like).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import textwrap
import threading
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage.data import coffee

from anomalib_unias.backbone import (
    WeightsMismatchError,
    WeightsUnavailableError,
    bundled_state_dict,
    bundled_weights_file,
    create_backbone,
)
from anomalib_unias.backbone.cli import main as weights_cli

from .conftest import REPO as REPO_ROOT
from .conftest import run_scripts_concurrently

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

ESPRESSO = 967  # ImageNet class index


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    return bundled_state_dict("lite0")


def _assert_loaded(network: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = network.state_dict()
    assert state, "empty network"
    for key, value in state.items():
        assert torch.equal(value, expected[key]), key


def test_bundled_lite0_classifies_imagenet(lite0_state: dict[str, torch.Tensor]) -> None:
    """The renamed bundled weights are real ImageNet weights: coffee() is an espresso (WEIGHTS.md: 0.95)."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_state, strict=True)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        probabilities = model(transform(Image.fromarray(coffee()))[None]).softmax(-1)[0]
    assert probabilities.argmax().item() == ESPRESSO
    assert probabilities[ESPRESSO].item() > 0.9


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("tf_efficientnet_lite0", [16, 24, 40, 112]),
        ("tf_efficientnet_lite1", [16, 24, 40, 112]),
        ("tf_efficientnet_lite2.in1k", [16, 24, 48, 120]),
    ],
)
def test_create_backbone_uses_bundled_lite_weights(name: str, channels: list[int]) -> None:
    """pre_trained Lite backbones load the package file's tensors (renamed), with no network involved."""
    backbone = create_backbone(name, pre_trained=True)
    assert backbone.channels == channels
    assert backbone.reductions == [2, 4, 8, 16]
    assert not any(p.requires_grad for p in backbone.parameters())
    short = name.split(".", maxsplit=1)[0].removeprefix("tf_efficientnet_")
    _assert_loaded(backbone.network, bundled_state_dict(short))
    # Two tensors checked against the raw lukemelas file, independently of the renaming code.
    raw = torch.load(bundled_weights_file(name), map_location="cpu", weights_only=True)
    state = backbone.network.state_dict()
    assert torch.equal(state["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(state["blocks.1.0.conv_pw.weight"], raw["_blocks.1._expand_conv.weight"])
    assert len(backbone.network.blocks) == 5  # stages after the stride-16 tap were dropped


def test_random_weights_when_not_pre_trained() -> None:
    backbone = create_backbone("tf_efficientnet_b4", pre_trained=False)
    assert backbone.channels == [24, 32, 56, 160]
    state = backbone.network.state_dict()
    # Nothing was loaded: BatchNorm statistics are at their initial 0 / 1, the weights are timm's random
    # initialisation (not constant, finite, centred), and a second build draws other values.
    for key, tensor in state.items():
        if key.endswith("running_mean"):
            assert torch.equal(tensor, torch.zeros_like(tensor)), key
        elif key.endswith("running_var"):
            assert torch.equal(tensor, torch.ones_like(tensor)), key
    stem = state["conv_stem.weight"]
    assert torch.isfinite(stem).all() and stem.std() > 0.01 and abs(stem.mean()) < 0.05
    again = create_backbone("tf_efficientnet_b4", pre_trained=False).network.state_dict()["conv_stem.weight"]
    assert not torch.equal(stem, again)


@pytest.mark.parametrize(
    "layout",
    ["lightning_prefixed_pth", "timm_full_safetensors", "lukemelas_package_file", "lukemelas_without_bn_counters"],
)
def test_local_weights_file_round_trip(layout: str, tmp_path: Path, lite0_state: dict[str, torch.Tensor]) -> None:
    """weights= accepts wrapped/prefixed feature-network dicts, timm full-model files and lukemelas files."""
    source = create_backbone("tf_efficientnet_lite0")
    if layout == "lightning_prefixed_pth":
        path = tmp_path / "uni.ckpt.pth"
        wrapped = {f"model.backbone.network.{k}": v for k, v in source.network.state_dict().items()}
        wrapped["model.head.some_layer.weight"] = torch.zeros(1)  # rest of a bigger model: ignored
        torch.save({"state_dict": wrapped, "epoch": 3}, path)
    elif layout == "timm_full_safetensors":
        path = tmp_path / "model.safetensors"
        save_file(lite0_state, path)
    elif layout == "lukemelas_package_file":
        path = bundled_weights_file("tf_efficientnet_lite0")
    else:  # like older releases: BatchNorm's num_batches_tracked is absent (eval does not use it)
        path = tmp_path / "efficientnet-lite0-old.pth"
        raw = torch.load(bundled_weights_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
        torch.save({k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")}, path)
    loaded = create_backbone("tf_efficientnet_lite0", pre_trained=False, weights=path)
    _assert_loaded(loaded.network, source.network.state_dict())


def test_local_weights_for_flattened_feature_names(tmp_path: Path) -> None:
    """timm's FeatureListNet renames stages.0 to stages_0; full-model files (with head) still load."""
    model = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "convnext.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    backbone = create_backbone("convnext_atto", weights=path, out_indices=(0, 1, 2))
    full = model.state_dict()
    for key, value in backbone.network.state_dict().items():
        assert torch.equal(value, full[re.sub(r"^(stem|stages)_(\d+)", r"\1.\2", key)]), key


def test_mismatched_weights_file_names_keys_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsMismatchError) as error:
        create_backbone("tf_efficientnet_lite0", weights=path)
    message = str(error.value)
    assert str(path) in message
    assert re.search(r"missing \d+ keys \(conv_stem\.weight", message)
    assert re.search(r"unexpected \d+ keys \(.*layer1\.0\.conv1\.weight", message)
    assert "Fix:" in message


def test_lukemelas_file_of_another_variant_is_refused() -> None:
    lite2 = bundled_weights_file("tf_efficientnet_lite2")
    with pytest.raises(WeightsMismatchError, match=re.escape(str(lite2))):
        create_backbone("tf_efficientnet_lite0", weights=lite2)


def test_unreadable_or_missing_weights_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsMismatchError, match=re.escape(str(garbage))):
        create_backbone("tf_efficientnet_lite0", weights=garbage)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        create_backbone("tf_efficientnet_lite0", weights=missing)


def test_backbone_without_hub_weights_says_so() -> None:
    """A timm model whose weights are only on a legacy URL is refused before any network access."""
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights on the Hugging Face hub") as error:
        create_backbone("gcvit_xxtiny")
    assert "weights=" in str(error.value)
    assert "pre_trained=False" in str(error.value)


# --------------------------------------------------------------------------------------------------
# Hugging Face cache and hub, in subprocesses with a private HF_HOME

HUB_SCRIPT = """
    import json, sys, warnings
    import timm, torch
    warnings.simplefilter("ignore")
    import anomalib_unias.backbone.hub as hub_module
    from anomalib_unias.backbone import WeightsUnavailableError, bundled_state_dict, create_backbone
    result = {"probes": 0}
    probe = hub_module.unreachable_reason

    def counted_probe(endpoint):
        result["probes"] += 1
        return probe(endpoint)

    hub_module.unreachable_reason = counted_probe

    try:
        create_backbone("tf_efficientnet_b4")
        result["b4"] = "loaded"
    except WeightsUnavailableError as error:
        result["b4"] = str(error)

    probes_before = result["probes"]
    resnet = create_backbone("resnet18", pre_trained=True).network.state_dict()
    result["resnet_probes"] = result["probes"] - probes_before
    saved = torch.load(sys.argv[1], weights_only=True)
    result["resnet_from_cache"] = all(torch.equal(v, saved[k]) for k, v in resnet.items())

    if sys.argv[2] == "offline":
        model = timm.create_model("tf_efficientnet_lite0", pretrained=True)
        expected = bundled_state_dict("lite0")
        result["timm_lite0"] = all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
        from anomalib.models.components.feature_extractors import TimmFeatureExtractor
        extractor = TimmFeatureExtractor("tf_efficientnet_lite0", layers=["blocks.1", "blocks.2"], pre_trained=True)
        ours = create_backbone("tf_efficientnet_lite0", out_indices=(1, 2))
        images = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            theirs = list(extractor.eval()(images).values())
        result["anomalib_features"] = all(torch.equal(a, b) for a, b in zip(theirs, ours(images), strict=True))
    print("RESULT" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def hub_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Fill a private HF cache (bundled Lite via the CLI, a random resnet18 as timm's hub repo), then run
    the script offline (HF_HUB_OFFLINE=1) and against a silent hub endpoint, concurrently."""
    home = tmp_path_factory.mktemp("hf_home")
    hub_cache = home / "hub"
    weights_cli(["install", "--models", "lite0", "--cache-dir", str(hub_cache)])

    resnet = {k: v.contiguous() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()}
    resnet_repo = hub_cache / f"models--{timm.models.get_pretrained_cfg('resnet18').hf_hub_id.replace('/', '--')}"
    revision = "0" * 40
    (resnet_repo / "snapshots" / revision).mkdir(parents=True)
    save_file(resnet, resnet_repo / "snapshots" / revision / "model.safetensors")
    (resnet_repo / "refs").mkdir()
    (resnet_repo / "refs" / "main").write_text(revision)
    saved = home / "resnet18.pth"
    torch.save(resnet, saved)

    silent = socket.create_server(("127.0.0.1", 0))  # accepts TCP connections, never answers
    proxies = {name: catch_all_server(status) for name, status in (("proxy_404", 404), ("proxy_root_200", 200))}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    python_path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    base_env |= {"HF_HOME": str(home), "PYTHONPATH": python_path}
    runs = {
        "offline": {**base_env, "HF_HUB_OFFLINE": "1"},
        "silent_hub": {**base_env, "HF_ENDPOINT": f"https://127.0.0.1:{silent.getsockname()[1]}"},
        **{
            name: {**base_env, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
            for name, server in proxies.items()
        },
    }
    script = textwrap.dedent(HUB_SCRIPT)
    try:
        results = run_scripts_concurrently(
            {name: (["-c", script, str(saved), name], env) for name, env in runs.items()}, cwd=home
        )
    finally:
        silent.close()
        for server in proxies.values():
            server.shutdown()
    return results


def catch_all_server(root_status: int) -> http.server.ThreadingHTTPServer:
    """A local HTTP server in the hub's place, like a proxy that answers every address: ``root_status``
    for ``/`` (the reachability probe), 404 for everything else (the weights)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.send_response(root_status if self.path == "/" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            del args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_cli_installs_hf_cache_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights_cli(["install", "--models", "lite0", "--cache-dir", str(tmp_path)])
    repo = tmp_path / "models--timm--tf_efficientnet_lite0.in1k"
    revision = (repo / "refs" / "main").read_text()
    file = repo / "snapshots" / revision / "model.safetensors"
    assert f"wrote: {file}" in capsys.readouterr().out
    assert hashlib.sha1(file.read_bytes()).hexdigest() == revision  # noqa: S324 (content id, reinstall-stable)
    assert set(load_file(file)) == set(timm.create_model("tf_efficientnet_lite0").state_dict())
    weights_cli(["install", "--models", "lite0", "--cache-dir", str(tmp_path)])
    assert f"already present: {file}" in capsys.readouterr().out


def test_hf_cache_serves_timm_and_anomalib_offline(hub_results: dict[str, dict]) -> None:
    """After the install, HF_HUB_OFFLINE=1 timm and anomalib's TimmFeatureExtractor load the bundled weights."""
    offline = hub_results["offline"]
    assert offline["timm_lite0"]
    assert offline["anomalib_features"]


def test_hub_weights_come_from_the_cache_first(hub_results: dict[str, dict]) -> None:
    """A cached timm repo loads without touching the (unreachable) hub."""
    for result in hub_results.values():
        assert result["resnet_from_cache"]
        assert result["resnet_probes"] == 0  # a cached file is used without contacting (or probing) the hub


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        ("offline", "HF_HUB_OFFLINE is set"),
        ("silent_hub", "did not answer"),
        ("proxy_404", "answered HTTP 404 instead of the hub"),
        ("proxy_root_200", "a proxy or firewall that answers in the hub's place"),
    ],
)
def test_missing_hub_weights_fail_fast_with_fixes(hub_results: dict[str, dict], run: str, reason: str) -> None:
    result = hub_results[run]
    message = result["b4"]  # from our probe (no huggingface_hub retries): HF_HUB_OFFLINE, or the 3 s deadline
    assert "timm/tf_efficientnet_b4.ns_jft_in1k" in message
    assert reason in message
    for fix in ("connect to the internet", "weights=", "tf_efficientnet_lite0", "pre_trained=False", "cache"):
        assert fix in message, fix
