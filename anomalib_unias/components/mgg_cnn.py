"""Multi-granularity gated CNN (MGG-CNN; UniAS paper Sec. 3.3, docs/design.md §4.5).

Four parallel convolution branches with 1x1, 3x3, 5x5 (two stacked 3x3) and 7x7 (three stacked 3x3)
receptive fields, each closed by a GELU (the "gate", ``x * Phi(x)``), summed.  No norm, no residual.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _stacked_3x3(in_channels: int, hidden_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    widths = [in_channels] + [hidden_channels] * (depth - 1) + [out_channels]
    return nn.Sequential(*(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(depth)))


class MGGCNN(nn.Module):
    """Sum of GELU-gated 1x1, 3x3, 5x5 and 7x7 conv branches, ``in -> out`` channels.

    Args:
        in_channels: Input channels (256 after a decoder stage, 512 for the folded initial queries).
        hidden_channels: Width inside the stacked branches.
        out_channels: Output channels.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, out_channels, 1)
        self.branch3x3 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.branch5x5 = _stacked_3x3(in_channels, hidden_channels, out_channels, depth=2)
        self.branch7x7 = _stacked_3x3(in_channels, hidden_channels, out_channels, depth=3)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the four branches to ``x`` (B, C_in, H, W) and return their sum (B, C_out, H, W)."""
        out = F.gelu(self.branch1x1(x))
        out = out + F.gelu(self.branch3x3(x))
        out = out + F.gelu(self.branch5x5(x))
        return out + F.gelu(self.branch7x7(x))
