"""Reconstruction loss of UniAS (paper Sec. 3.4, docs/design.md §5), and an opt-in hard-mining variant.

Per level: MSE over all elements plus a cosine term over channels per pixel; the levels are summed with
equal weight and the sum is scaled by ``weight`` (10 on MVTec AD).  The paper's cosine *distance*
``mean(1 - cos)`` is the default; ``legacy_cos_sign=True`` reproduces the reference code, which adds the
cosine *similarity* ``mean(cos)`` instead.

``hard_mining=p`` (off by default; not in the paper) replaces each level's term by Dinomaly's "loose"
loss with hard mining (Guo et al., "Dinomaly: The Less Is More Philosophy in Multi-Class Unsupervised
Anomaly Detection", CVPR 2025): the cosine distance between the *whole* flattened reconstruction and
target of each image (not per pixel), whose gradient at the easiest ``p`` share of pixels (smallest
per-pixel cosine distance) is scaled by :data:`HARD_MINING_FACTOR`; ``p`` ramps up linearly from 0 over
the first ``hard_mining_warmup`` training steps.  Training then spends its gradient on the pixels it
reconstructs worst.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

HARD_MINING_FACTOR = 0.1
"""Gradient scale of the easy pixels in the hard-mining loss (Dinomaly's value)."""


def _scale_easy_gradients(reconstruction: torch.Tensor, distance: torch.Tensor, share: float) -> None:
    """Scale the gradient reaching ``reconstruction`` at the ``share`` of pixels with the smallest ``distance``."""
    if share <= 0 or not reconstruction.requires_grad:
        return
    flat = distance.detach().flatten()
    count = min(flat.numel(), max(1, round(share * flat.numel())))
    threshold = flat.kthvalue(count).values
    scale = torch.where(distance.detach() <= threshold, HARD_MINING_FACTOR, 1.0).unsqueeze(1)
    reconstruction.register_hook(lambda grad: grad * scale.to(grad.dtype))


class UniASLoss(nn.Module):
    """Sum over levels of ``MSE + cosine term``, times ``weight`` (or the hard-mining variant).

    Args:
        weight: Loss weight ``w`` (paper: 10 for MVTec AD, 1 for VisA).
        legacy_cos_sign: Add ``mean(cos)`` as the reference code does instead of ``mean(1 - cos)``.
        hard_mining: ``None`` (paper) or the share ``p`` of easiest pixels whose gradient is scaled down
            (Dinomaly: 0.9), with the global cosine distance as each level's term.
        hard_mining_warmup: Training steps over which ``p`` ramps up from 0 (Dinomaly: 1000).
    """

    def __init__(
        self,
        weight: float = 10.0,
        legacy_cos_sign: bool = False,
        hard_mining: float | None = None,
        hard_mining_warmup: int = 1000,
    ) -> None:
        super().__init__()
        self.weight = weight
        self.legacy_cos_sign = legacy_cos_sign
        self.hard_mining = hard_mining
        self.hard_mining_warmup = hard_mining_warmup
        if hard_mining is not None:  # counted in the state dict, so that a resumed run continues the ramp
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def level_terms(self, reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mse, cosine_term)`` of one level."""
        mse = F.mse_loss(reconstruction, target)
        distance = 1 - F.cosine_similarity(reconstruction, target, dim=1, eps=1e-8)
        cosine_term = (1 - distance).mean() if self.legacy_cos_sign else distance.mean()
        return mse, cosine_term

    def hard_mining_term(self, reconstruction: torch.Tensor, target: torch.Tensor, share: float) -> torch.Tensor:
        """Global cosine distance per image, averaged, with the easy pixels' gradient scaled down."""
        _scale_easy_gradients(reconstruction, 1 - F.cosine_similarity(reconstruction, target, dim=1), share)
        return (1 - F.cosine_similarity(reconstruction.flatten(1), target.flatten(1), dim=1)).mean()

    def forward(
        self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the total loss and the unweighted per-level terms."""
        if self.hard_mining is None:
            levels = [sum(self.level_terms(r, t)) for r, t in zip(reconstructions, targets, strict=True)]
        else:
            ramp = min(1.0, float(self.steps) / self.hard_mining_warmup) if self.hard_mining_warmup else 1.0
            levels = [
                self.hard_mining_term(r, t, self.hard_mining * ramp)
                for r, t in zip(reconstructions, targets, strict=True)
            ]
            self.steps += 1
        total = torch.zeros((), dtype=levels[0].dtype, device=levels[0].device)
        for level in levels:
            total = total + level
        return self.weight * total, levels
