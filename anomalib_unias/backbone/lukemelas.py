"""Key names of lukemelas' EfficientNet-PyTorch, renamed to timm's ``tf_efficientnet_*``.

The bundled EfficientNet-Lite ImageNet weights and the reference implementation's B4 use lukemelas'
layout (``_conv_stem``, flat ``_blocks.N``); timm groups blocks by stage (``blocks.<stage>.<index>``)
and names their parts differently.  Used by the weights loader and by the reference-checkpoint
converter.
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import UniASError, UniASIndexError

STEM_KEY = "_conv_stem.weight"
"""A key every lukemelas EfficientNet state dict has; its prefix locates the network in a checkpoint."""

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_fc": "classifier", "_conv_head": "conv_head", "_bn1": "bn2"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SQUEEZE_EXCITE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


class CheckpointConversionError(UniASError, KeyError):
    """A checkpoint key has no counterpart in this implementation."""


def stage_depths(model: nn.Module) -> tuple[int, ...]:
    """Blocks per stage of a timm EfficientNet (full model or feature network)."""
    return tuple(len(stage) for stage in model.blocks)


def block_position(index: int, depths: tuple[int, ...]) -> tuple[int, int]:
    """Return timm's (stage, index-in-stage) of lukemelas' flat block ``index``."""
    for stage, depth in enumerate(depths):
        if index < depth:
            return stage, index
        index -= depth
    msg = f"block {index} is past the last stage"
    raise UniASIndexError(msg)


def block_index(key: str) -> int | None:
    """Flat block number of a lukemelas ``_blocks.N...`` key, ``None`` for the stem, head and classifier."""
    match = re.match(r"_blocks\.(\d+)\.", key)
    return int(match.group(1)) if match else None


def convert_key(key: str, depths: tuple[int, ...]) -> str:
    """Rename one lukemelas EfficientNet key (no prefix) to timm's name, for stage depths ``depths``.

    The first stage holds depthwise-separable blocks, the others inverted-residual blocks.

    Raises:
        CheckpointConversionError: the key is not an EfficientNet key.
        IndexError: the block number is past the last stage of ``depths``.
    """
    top, _, rest = key.partition(".")
    if top in _TOP:
        return f"{_TOP[top]}.{rest}"
    match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
    if not match:
        msg = f"unknown EfficientNet key '{key}'"
        raise CheckpointConversionError(msg)
    stage, position = block_position(int(match.group(1)), depths)
    names = {**(_DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL), **_SQUEEZE_EXCITE}
    if match.group(2) not in names:
        msg = f"unknown EfficientNet block part '{key}'"
        raise CheckpointConversionError(msg)
    return f"blocks.{stage}.{position}.{names[match.group(2)]}.{match.group(3)}"
