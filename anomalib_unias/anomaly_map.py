"""Multi-level anomaly map and image score of UniAS (paper Sec. 3.4, docs/design.md §6).

Per level ``A_l = 1 - cos(R_l, T_l)`` over channels; each map is resized to the finest level's size
(bilinear, align_corners=False) and smoothed with a level-specific Gaussian (kernel 3, 5, 7, 9 with
sigma = kernel / 3, coarse to fine); the maps are multiplied (finest first, as the reference code does)
and the product is upsampled to the input size (bilinear, align_corners=True).  The image score is the
maximum of the map.

Two switches, off by default, change only the fusion step (not in the paper):

* ``fusion="mean"``: the mean of the level maps instead of their product.  A product multiplies the
  noise of every level into the map; a short training run leaves the fine levels (reconstructed from the
  coarse query grid) noisy, and Dinomaly (Guo et al., CVPR 2025) fuses its levels by the mean.
* ``map_strides``: fuse only the levels at these backbone strides (e.g. ``[16, 8]``); the others are
  still reconstructed and trained, just not read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .architecture import MapFusion
from .components.layers import GaussianBlur2d


class AnomalyMapGenerator(nn.Module):
    """Fuse per-level cosine-distance maps into one map at the input size.

    Args:
        num_levels: Number of levels (4).
        input_size: (H, W) of the model input; the fused map is returned at this size.
        fusion: ``"product"`` (paper) or ``"mean"`` of the fused levels.
        fused_levels: Indices (coarse to fine, 0 = stride 16) of the levels fused; ``None`` = all (paper).
    """

    def __init__(
        self,
        num_levels: int,
        input_size: tuple[int, int],
        fusion: MapFusion = "product",
        fused_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.blurs = nn.ModuleList(GaussianBlur2d(k, k / 3) for k in range(3, 3 + 2 * num_levels, 2))
        self.fusion = fusion
        self.fused_levels = tuple(range(num_levels)) if fused_levels is None else tuple(sorted(fused_levels))

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

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Fuse smoothed level maps (coarse to fine) and upsample the result to the input size."""
        chosen = [maps[level] for level in self.fused_levels]
        if self.fusion == "mean":
            fused = torch.stack(chosen).mean(dim=0)
        else:  # the paper's product, finest level first as in the reference code
            fused = chosen[-1]
            for level_map in chosen[:-1]:
                fused = fused * level_map
        return F.interpolate(fused, size=self.input_size, mode="bilinear", align_corners=True)

    def forward(self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Return the fused anomaly map (B, 1, H, W)."""
        return self.fuse(self.level_maps(reconstructions, targets))
