"""Normalised sine position encoding (DETR / Mask2Former ``PositionEmbeddingSine``; docs/design.md §3).

Used for the pixel decoder's transformer encoder and as the key position encoding of every decoder
level (all levels are patchified to the same query grid).
"""

from __future__ import annotations

import math

import torch


def sine_position_encoding(
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Return the (2 * num_feats, height, width) encoding: y-features first, then x-features.

    Coordinates are ``(row + 1) / (height + eps) * 2 pi``; feature ``j`` divides by
    ``temperature ** (2 * (j // 2) / num_feats)`` and uses ``sin`` for even and ``cos`` for odd ``j``.
    """
    scale = 2 * math.pi
    ones = torch.ones(height, width, dtype=torch.float32)
    y_embed = ones.cumsum(0)
    x_embed = ones.cumsum(1)
    y_embed = y_embed / (y_embed[-1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x = x_embed[:, :, None] / dim_t
    pos_y = y_embed[:, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()
