"""Reconstruction loss of UniAS (paper Sec. 3.4, docs/design.md §5).

Per level: MSE over all elements plus a cosine term over channels per pixel; the levels are summed with
equal weight and the sum is scaled by ``weight`` (10 on MVTec AD).  The paper's cosine *distance*
``mean(1 - cos)`` is the default; ``legacy_cos_sign=True`` reproduces the reference code, which adds the
cosine *similarity* ``mean(cos)`` instead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class UniASLoss(nn.Module):
    """Sum over levels of ``MSE + cosine term``, times ``weight``.

    Args:
        weight: Loss weight ``w`` (paper: 10 for MVTec AD, 1 for VisA).
        legacy_cos_sign: Add ``mean(cos)`` as the reference code does instead of ``mean(1 - cos)``.
    """

    def __init__(self, weight: float = 10.0, legacy_cos_sign: bool = False) -> None:
        super().__init__()
        self.weight = weight
        self.legacy_cos_sign = legacy_cos_sign

    def level_terms(self, reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mse, cosine_term)`` of one level."""
        mse = F.mse_loss(reconstruction, target)
        distance = 1 - F.cosine_similarity(reconstruction, target, dim=1, eps=1e-8)
        cosine_term = (1 - distance).mean() if self.legacy_cos_sign else distance.mean()
        return mse, cosine_term

    def forward(
        self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the total loss and the unweighted per-level terms ``MSE_l + cosine_l``."""
        levels = [sum(self.level_terms(r, t)) for r, t in zip(reconstructions, targets, strict=True)]
        total = torch.zeros((), dtype=levels[0].dtype, device=levels[0].device)
        for level in levels:
            total = total + level
        return self.weight * total, levels
