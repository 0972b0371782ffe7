"""Multi-level anomaly map and image score of UniAS (paper Sec. 3.4, docs/design.md §6).

Per level ``A_l = 1 - cos(R_l, T_l)`` over channels; each map is resized to the finest level's size
(bilinear, align_corners=False) and smoothed with a level-specific Gaussian (kernel 3, 5, 7, 9 with
sigma = kernel / 3, coarse to fine); the maps are multiplied (finest first, as the reference code does)
and the product is upsampled to the input size (bilinear, align_corners=True).  The image score is the
maximum of the map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .components.layers import GaussianBlur2d


class AnomalyMapGenerator(nn.Module):
    """Fuse per-level cosine-distance maps into one map at the input size.

    Args:
        num_levels: Number of levels (4).
        input_size: (H, W) of the model input; the fused map is returned at this size.
    """

    def __init__(self, num_levels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.blurs = nn.ModuleList(GaussianBlur2d(k, k / 3) for k in range(3, 3 + 2 * num_levels, 2))

    def level_maps(self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return the smoothed per-level maps (B, 1, h1, w1) at the finest level's size, coarse to fine."""
        size = targets[-1].shape[-2:]
        maps = []
        for blur, reconstruction, target in zip(self.blurs, reconstructions, targets, strict=True):
            level_map = (1 - F.cosine_similarity(reconstruction, target, dim=1, eps=1e-8)).unsqueeze(1)
            if level_map.shape[-2:] != size:
                level_map = F.interpolate(level_map, size=size, mode="bilinear", align_corners=False)
            maps.append(blur(level_map))
        return maps

    def forward(self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Return the fused anomaly map (B, 1, H, W)."""
        maps = self.level_maps(reconstructions, targets)
        fused = maps[-1]
        for level_map in maps[:-1]:
            fused = fused * level_map
        return F.interpolate(fused, size=self.input_size, mode="bilinear", align_corners=True)
