"""The frozen multi-level feature network (UniAS paper Sec. 3.1, docs/design.md §1).

A timm CNN with ``features_only=True`` tapped at strides 2, 4, 8 and 16 (EfficientNet-B4: 24, 32, 56
and 160 channels).  timm's EfficientNet feature network keeps and runs every stage, also those after
the last tap; :func:`feature_network` removes them, so no later stage runs.
The backbone never trains: its parameters do not require gradients and it stays in eval mode (BN uses
its running statistics) whatever mode the model is put in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

DEFAULT_OUT_INDICES = (0, 1, 2, 3)
"""timm feature indices of the four taps (EfficientNet: strides 2, 4, 8, 16)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet input statistics: what a backbone whose timm config names none was trained with."""


class FrozenBackbone(nn.Module):
    """Wrap a timm feature network, frozen and always in eval mode.

    Args:
        network: A timm ``features_only`` model (see :func:`anomalib_unias.backbone.create_backbone`).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.network.requires_grad_(False)
        self.network.eval()

    @property
    def channels(self) -> list[int]:
        """Channels of the taps, fine to coarse."""
        return list(self.network.feature_info.channels())

    @property
    def reductions(self) -> list[int]:
        """Strides of the taps, fine to coarse."""
        return list(self.network.feature_info.reduction())

    @property
    def input_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` of the RGB inputs the weights were trained on, from timm's ``pretrained_cfg``.

        EfficientNet-Lite0/1/2 (TF ports) expect mean = std = 0.5; EfficientNet-B4 (the paper's) and most
        other timm CNNs ImageNet's statistics, which are also the fallback when timm names none.  The
        frozen BatchNorm statistics of the weights only fit inputs normalised this way.
        """
        config = getattr(self.network, "pretrained_cfg", None) or {}
        mean, std = config.get("mean") or IMAGENET_MEAN, config.get("std") or IMAGENET_STD
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def train(self, mode: bool = True) -> FrozenBackbone:  # noqa: ARG002
        """Keep the backbone in eval mode whatever ``mode`` is asked for."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Return the raw taps, fine to coarse, without tracking gradients."""
        with torch.no_grad():
            return list(self.network(images))


def feature_network(
    name: str,
    out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
    hub_file: str | Path | None = None,
) -> nn.Module:
    """Build timm ``name`` as a feature network tapped at ``out_indices``, without its unused stages.

    Args:
        name: timm model name.
        out_indices: timm feature indices to tap.
        hub_file: A local copy of timm's own pretrained file for ``name``, loaded by timm as with
            ``pretrained=True``; ``None`` builds random weights.
    """
    pretrained = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(hub_file)}} if hub_file else {}
    network = timm.create_model(name, features_only=True, out_indices=tuple(out_indices), exportable=True, **pretrained)
    return drop_unused_stages(network)


def drop_unused_stages(network: nn.Module) -> nn.Module:
    """Remove the stages after the last tap from a timm EfficientNet-style feature network.

    timm's ``EfficientNetFeatures`` keeps and runs every block even when the last requested tap is
    earlier (B4 at stride 16 would run 7 of 7 stages for 5 that are needed).  Other timm feature
    networks (``FeatureListNet``) are already truncated and are returned unchanged.
    """
    stage_out = getattr(network, "_stage_out_idx", None)
    if stage_out and hasattr(network, "blocks"):
        network.blocks = network.blocks[: max(stage_out)]
    return network
