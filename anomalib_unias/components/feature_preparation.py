"""Gaussian filtering with residual concatenation and feature jitter (UniAS paper, Sec. 3.1; docs/design.md §2).

Every backbone level F is split into a low-pass part ``G(F)`` (the reconstruction target) and a
high-pass residual ``F - G(F)``; the decoder reads both, concatenated along channels.  During training
each level receives, with probability ``jitter_prob``, the feature-jitter noise of UniAD.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import GaussianBlur2d


def feature_jitter(features: torch.Tensor, scale: float) -> torch.Tensor:
    """UniAD feature jitter: add ``eps * scale * ||x||_2 / C`` per pixel, ``eps ~ N(0, 1)`` (docs/design.md §2)."""
    channels = features.shape[1]
    norm = torch.linalg.vector_norm(features, dim=1, keepdim=True)
    return features + torch.randn_like(features) * (scale * norm / channels)


class FeaturePreparation(nn.Module):
    """Build the reconstruction targets and the decoder inputs from raw backbone features.

    Args:
        jitter_scale: Feature-jitter scale ``s`` (paper: 20).
        jitter_prob: Probability that a level is jittered in a training step (paper: 0.5).  One draw
            per level per step, shared by the whole batch.
    """

    def __init__(self, jitter_scale: float = 20.0, jitter_prob: float = 0.5) -> None:
        super().__init__()
        self.jitter_scale = jitter_scale
        self.jitter_prob = jitter_prob
        self.blur = GaussianBlur2d(kernel_size=3, sigma=1.0)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return ``(targets, decoder_inputs)``; ``decoder_inputs[l] = [G(F_l), F_l - G(F_l)]``."""
        targets, inputs = [], []
        for feature in features:
            target = self.blur(feature)
            decoder_input = torch.cat([target, feature - target], dim=1)
            if self.training and self.jitter_scale > 0 and float(torch.rand(())) < self.jitter_prob:
                decoder_input = feature_jitter(decoder_input, self.jitter_scale)
            targets.append(target)
            inputs.append(decoder_input)
        return targets, inputs


__all__ = ["FeaturePreparation", "feature_jitter"]
