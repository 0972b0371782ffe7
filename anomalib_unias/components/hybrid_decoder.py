"""Multi-level hybrid decoder: coarse-to-fine query refinement and per-level reconstruction heads.

UniAS paper Sec. 3.2-3.3, docs/design.md §4.1 and §4.6-4.7.

Each pixel-decoder level is patchified to the query grid (kernel = stride = 2^l), projected to the
query width and tagged with a learned level embedding; it is the memory of decoder stage ``l``.  The
query state runs through the stages in order, coarse to fine: transformer block ``l`` (neighbour-masked
spatial + channel attention), then MGG-CNN ``l``, which replaces the block output.  After every stage a
shared LayerNorm and a conv head reconstruct backbone level ``l`` (the coarsest first).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .layers import c2_xavier_fill
from .mgg_cnn import MGGCNN
from .neighbour_attention import SpatialChannelBlock, neighbour_mask
from .position_encoding import sine_position_encoding
from .sample_aware_queries import SampleAwareQueries


class ReconstructionHead(nn.Module):
    """Bilinear upsampling (align_corners=True) to the target size, then three 3x3 convs, no activation."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.Conv2d(dim, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Reconstruct a (B, out_channels, *size) feature map from the query map ``x``."""
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.convs(x)


class HybridDecoder(nn.Module):
    """Reconstruct every backbone level, coarse to fine, from the pixel-decoder maps.

    Args:
        target_channels: Backbone channels per level, coarse to fine (B4: 160, 56, 32, 24).
        grid_size: Query grid (h, w) = input size / 16.
        pixel_dim: Width of the pixel-decoder maps (paper: 256).
        dim: Query width (paper: 256).
        num_heads: Attention heads (paper: 4).
        ffn_dim: FFN width (paper: 2048).
        neighbour_size: Side of the blocked attention window (paper: 7).
        dropout: Transformer dropout (paper: 0.1).
    """

    def __init__(
        self,
        target_channels: list[int],
        grid_size: tuple[int, int],
        pixel_dim: int = 256,
        dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        neighbour_size: int = 7,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        num_levels = len(target_channels)
        num_cells = grid_size[0] * grid_size[1]
        self.register_buffer("blocked", neighbour_mask(*grid_size, neighbour_size), persistent=False)
        pos = sine_position_encoding(*grid_size, num_feats=dim // 2).flatten(1).transpose(0, 1).unsqueeze(0)
        self.register_buffer("memory_pos", pos, persistent=False)

        embed_channels = [pixel_dim] + [pixel_dim * (level + 1) // 2 for level in range(1, num_levels)]
        self.patch_embeds = nn.ModuleList([nn.Identity()])
        for level in range(1, num_levels):
            embed = nn.Conv2d(pixel_dim, embed_channels[level], kernel_size=2**level, stride=2**level)
            nn.init.xavier_uniform_(embed.weight)
            nn.init.zeros_(embed.bias)
            self.patch_embeds.append(embed)
        self.memory_projs = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in embed_channels)
        for proj in self.memory_projs:
            c2_xavier_fill(proj)
        self.level_embed = nn.Parameter(torch.randn(num_levels, dim))

        self.query_pos = nn.Parameter(torch.randn(num_cells, dim))
        self.queries = SampleAwareQueries(dim=dim, grid_size=grid_size)
        self.blocks = nn.ModuleList(
            SpatialChannelBlock(dim=dim, num_cells=num_cells, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)
            for _ in range(num_levels)
        )
        self.adaptors = nn.ModuleList(
            MGGCNN(in_channels=dim, hidden_channels=dim, out_channels=dim) for _ in range(num_levels)
        )
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(ReconstructionHead(dim, c) for c in target_channels)
        self.grid_size = tuple(grid_size)

    def memory(self, level: int, pixel_map: torch.Tensor) -> torch.Tensor:
        """Patchify, project and level-tag pixel-decoder level ``level``: (B, N, dim)."""
        tokens = self.memory_projs[level](self.patch_embeds[level](pixel_map)).flatten(2).transpose(1, 2)
        return tokens + self.level_embed[level]

    def adapt(self, level: int, tokens: torch.Tensor) -> torch.Tensor:
        """Run MGG-CNN ``level`` on the tokens (B, N, dim) laid out on the query grid."""
        batch, _, dim = tokens.shape
        grid = tokens.transpose(1, 2).reshape(batch, dim, *self.grid_size)
        return self.adaptors[level](grid).flatten(2).transpose(1, 2)

    def forward(self, pixel_maps: list[torch.Tensor], target_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Return the reconstructions, coarse to fine, at ``target_sizes``."""
        tokens = self.queries(pixel_maps[0])
        query_pos = self.query_pos.unsqueeze(0)
        reconstructions = []
        for level, pixel_map in enumerate(pixel_maps):
            tokens = self.blocks[level](tokens, self.memory(level, pixel_map), self.memory_pos, query_pos, self.blocked)
            tokens = self.adapt(level, tokens)
            batch, _, dim = tokens.shape
            normed = self.norm(tokens).transpose(1, 2).reshape(batch, dim, *self.grid_size)
            reconstructions.append(self.heads[level](normed, target_sizes[level]))
        return reconstructions
