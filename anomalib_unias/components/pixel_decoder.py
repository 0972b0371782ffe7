"""FPN pixel decoder with a transformer encoder on the coarsest level (Mask2Former style).

UniAS paper Sec. 3.2, docs/design.md §3.

Top-down from the stride-16 level: a 1x1 projection, a post-norm transformer encoder with sine
positions, a 3x3 conv (no bias, no norm) + ReLU; then, for each finer level, a 1x1 lateral conv +
GroupNorm, plus the bilinearly upsampled coarser output, then a 3x3 conv + GroupNorm + ReLU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .layers import AttentionLayer, ConvNorm, FeedForwardLayer, c2_xavier_fill
from .position_encoding import sine_position_encoding


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer; positions are added to queries and keys."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = AttentionLayer(dim, num_heads, dropout)
        self.ffn = FeedForwardLayer(dim, ffn_dim, dropout)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Encode ``tokens`` (B, N, dim) with positions ``pos`` (1, N, dim)."""
        return self.ffn(self.self_attn(tokens, query_pos=pos))


class PixelDecoder(nn.Module):
    """Turn the decoder inputs (coarse to fine) into ``dim``-channel maps at every level.

    Args:
        in_channels: Channels of the decoder inputs, coarse to fine (B4: 320, 112, 64, 48).
        grid_size: Size (h, w) of the coarsest level (input size / 16).
        dim: Output width (paper: 256).
        num_heads: Encoder heads (paper: 4).
        ffn_dim: Encoder FFN width (paper: 2048).
        num_encoder_layers: Encoder depth (paper: 3).
        dropout: Encoder dropout (paper: 0.1).
        norm_groups: GroupNorm groups of the FPN convs (paper: 32).
    """

    def __init__(
        self,
        in_channels: list[int],
        grid_size: tuple[int, int],
        dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        num_encoder_layers: int = 3,
        dropout: float = 0.1,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        pos = sine_position_encoding(*grid_size, num_feats=dim // 2).flatten(1).transpose(0, 1).unsqueeze(0)
        self.register_buffer("pos", pos, persistent=False)
        self.input_proj = nn.Conv2d(in_channels[0], dim, 1)
        c2_xavier_fill(self.input_proj)
        self.encoder = nn.ModuleList(
            EncoderLayer(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)
            for _ in range(num_encoder_layers)
        )
        # The coarsest output conv has neither norm nor bias (docs/design.md §3).
        self.top_conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        c2_xavier_fill(self.top_conv)
        self.laterals = nn.ModuleList(ConvNorm(c, dim, kernel_size=1, norm_groups=norm_groups) for c in in_channels[1:])
        self.outputs = nn.ModuleList(
            ConvNorm(dim, dim, kernel_size=3, norm_groups=norm_groups) for _ in in_channels[1:]
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode ``inputs`` (coarse to fine) into ``dim``-channel maps of the same sizes."""
        coarse = self.input_proj(inputs[0])
        batch, dim, height, width = coarse.shape
        tokens = coarse.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            tokens = layer(tokens, self.pos)
        coarse = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        outputs = [F.relu(self.top_conv(coarse))]
        for feature, lateral, output in zip(inputs[1:], self.laterals, self.outputs, strict=True):
            merged = lateral(feature) + F.interpolate(
                outputs[-1], size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
            outputs.append(F.relu(output(merged)))
        return outputs
