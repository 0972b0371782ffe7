"""Load checkpoints trained with the UniAS reference implementation (github Mwxinnn/UniAS).

The reference model names its parts after detectron2/Mask2Former (``sem_seg_head.pixel_decoder.*``,
``sem_seg_head.predictor.*``) and its EfficientNet-B4 after lukemelas' EfficientNet-PyTorch
(``backbone._blocks.N.*``).  :func:`convert_reference_state_dict` renames every key to this package's
:class:`~anomalib_unias.torch_model.UniASModel` names.  Keys of the backbone stages after the last tap
(``_blocks`` 22-31, ``_conv_head``, top-level ``_bn1``) are dropped, since this implementation never
runs those stages; any other key that cannot be mapped is refused by name.

Note: the reference backbone pads one conv (the first depthwise conv of stage 3) for a 380-px input
(docs/design.md §1); timm's ``tf_efficientnet_b4`` pads dynamically, so reference backbone weights reproduce its
features up to a one-pixel phase shift from stride 8 on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import timm
import torch

from .backbone.frozen import feature_network
from .backbone.lukemelas import CheckpointConversionError, block_index, convert_key, stage_depths
from .backbone.state_dict import unwrap_state_dict
from .errors import UniASRuntimeError

REFERENCE_BACKBONE = "tf_efficientnet_b4"

_MGG_BRANCHES = {"conv0": "branch1x1", "conv1": "branch3x3", "conv2": "branch5x5", "conv3": "branch7x7"}


def _mgg(prefix: str) -> Callable[[re.Match], str]:
    return lambda m: f"{prefix}.{_MGG_BRANCHES[m.group('branch')]}."


_HEAD_RULES: list[tuple[str, Callable[[re.Match], str]]] = [
    # pixel decoder (docs/design.md §3); adapter/layer 1..3 are res1..res3, our laterals/outputs run coarse to fine
    (r"pixel_decoder\.input_proj\.", lambda _: "pixel_decoder.input_proj."),
    (r"pixel_decoder\.layer_4\.", lambda _: "pixel_decoder.top_conv."),
    (r"pixel_decoder\.adapter_([123])\.norm\.", lambda m: f"pixel_decoder.laterals.{3 - int(m[1])}.norm."),
    (r"pixel_decoder\.adapter_([123])\.", lambda m: f"pixel_decoder.laterals.{3 - int(m[1])}.conv."),
    (r"pixel_decoder\.layer_([123])\.norm\.", lambda m: f"pixel_decoder.outputs.{3 - int(m[1])}.norm."),
    (r"pixel_decoder\.layer_([123])\.", lambda m: f"pixel_decoder.outputs.{3 - int(m[1])}.conv."),
    (
        r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.",
        lambda m: f"pixel_decoder.encoder.{m[1]}.self_attn.attn.",
    ),
    (
        r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.",
        lambda m: f"pixel_decoder.encoder.{m[1]}.self_attn.norm.",
    ),
    (
        r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.(linear[12])\.",
        lambda m: f"pixel_decoder.encoder.{m[1]}.ffn.{m[2]}.",
    ),
    (
        r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.",
        lambda m: f"pixel_decoder.encoder.{m[1]}.ffn.norm.",
    ),
    # decoder memory (docs/design.md §4.1)
    (r"predictor\.patch_embed\.(\d+)\.proj\.", lambda m: f"decoder.patch_embeds.{m[1]}."),
    (r"predictor\.input_proj\.(\d+)\.", lambda m: f"decoder.memory_projs.{m[1]}."),
    (r"predictor\.level_embed_src\.weight$", lambda _: "decoder.level_embed"),
    # sample-aware queries (docs/design.md §4.2)
    (r"predictor\.spatial_query_feat\.weight$", lambda _: "decoder.queries.query_feat"),
    (r"predictor\.spatial_query_embed\.weight$", lambda _: "decoder.query_pos"),
    (r"predictor\.feature_projector\.", lambda _: "decoder.queries.feature_projector."),
    (
        r"predictor\.query_processor\.channel_weight\.agg\.layers\.(\d+)\.",
        lambda m: f"decoder.queries.channel_mlp.{2 * int(m[1])}.",
    ),
    (r"predictor\.query_processor\.spatial_weight\.conv\.", lambda _: "decoder.queries.spatial_conv."),
    (r"predictor\.query_processor\.adaptor\.(?P<branch>conv[0-3])\.", _mgg("decoder.queries.mgg_cnn")),
    # transformer blocks (docs/design.md §4.3)
    (
        r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)(Self|Cross)AttnLayer\.(?:self_attn|multihead_attn)\.",
        lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_{m[3].lower()}_attn.attn.",
    ),
    (
        r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)(Self|Cross)AttnLayer\.norm\.",
        lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_{m[3].lower()}_attn.norm.",
    ),
    (
        r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)FFNLayer\.",
        lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_ffn.",
    ),
    # MGG-CNN adaptors, shared norm and reconstruction heads (docs/design.md §4.5-4.6)
    (r"predictor\.layer_adaptors\.(\d+)\.(?P<branch>conv[0-3])\.", lambda m: _mgg(f"decoder.adaptors.{m[1]}")(m)),
    (r"predictor\.decoder_norm\.", lambda _: "decoder.norm."),
    (r"predictor\.out_agg\.(\d+)\.([123])\.", lambda m: f"decoder.heads.{m[1]}.convs.{int(m[2]) - 1}."),
]


def _convert_head_key(key: str) -> str:
    for pattern, rename in _HEAD_RULES:
        match = re.match(pattern, key)
        if match:
            return rename(match) + key[match.end() :]
    msg = f"reference checkpoint key 'sem_seg_head.{key}' has no counterpart in UniAS"
    raise CheckpointConversionError(msg)


@functools.cache
def reference_backbone_layout() -> tuple[tuple[int, ...], int]:
    """Stage depths of timm's B4 and the number of its blocks up to the stride-16 tap (read from timm)."""
    with torch.device("meta"):
        full = timm.create_model(REFERENCE_BACKBONE, pretrained=False)
        kept = feature_network(REFERENCE_BACKBONE)
    return stage_depths(full), sum(stage_depths(kept))


def _unused_backbone_key(key: str) -> bool:
    """Whether a lukemelas B4 key belongs to a stage after the stride-16 tap (never run here)."""
    if key.split(".", maxsplit=1)[0] in {"_conv_head", "_bn1", "_fc"}:
        return True
    index = block_index(key)
    return index is not None and index >= reference_backbone_layout()[1]


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a reference-implementation state dict (full model or head only) to UniASModel names.

    Returns:
        ``(converted, dropped)``: the renamed tensors (head keys under ``head.``, backbone keys under
        ``backbone.network.``) and the reference keys deliberately left out (unused backbone stages).

    Raises:
        CheckpointConversionError: naming the first key that cannot be mapped.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in unwrap_state_dict(state_dict).items():
        if key.startswith("sem_seg_head."):
            converted["head." + _convert_head_key(key.removeprefix("sem_seg_head."))] = tensor
        elif key.startswith("backbone."):
            backbone_key = key.removeprefix("backbone.")
            if _unused_backbone_key(backbone_key):
                dropped.append(key)
            else:
                converted["backbone.network." + convert_key(backbone_key, reference_backbone_layout()[0])] = tensor
        else:
            msg = f"reference checkpoint key '{key}' is neither under 'backbone.' nor under 'sem_seg_head.'"
            raise CheckpointConversionError(msg)
    return converted, dropped


def load_reference_checkpoint(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load a reference checkpoint file into a :class:`UniASModel` (strict for the head).

    A head-only state dict leaves the backbone as it is.  Returns the dropped reference keys.

    Raises:
        CheckpointConversionError: for an unmappable key, naming it and the file.
        RuntimeError: for shape mismatches or missing head keys (e.g. a different input size).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        converted, dropped = convert_reference_state_dict(checkpoint)
    except CheckpointConversionError as error:
        msg = f"{path}: {error.args[0]}. Is this a UniAS reference-implementation checkpoint?"
        raise CheckpointConversionError(msg) from error
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing_head = [k for k in missing if k.startswith("head.")]
    has_backbone = any(k.startswith("backbone.") for k in converted)
    missing_backbone = [k for k in missing if k.startswith("backbone.")] if has_backbone else []
    if missing_head or missing_backbone or unexpected:
        msg = (
            f"{path} does not fit this UniAS model: missing {(missing_head + missing_backbone)[:5]}, "
            f"unexpected {unexpected[:5]}. Build the model with the reference settings (224x224 input, "
            "tf_efficientnet_b4, paper widths)."
        )
        raise UniASRuntimeError(msg)
    return dropped
