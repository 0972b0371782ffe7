"""Sample-aware query reweighting (the paper's "sample-aware reweighting mechanism").

UniAS paper Sec. 3.2; docs/design.md §4.2.

Two learned query sets (``2 N`` embeddings for an ``N``-cell grid) are reweighted per image by CBAM-style
channel and spatial attention taken from the coarsest pixel-decoder map, folded into a
``2 dim``-channel grid (query ``l`` and ``l + N`` become an interleaved channel pair of cell ``l mod N``)
and mixed by an MGG-CNN into the initial ``N`` query tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from .mgg_cnn import MGGCNN


class SampleAwareQueries(nn.Module):
    """Build the initial query tokens (B, N, dim) from the coarsest pixel-decoder map.

    Args:
        dim: Query width (paper: 256).
        grid_size: Query grid (h, w) = input size / 16 (paper: 14 x 14).
    """

    def __init__(self, dim: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.grid_size = tuple(grid_size)
        num_cells = grid_size[0] * grid_size[1]
        self.query_feat = nn.Parameter(torch.randn(2 * num_cells, dim))
        self.feature_projector = nn.Conv2d(dim, dim, 3, padding=1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim)
        )
        self.spatial_conv = nn.Conv2d(2, 1, 7, padding=3)
        self.mgg_cnn = MGGCNN(in_channels=2 * dim, hidden_channels=dim, out_channels=dim)
        for module in (self.channel_mlp, self.spatial_conv):
            for parameter in module.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_uniform_(parameter)

    def channel_weights(self, projected: torch.Tensor) -> torch.Tensor:
        """CBAM channel attention of the projected map: (B, dim) in (0, 1)."""
        average, maximum = projected.mean(dim=(2, 3)), projected.amax(dim=(2, 3))
        return torch.sigmoid(self.channel_mlp(average) + self.channel_mlp(maximum))

    def spatial_weights(self, projected: torch.Tensor) -> torch.Tensor:
        """CBAM spatial attention of the projected map: (B, N) in (0, 1), row-major over the grid."""
        pooled = torch.cat([projected.mean(dim=1, keepdim=True), projected.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_conv(pooled)).flatten(1)

    def forward(self, coarse_map: torch.Tensor) -> torch.Tensor:
        """Return the initial query tokens (B, N, dim) for the coarsest map (B, dim, h, w)."""
        projected = self.feature_projector(coarse_map)
        channel = self.channel_weights(projected)
        spatial = self.spatial_weights(projected).repeat(1, 2)
        queries = self.query_feat * (channel[:, None, :] + spatial[:, :, None])
        batch, _, dim = queries.shape
        folded = queries.transpose(1, 2).reshape(batch, 2 * dim, *self.grid_size)
        return self.mgg_cnn(folded).flatten(2).transpose(1, 2)
