"""Reading weights files and loading them into a (stage-truncated) timm feature network.

Accepts timm's own key layout, lukemelas EfficientNet-PyTorch keys (renamed, :mod:`.lukemelas`),
training-script wrappers and common prefixes; refuses, by name, anything that does not fit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import UniASError, UniASFileNotFoundError
from .lukemelas import STEM_KEY, CheckpointConversionError, convert_key, stage_depths


class WeightsMismatchError(UniASError, RuntimeError):
    """A weights file does not fit the backbone (missing/unexpected keys, shapes, unreadable)."""


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Strip the training script's wrappers: a ``state_dict``/``model`` entry and DDP's ``module.`` prefix."""
    for wrapper in ("state_dict", "model"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    return {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.safetensors`` file or a ``torch.save``-d state dict / checkpoint.

    A ``state_dict``/``model`` wrapper (Lightning, training scripts) and DDP's ``module.`` prefix are
    removed; non-tensor entries are dropped.  Files are read with ``weights_only=True``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Backbone weights file not found: '{path}'."
        raise UniASFileNotFoundError(msg)
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

    stem = next((key for key in state_dict if key.endswith(STEM_KEY)), None)
    if stem is not None:
        prefix = stem.removesuffix(STEM_KEY)
        depths = stage_depths(reference) if hasattr(reference, "blocks") else ()
        try:
            state = {
                convert_key(key.removeprefix(prefix), depths): value
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


def _flattened_name_map(network: nn.Module, reference: nn.Module) -> Callable[[str], str]:
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
