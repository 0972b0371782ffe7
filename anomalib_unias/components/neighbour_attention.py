"""Neighbour-masked spatial attention and the parallel channel attention.

UniAS paper Sec. 3.2; spec §4.3-4.4.

All token tensors are batch-first, ``(B, L, d)``.  Attention runs through PyTorch's fused
``scaled_dot_product_attention``, which computes exactly the multi-head attention of
``nn.MultiheadAttention`` (packed ``[W_q; W_k; W_v]`` input projection, ``1/sqrt(head_dim)`` scaling,
dropout on the attention weights); the parameter names are the same as ``nn.MultiheadAttention``'s.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def neighbour_mask(height: int, width: int, neighbour_size: int) -> torch.Tensor:
    """Boolean (N, N) mask over a row-major ``height x width`` grid, ``True`` = may NOT attend.

    Query cell ``p`` may not see key cell ``q`` when ``q`` lies in the ``neighbour_size`` window
    centred on ``p`` (clipped at the border, ``p`` itself included).

    Raises:
        ValueError: if some query would be left with no key it may attend to.
    """
    radius = neighbour_size // 2
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    blocked = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)
    if bool(blocked.all(dim=1).any()):
        largest = 2 * max(height // 2, width // 2) - 1
        hint = f"or a neighbour_size of at most {largest}" if largest >= 1 else "(a 1x1 grid cannot work)"
        msg = (
            f"A {height}x{width} query grid (input size / 16) with neighbour_size={neighbour_size} leaves "
            f"some query with no key outside its neighbourhood, so its attention would be undefined. "
            f"Use a larger input size {hint}."
        )
        raise ValueError(msg)
    return blocked


class MultiHeadAttention(nn.Module):
    """Multi-head attention on batch-first tokens with the parameters of ``nn.MultiheadAttention``.

    Args:
        dim: Token width ``d``.
        num_heads: Number of heads; ``dim`` must be divisible by it.
        dropout: Dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            msg = f"attention width {dim} is not divisible by num_heads={num_heads}"
            raise ValueError(msg)
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return F.linear(x, weight, bias).view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        blocked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend ``query`` (B, Lq, d) to ``key``/``value`` (B, Lk, d); ``blocked`` (Lq, Lk): True = not allowed."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._heads(query, w_q, b_q)
        k = self._heads(key, w_k, b_k)
        v = self._heads(value, w_v, b_v)
        allowed = None if blocked is None else ~blocked
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class AttentionLayer(nn.Module):
    """Post-norm attention sub-layer: ``LN(x + Dropout(Attn(x + pos_q, memory + pos_k, memory)))``.

    With ``memory=None`` it is self-attention on ``x`` (value = ``x``).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        blocked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the sub-layer; position encodings are added to queries and keys, never to values."""
        query = x if query_pos is None else x + query_pos
        if memory is None:
            memory, key = x, query
        else:
            key = memory if key_pos is None else memory + key_pos
        return self.norm(x + self.dropout(self.attn(query, key, memory, blocked)))


class FeedForwardLayer(nn.Module):
    """Post-norm FFN sub-layer: ``LN(x + Dropout(W2 Dropout(ReLU(W1 x))))``."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the sub-layer to ``x`` (B, L, dim)."""
        return self.norm(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class SpatialChannelBlock(nn.Module):
    """One decoder stage's transformer block: neighbour-masked spatial branch + channel branch.

    Spatial branch (tokens = grid cells, width ``dim``): masked cross-attention to the level's memory,
    masked self-attention, FFN.  Channel branch (tokens = the ``dim`` channels, width = number of grid
    cells): unmasked cross-attention, self-attention without position encoding, FFN.  Both read the
    block input; the output is their plain sum (spec §4.3).

    Args:
        dim: Query width (paper: 256).
        num_cells: Number of query-grid cells ``N`` (paper: 196); the channel branch's width.
        num_heads: Heads of both branches (paper: 4).
        ffn_dim: FFN hidden width of both branches (paper: 2048).
        dropout: Dropout (paper: 0.1).
    """

    def __init__(self, dim: int, num_cells: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        if num_cells % num_heads:
            msg = (
                f"The channel attention treats each channel's {num_cells}-cell spatial profile as a token, "
                f"so the number of query-grid cells must be divisible by num_heads={num_heads}. "
                "Choose another input size or number of heads."
            )
            raise ValueError(msg)
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
