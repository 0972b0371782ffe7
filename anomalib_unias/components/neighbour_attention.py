"""Neighbour-masked spatial attention and the parallel channel attention.

UniAS paper Sec. 3.2; docs/design.md §4.3-4.4.

All token tensors are batch-first, ``(B, L, d)``; the attention and feed-forward sub-layers are the
shared ones of :mod:`anomalib_unias.components.layers`.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import AttentionLayer, FeedForwardLayer


def neighbour_mask(height: int, width: int, neighbour_size: int) -> torch.Tensor:
    """Boolean (N, N) mask over a row-major ``height x width`` grid, ``True`` = may NOT attend.

    Query cell ``p`` may not see key cell ``q`` when ``q`` lies in the ``neighbour_size`` window
    centred on ``p`` (clipped at the border, ``p`` itself included).  Every query keeps some key for
    the grids an :class:`~anomalib_unias.architecture.Architecture` admits (it checks this rule).
    """
    radius = neighbour_size // 2
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    blocked = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)
    return blocked


class SpatialChannelBlock(nn.Module):
    """One decoder stage's transformer block: neighbour-masked spatial branch + channel branch.

    Spatial branch (tokens = grid cells, width ``dim``): masked cross-attention to the level's memory,
    masked self-attention, FFN.  Channel branch (tokens = the ``dim`` channels, width = number of grid
    cells): unmasked cross-attention, self-attention without position encoding, FFN.  Both read the
    block input; the output is their plain sum (docs/design.md §4.3).

    Args:
        dim: Query width (paper: 256).
        num_cells: Number of query-grid cells ``N`` (paper: 196); the channel branch's width, divisible by
            ``num_heads`` (an :class:`~anomalib_unias.architecture.Architecture` checks it).
        num_heads: Heads of both branches (paper: 4).
        ffn_dim: FFN hidden width of both branches (paper: 2048).
        dropout: Dropout (paper: 0.1).
    """

    def __init__(self, dim: int, num_cells: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.spatial_cross_attn = AttentionLayer(dim, num_heads, dropout)
        self.spatial_self_attn = AttentionLayer(dim, num_heads, dropout)
        self.spatial_ffn = FeedForwardLayer(dim, ffn_dim, dropout)
        self.channel_cross_attn = AttentionLayer(num_cells, num_heads, dropout)
        self.channel_self_attn = AttentionLayer(num_cells, num_heads, dropout)
        self.channel_ffn = FeedForwardLayer(num_cells, ffn_dim, dropout)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        query_pos: torch.Tensor,
        blocked: torch.Tensor,
    ) -> torch.Tensor:
        """Refine ``queries`` (B, N, dim) with ``memory`` (B, N, dim); positions are (1, N, dim)."""
        spatial = self.spatial_cross_attn(queries, memory, query_pos, memory_pos, blocked)
        spatial = self.spatial_self_attn(spatial, query_pos=query_pos, blocked=blocked)
        spatial = self.spatial_ffn(spatial)

        channel = self.channel_cross_attn(
            queries.transpose(1, 2), memory.transpose(1, 2), key_pos=memory_pos.transpose(1, 2)
        )
        channel = self.channel_self_attn(channel)
        channel = self.channel_ffn(channel)
        return spatial + channel.transpose(1, 2)
