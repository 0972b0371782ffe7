"""Shared layers of the UniAS head: attention, feed-forward, conv + GroupNorm, Gaussian blur.

These are generic building blocks used by several paper concepts (pixel decoder, hybrid decoder,
feature preparation, anomaly map); the concept modules around them hold what the paper adds.

Attention runs through PyTorch's fused ``scaled_dot_product_attention``, which computes exactly the
multi-head attention of ``nn.MultiheadAttention`` (packed ``[W_q; W_k; W_v]`` input projection,
``1/sqrt(head_dim)`` scaling, dropout on the attention weights); the parameter names are the same as
``nn.MultiheadAttention``'s, and all token tensors are batch-first, ``(B, L, d)``.  ``ConvNorm`` and
``c2_xavier_fill`` replace detectron2's conv wrapper and initialisation (docs/design.md §3).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..errors import UniASArgumentError


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
            raise UniASArgumentError(msg)
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


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """Detectron2's ``c2_xavier_fill``: kaiming-uniform with ``a=1`` and a zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class ConvNorm(nn.Module):
    """Conv (bias only when there is no norm) followed by an optional GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm_groups: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm_groups is None
        )
        self.norm = nn.GroupNorm(norm_groups, out_channels) if norm_groups else nn.Identity()
        c2_xavier_fill(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, then normalise."""
        return self.norm(self.conv(x))


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
            raise UniASArgumentError(msg)
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
