"""Gaussian filtering with residual concatenation and feature jitter (UniAS paper, Sec. 3.1; spec §2).

Every backbone level F is split into a low-pass part ``G(F)`` (the reconstruction target) and a
high-pass residual ``F - G(F)``; the decoder reads both, concatenated along channels.  During training
each level receives, with probability ``jitter_prob``, the feature-jitter noise of UniAD.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def gaussian_taps(kernel_size: int, sigma: float) -> torch.Tensor:
    """Return the normalised 1-D Gaussian taps ``exp(-x^2 / 2 sigma^2)`` for ``x = -k//2 .. k//2``."""
    x = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    taps = torch.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


class GaussianBlur2d(nn.Module):
    """Separable Gaussian blur with a reflect border (mirror without repeating the edge sample).

    The horizontal pass runs first, then the vertical one; each channel is filtered on its own.
    Numerically this is kornia's ``gaussian_blur2d(..., border_type="reflect")``.
    """

    def __init__(self, kernel_size: int, sigma: float) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            msg = f"Gaussian kernel size must be odd, got {kernel_size}"
            raise ValueError(msg)
        self.kernel_size = kernel_size
        self.sigma = sigma
        self.register_buffer("taps", gaussian_taps(kernel_size, sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` of shape (B, C, H, W); H and W must exceed ``kernel_size // 2``."""
        batch, channels, height, width = x.shape
        pad = self.kernel_size // 2
        taps = self.taps.to(x.dtype)
        flat = x.reshape(batch * channels, 1, height, width)
        flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
        flat = F.conv2d(flat, taps.view(1, 1, 1, -1))
        flat = F.conv2d(flat, taps.view(1, 1, -1, 1))
        return flat.reshape(batch, channels, height, width)


def feature_jitter(features: torch.Tensor, scale: float) -> torch.Tensor:
    """UniAD feature jitter: add ``eps * scale * ||x||_2 / C`` per pixel, ``eps ~ N(0, 1)`` (spec §2)."""
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


__all__ = ["FeaturePreparation", "GaussianBlur2d", "feature_jitter", "gaussian_taps"]
