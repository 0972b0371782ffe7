"""The reference-checkpoint converter on every key of the reference model (official_full_state_dict.tsv)."""

from __future__ import annotations

import re

import torch

from anomalib_unias.backbone import create_backbone
from anomalib_unias.reference_checkpoint import convert_reference_state_dict, load_reference_checkpoint
from anomalib_unias.torch_model import UniASModel

from .reference_fixture import full_rows, parse_shape, require_reference

# The stages of the reference B4 after the stride-16 tap: blocks 22-31, the head conv and its BN, the classifier.
UNUSED_REFERENCE_KEY = re.compile(r"backbone\.(_blocks\.(2[2-9]|3[01])\.|_conv_head\.|_bn1\.|_fc\.)")


def reference_state_dict() -> dict[str, torch.Tensor]:
    """Every tensor of the reference model, each filled with its row index (so a swapped key shows)."""
    return {
        row["official_key"]: torch.full(parse_shape(row["shape"]), int(row["index"])).to(getattr(torch, row["dtype"]))
        for row in full_rows()
    }


def test_every_reference_key_is_converted_or_deliberately_dropped(tmp_path) -> None:
    require_reference()
    reference = reference_state_dict()
    assert len(reference) == 1030
    converted, dropped = convert_reference_state_dict(reference)

    assert set(dropped) == {key for key in reference if UNUSED_REFERENCE_KEY.match(key)}
    assert len(converted) + len(dropped) == len(reference)

    model = UniASModel(create_backbone("tf_efficientnet_b4", pre_trained=False))
    model.load_state_dict(converted, strict=True)  # every model tensor present, none left over, shapes equal
    values = {int(tensor.flatten()[0]) for tensor in converted.values() if tensor.numel()}
    assert len(values) == len(converted)  # no two reference tensors landed on the same model tensor
    # lukemelas' and timm's EfficientNets register the same modules in the same order (stem, then per block
    # expand, depthwise, squeeze-excite, project convs with their norms), so the backbone's tensors keep the
    # reference's order: two same-shape tensors swapped (a norm's mean and variance, two convs) break it.
    # The head's tensors are held by the golden parity test, which loads them through this converter.
    backbone_order = [
        int(tensor.flatten()[0]) for key, tensor in model.state_dict().items() if key.startswith("backbone.")
    ]
    assert backbone_order == sorted(backbone_order)

    # The same through the file-level loader the README names.
    path = tmp_path / "reference.pth"
    torch.save({"model": reference}, path)
    fresh = UniASModel(create_backbone("tf_efficientnet_b4", pre_trained=False))
    assert sorted(load_reference_checkpoint(fresh, path)) == sorted(dropped)
    for key, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, converted[key]), key
