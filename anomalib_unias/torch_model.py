"""PyTorch model of UniAS ("Towards Accurate Unified Anomaly Segmentation", Ma et al., WACV 2025).

Frozen backbone taps -> Gaussian/residual feature preparation -> FPN pixel decoder -> multi-level
hybrid decoder (sample-aware queries, neighbour-masked spatial + channel attention, MGG-CNN) ->
per-level reconstructions.  Training returns the loss; evaluation returns anomalib's
``InferenceBatch`` with the fused multi-level anomaly map and its maximum as the image score.

Paper: Ma et al., "Towards Accurate Unified Anomaly Segmentation", WACV 2025, https://arxiv.org/abs/2501.12295
(BibTeX in the README).  Reference implementation: https://github.com/Mwxinnn/UniAS (MIT licence); this
package re-implements it from the paper and our design notes (``docs/design.md``), without its code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from anomalib.data import InferenceBatch
from torch import nn

from .anomaly_map import AnomalyMapGenerator
from .backbone import FrozenBackbone
from .components import FeaturePreparation, HybridDecoder, PixelDecoder
from .loss import UniASLoss
from .validation import QUERY_STRIDE, check_architecture


@dataclass
class Reconstruction:
    """Targets and reconstructions of every level, coarse to fine."""

    targets: list[torch.Tensor]
    reconstructions: list[torch.Tensor]


def query_grid(input_size: tuple[int, int]) -> tuple[int, int]:
    """Return the query grid (H / 16, W / 16) of a checked input size."""
    height, width = input_size
    return height // QUERY_STRIDE, width // QUERY_STRIDE


class UniASHead(nn.Module):
    """Everything after the backbone taps: the trainable part of UniAS plus its loss and anomaly map.

    Args:
        feature_channels: Backbone tap channels, fine to coarse (B4: 24, 32, 56, 160).
        input_size: Model input (H, W), multiples of 16 (paper: 224 x 224).
        pixel_dim: Pixel-decoder width (paper: 256).
        hidden_dim: Query width (paper: 256).
        num_heads: Attention heads everywhere (paper: 4).
        ffn_dim: FFN width everywhere (paper: 2048).
        num_encoder_layers: Pixel-decoder encoder depth (paper: 3).
        neighbour_size: Side of the blocked attention window (paper: 7).
        dropout: Transformer dropout (paper: 0.1).
        jitter_scale: Feature-jitter scale (paper: 20).
        jitter_prob: Feature-jitter probability per level (paper: 0.5).
        loss_weight: Loss weight (paper: 10 on MVTec AD).
        legacy_cos_sign: Reproduce the reference code's ``+cos`` loss term instead of ``1 - cos``.
    """

    def __init__(
        self,
        feature_channels: list[int],
        input_size: tuple[int, int] = (224, 224),
        pixel_dim: int = 256,
        hidden_dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        num_encoder_layers: int = 3,
        neighbour_size: int = 7,
        dropout: float = 0.1,
        jitter_scale: float = 20.0,
        jitter_prob: float = 0.5,
        loss_weight: float = 10.0,
        legacy_cos_sign: bool = False,
    ) -> None:
        super().__init__()
        input_size = check_architecture(
            input_size=input_size,
            pixel_dim=pixel_dim,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_encoder_layers=num_encoder_layers,
            neighbour_size=neighbour_size,
            dropout=dropout,
            jitter_scale=jitter_scale,
            jitter_prob=jitter_prob,
            loss_weight=loss_weight,
        )
        grid = query_grid(input_size)
        coarse_to_fine = list(reversed(feature_channels))
        self.level_names = tuple(f"stride{QUERY_STRIDE >> level}" for level in range(len(coarse_to_fine)))
        self.feature_preparation = FeaturePreparation(jitter_scale=jitter_scale, jitter_prob=jitter_prob)
        self.pixel_decoder = PixelDecoder(
            in_channels=[2 * c for c in coarse_to_fine],
            grid_size=grid,
            dim=pixel_dim,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_encoder_layers=num_encoder_layers,
            dropout=dropout,
        )
        self.decoder = HybridDecoder(
            target_channels=coarse_to_fine,
            grid_size=grid,
            pixel_dim=pixel_dim,
            dim=hidden_dim,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            neighbour_size=neighbour_size,
            dropout=dropout,
        )
        self.loss = UniASLoss(weight=loss_weight, legacy_cos_sign=legacy_cos_sign)
        self.anomaly_map = AnomalyMapGenerator(num_levels=len(feature_channels), input_size=input_size)

    def reconstruct(self, features: list[torch.Tensor]) -> Reconstruction:
        """Reconstruct the blurred taps from the raw taps ``features`` (fine to coarse)."""
        targets, inputs = self.feature_preparation(list(reversed(features)))
        pixel_maps = self.pixel_decoder(inputs)
        reconstructions = self.decoder(pixel_maps, [t.shape[-2:] for t in targets])
        return Reconstruction(targets, reconstructions)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]] | InferenceBatch:
        """Training: ``(loss, per-level terms)``; evaluation: ``InferenceBatch(pred_score, anomaly_map)``."""
        result = self.reconstruct(features)
        if self.training:
            return self.loss(result.reconstructions, result.targets)
        anomaly_map = self.anomaly_map(result.reconstructions, result.targets)
        # A NaN/Inf input pixel turns (part of) the map into NaN, and NaN compares as "not above the
        # threshold": score it as maximally anomalous instead, in eager PyTorch and in exported graphs alike.
        anomaly_map = torch.where(torch.isnan(anomaly_map), torch.full_like(anomaly_map, float("inf")), anomaly_map)
        return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(dim=1), anomaly_map=anomaly_map)


class UniASModel(nn.Module):
    """UniAS: a frozen backbone and the :class:`UniASHead`.

    Args:
        backbone: The frozen feature network (see :func:`anomalib_unias.backbone.create_backbone`), tapped
            at strides 2, 4, 8 and 16.
        input_size: Model input (H, W), multiples of 16 (paper: 224 x 224).
        pixel_dim: Pixel-decoder width (paper: 256).
        hidden_dim: Query width (paper: 256).
        num_heads: Attention heads everywhere (paper: 4).
        ffn_dim: FFN width everywhere (paper: 2048).
        num_encoder_layers: Pixel-decoder encoder depth (paper: 3).
        neighbour_size: Side of the blocked attention window (paper: 7).
        dropout: Transformer dropout (paper: 0.1).
        jitter_scale: Feature-jitter scale (paper: 20).
        jitter_prob: Feature-jitter probability per level (paper: 0.5).
        loss_weight: Loss weight (paper: 10 on MVTec AD).
        legacy_cos_sign: Reproduce the reference code's ``+cos`` loss term instead of ``1 - cos``.
    """

    def __init__(
        self,
        backbone: FrozenBackbone,
        input_size: tuple[int, int] = (224, 224),
        pixel_dim: int = 256,
        hidden_dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        num_encoder_layers: int = 3,
        neighbour_size: int = 7,
        dropout: float = 0.1,
        jitter_scale: float = 20.0,
        jitter_prob: float = 0.5,
        loss_weight: float = 10.0,
        legacy_cos_sign: bool = False,
    ) -> None:
        super().__init__()
        strides = list(backbone.reductions)
        if strides != [2, 4, 8, 16]:
            msg = (
                f"UniAS reads exactly four backbone feature maps, at strides 2, 4, 8 and 16; this backbone has "
                f"{len(strides)} taps at strides {strides}. Use a timm CNN with feature levels at those strides "
                "(e.g. tf_efficientnet_b4, tf_efficientnet_lite0) tapped at out_indices (0, 1, 2, 3)."
            )
            raise ValueError(msg)
        self.backbone = backbone
        self.head = UniASHead(
            feature_channels=backbone.channels,
            input_size=input_size,
            pixel_dim=pixel_dim,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_encoder_layers=num_encoder_layers,
            neighbour_size=neighbour_size,
            dropout=dropout,
            jitter_scale=jitter_scale,
            jitter_prob=jitter_prob,
            loss_weight=loss_weight,
            legacy_cos_sign=legacy_cos_sign,
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | InferenceBatch:
        """Training: ``(loss, per-level terms)``; evaluation: ``InferenceBatch``, without an autograd graph.

        Evaluation never needs gradients, and anomalib's ``TorchInferencer`` calls the model without
        switching them off (its ``.numpy()`` then fails on tensors that require grad).
        """
        if self.training:
            return self.head(self.backbone(images))
        with torch.no_grad():
            return self.head(self.backbone(images))
