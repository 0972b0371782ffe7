"""The frozen multi-level feature network (UniAS paper Sec. 3.1, docs/design.md §1).

A timm CNN tapped at strides 2, 4, 8 and 16 (EfficientNet-B4: 24, 32, 56 and 160 channels) through
timm's public intermediate-feature API: :func:`feature_network` builds the classification model and
removes what no tap needs (``prune_intermediate_layers``: the stages after the last tap, the head), and
the forward returns the taps (``forward_intermediates``).  The parameter names stay timm's own.
The backbone never trains: its parameters do not require gradients and it stays in eval mode (BN uses
its running statistics) whatever mode the model is put in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import refuse

DEFAULT_OUT_INDICES = (0, 1, 2, 3)
"""timm feature indices of the four taps (EfficientNet: strides 2, 4, 8, 16)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet input statistics: what a backbone whose timm config names none was trained with."""


class FrozenBackbone(nn.Module):
    """Wrap a timm feature network, frozen and always in eval mode.

    Args:
        network: A timm model pruned to its taps (:func:`feature_network`).
        out_indices: Its timm feature indices to tap, as given to :func:`feature_network`.
    """

    def __init__(self, network: nn.Module, out_indices: Sequence[int] = DEFAULT_OUT_INDICES) -> None:
        super().__init__()
        self.network = network
        self.out_indices = list(out_indices)
        self.network.requires_grad_(False)
        self.network.eval()

    @property
    def channels(self) -> list[int]:
        """Channels of the taps, fine to coarse."""
        return [self.network.feature_info[index]["num_chs"] for index in self.out_indices]

    @property
    def reductions(self) -> list[int]:
        """Strides of the taps, fine to coarse."""
        return [self.network.feature_info[index]["reduction"] for index in self.out_indices]

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
            return self.network.forward_intermediates(images, indices=self.out_indices, intermediates_only=True)


def feature_network(
    name: str,
    out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
    hub_file: str | Path | None = None,
) -> nn.Module:
    """Build timm ``name`` pruned to the taps ``out_indices``: no stage after the last tap, no head.

    Args:
        name: timm model name.
        out_indices: timm feature indices to tap.
        hub_file: A local copy of timm's own pretrained file for ``name``, loaded by timm as with
            ``pretrained=True``; ``None`` builds random weights.
    """
    pretrained = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(hub_file)}} if hub_file else {}
    network = timm.create_model(name, exportable=True, **pretrained)
    if not hasattr(network, "prune_intermediate_layers"):
        rule = (
            "this timm model has no intermediate-feature API (forward_intermediates / prune_intermediate_layers), "
            "which UniAS taps"
        )
        refuse(
            "backbone", name, rule, "a timm CNN that has it, e.g. tf_efficientnet_b4 (paper) or tf_efficientnet_lite0"
        )
    # prune_norm as well: timm 1.0.9 keeps the final conv/norm after the last stage unless asked.
    network.prune_intermediate_layers(list(out_indices), prune_norm=True, prune_head=True)
    return network
