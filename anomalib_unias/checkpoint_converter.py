"""Load checkpoints trained with the UniAS reference implementation (github Mwxinnn/UniAS).

The reference model names its parts after detectron2/Mask2Former (``sem_seg_head.pixel_decoder.*``,
``sem_seg_head.predictor.*``) and its EfficientNet-B4 after lukemelas' EfficientNet-PyTorch
(``backbone._blocks.N.*``).  :func:`convert_reference_state_dict` renames every key to this package's
:class:`~anomalib_unias.torch_model.UniASModel` names.  Keys of the backbone stages after the last tap
(``_blocks`` 22-31, ``_conv_head``, top-level ``_bn1``) are dropped, since this implementation never
runs those stages; any other key that cannot be mapped is refused by name.

Note: the reference backbone pads one conv (the first depthwise conv of stage 3) for a 380-px input
(spec §1); timm's ``tf_efficientnet_b4`` pads dynamically, so reference backbone weights reproduce its
features up to a one-pixel phase shift from stride 8 on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

B4_STAGE_DEPTHS = (2, 4, 4, 6, 6, 8, 2)
B4_KEPT_STAGES = 5  # stages 0..4 end at the stride-16 tap (block 21)

_MGG_BRANCHES = {"conv0": "branch1x1", "conv1": "branch3x3", "conv2": "branch5x5", "conv3": "branch7x7"}


def _mgg(prefix: str) -> Callable[[re.Match], str]:
    return lambda m: f"{prefix}.{_MGG_BRANCHES[m.group('branch')]}."


_HEAD_RULES: list[tuple[str, Callable[[re.Match], str]]] = [
    # pixel decoder (spec §3); adapter/layer 1..3 are res1..res3, our laterals/outputs run coarse to fine
    (r"pixel_decoder\.input_proj\.", lambda _: "pixel_decoder.input_proj."),
    (r"pixel_decoder\.layer_4\.", lambda _: "pixel_decoder.top_conv."),
    (r"pixel_decoder\.adapter_([123])\.norm\.", lambda m: f"pixel_decoder.laterals.{3 - int(m[1])}.norm."),
    (r"pixel_decoder\.adapter_([123])\.", lambda m: f"pixel_decoder.laterals.{3 - int(m[1])}.conv."),
    (r"pixel_decoder\.layer_([123])\.norm\.", lambda m: f"pixel_decoder.outputs.{3 - int(m[1])}.norm."),
    (r"pixel_decoder\.layer_([123])\.", lambda m: f"pixel_decoder.outputs.{3 - int(m[1])}.conv."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.",
     lambda m: f"pixel_decoder.encoder.{m[1]}.self_attn.attn."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.",
     lambda m: f"pixel_decoder.encoder.{m[1]}.self_attn.norm."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.(linear[12])\.",
     lambda m: f"pixel_decoder.encoder.{m[1]}.ffn.{m[2]}."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.",
     lambda m: f"pixel_decoder.encoder.{m[1]}.ffn.norm."),
    # decoder memory (spec §4.1)
    (r"predictor\.patch_embed\.(\d+)\.proj\.", lambda m: f"decoder.patch_embeds.{m[1]}."),
    (r"predictor\.input_proj\.(\d+)\.", lambda m: f"decoder.memory_projs.{m[1]}."),
    (r"predictor\.level_embed_src\.weight$", lambda _: "decoder.level_embed"),
    # sample-aware queries (spec §4.2)
    (r"predictor\.spatial_query_feat\.weight$", lambda _: "decoder.queries.query_feat"),
    (r"predictor\.spatial_query_embed\.weight$", lambda _: "decoder.query_pos"),
    (r"predictor\.feature_projector\.", lambda _: "decoder.queries.feature_projector."),
    (r"predictor\.query_processor\.channel_weight\.agg\.layers\.(\d+)\.",
     lambda m: f"decoder.queries.channel_mlp.{2 * int(m[1])}."),
    (r"predictor\.query_processor\.spatial_weight\.conv\.", lambda _: "decoder.queries.spatial_conv."),
    (r"predictor\.query_processor\.adaptor\.(?P<branch>conv[0-3])\.", _mgg("decoder.queries.mgg_cnn")),
    # transformer blocks (spec §4.3)
    (r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)(Self|Cross)AttnLayer\.(?:self_attn|multihead_attn)\.",
     lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_{m[3].lower()}_attn.attn."),
    (r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)(Self|Cross)AttnLayer\.norm\.",
     lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_{m[3].lower()}_attn.norm."),
    (r"predictor\.transformer_block\.(\d+)\.(Spatial|Channel)FFNLayer\.",
     lambda m: f"decoder.blocks.{m[1]}.{m[2].lower()}_ffn."),
    # MGG-CNN adaptors, shared norm and reconstruction heads (spec §4.5-4.6)
    (r"predictor\.layer_adaptors\.(\d+)\.(?P<branch>conv[0-3])\.", lambda m: _mgg(f"decoder.adaptors.{m[1]}")(m)),
    (r"predictor\.decoder_norm\.", lambda _: "decoder.norm."),
    (r"predictor\.out_agg\.(\d+)\.([123])\.", lambda m: f"decoder.heads.{m[1]}.convs.{int(m[2]) - 1}."),
]

_BACKBONE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


class CheckpointConversionError(KeyError):
    """A reference checkpoint key has no counterpart in this implementation."""


def _convert_head_key(key: str) -> str:
    for pattern, rename in _HEAD_RULES:
        match = re.match(pattern, key)
        if match:
            return rename(match) + key[match.end() :]
    msg = f"reference checkpoint key 'sem_seg_head.{key}' has no counterpart in UniAS"
    raise CheckpointConversionError(msg)


def lukemelas_block_name(index: int, stage_depths: tuple[int, ...]) -> tuple[int, int]:
    """Return timm's (stage, index-in-stage) of lukemelas' flat block ``index``."""
    for stage, depth in enumerate(stage_depths):
        if index < depth:
            return stage, index
        index -= depth
    msg = f"block {index} is past the last stage"
    raise IndexError(msg)


def convert_lukemelas_key(key: str, stage_depths: tuple[int, ...]) -> str:
    """Rename one lukemelas EfficientNet key (no ``backbone.`` prefix) to timm's naming.

    The first stage holds depthwise-separable blocks, the others inverted-residual blocks.
    """
    top, _, rest = key.partition(".")
    if top in _BACKBONE_TOP:
        return f"{_BACKBONE_TOP[top]}.{rest}"
    if top == "_fc":
        return f"classifier.{rest}"
    if top == "_conv_head":
        return f"conv_head.{rest}"
    if top == "_bn1":
        return f"bn2.{rest}"
    match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
    if not match:
        msg = f"unknown EfficientNet key '{key}'"
        raise CheckpointConversionError(msg)
    stage, position = lukemelas_block_name(int(match.group(1)), stage_depths)
    names = {**(_DS_BLOCK if stage == 0 else _IR_BLOCK), **_SE}
    if match.group(2) not in names:
        msg = f"unknown EfficientNet block part '{key}'"
        raise CheckpointConversionError(msg)
    return f"blocks.{stage}.{position}.{names[match.group(2)]}.{match.group(3)}"


def _unused_backbone_key(key: str) -> bool:
    """Whether a lukemelas B4 key belongs to a stage after the stride-16 tap (never run here)."""
    if key.split(".", maxsplit=1)[0] in {"_conv_head", "_bn1", "_fc"}:
        return True
    match = re.match(r"_blocks\.(\d+)\.", key)
    return bool(match) and int(match.group(1)) >= sum(B4_STAGE_DEPTHS[:B4_KEPT_STAGES])


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Strip the training script's wrappers: a ``state_dict``/``model`` entry and DDP's ``module.`` prefix."""
    for wrapper in ("state_dict", "model"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    return {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


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
                converted["backbone.network." + convert_lukemelas_key(backbone_key, B4_STAGE_DEPTHS)] = tensor
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
        raise RuntimeError(msg)
    return dropped
