"""The training recipe's optimiser and learning-rate schedule (paper Sec. 4.1, docs/design.md §7).

The paper trains with AdamW (learning rate 1e-4, weight decay 1e-4, betas (0.9, 0.999)) and a StepLR that
divides the learning rate by 10 after 400 of its 1,000 epochs.  Two settings are not in the paper, for runs of
tens of epochs on a CPU, each off by default:

* ``lr_schedule="cosine"``: a linear warm-up over ``warmup_fraction`` of the steps, then a cosine decay to
  ``lr_floor`` x the learning rate (Dinomaly, CVPR 2025: 2e-3 to 2e-4, i.e. a floor of 0.1), stepped per
  batch; the paper's step at epoch 400 never fires in a short run;
* ``betas``: Adam's moment decay rates.  The reconstruction models that learn fastest in the ADer benchmark's
  logs train at 10-50x UniAS's learning rate with a short-memory first moment: RD4AD Adam 5e-3 with betas
  (0.5, 0.999), InvAD Adam 4e-3 with betas (0, 0.99).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import refuse

LearningRateSchedule = Literal["step", "cosine"]


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, floor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base learning rate over ``warmup_fraction`` of ``total_steps``, then cosine to ``floor``.

    ``floor`` is a share of the base learning rate (0: decay to 0).
    """
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / decay_steps)))
        return floor + (1 - floor) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class OptimizerRecipe:
    """AdamW and its learning-rate schedule (paper values by default), checked once where it is made.

    Args:
        learning_rate: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay on every trainable parameter (paper: 1e-4).
        betas: AdamW's moment decay rates (paper: PyTorch's (0.9, 0.999)).  Not in the paper otherwise.
        lr_schedule: ``"step"`` (paper: StepLR, stepped per epoch) or ``"cosine"`` (warm-up, cosine decay,
            stepped per batch).  Not in the paper.
        lr_step_epochs: StepLR period in epochs (paper: 400).
        lr_gamma: StepLR factor (paper: 0.1).
        warmup_fraction: Share of the training steps spent warming up with ``lr_schedule="cosine"``.
        lr_floor: Where the cosine decay ends, as a share of ``learning_rate`` (0: at 0; Dinomaly: 0.1).

    Raises:
        UniASArgumentError: naming the first setting that cannot work, the rule and a value that works.
    """

    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: LearningRateSchedule = "step"
    lr_step_epochs: int = 400
    lr_gamma: float = 0.1
    warmup_fraction: float = 0.05
    lr_floor: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            refuse("learning_rate", self.learning_rate, "must be a finite number > 0", "1e-4 (paper)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            refuse("weight_decay", self.weight_decay, "must be a finite number >= 0", "1e-4 (paper)")
        betas = tuple(self.betas) if isinstance(self.betas, Iterable) else (self.betas,)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            refuse("betas", list(betas), "must be two numbers in [0, 1)", "[0.9, 0.999] (paper)")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.lr_schedule not in ("step", "cosine"):
            refuse("lr_schedule", self.lr_schedule, "must be 'step' (paper) or 'cosine'", "'step'")
        if self.lr_step_epochs < 1:
            refuse("lr_step_epochs", self.lr_step_epochs, "must be at least 1 epoch", "400 (paper)")
        if not 0 < self.lr_gamma <= 1:
            refuse("lr_gamma", self.lr_gamma, "must be in (0, 1]", "0.1 (paper)")
        if not 0 <= self.warmup_fraction < 1:
            refuse("warmup_fraction", self.warmup_fraction, "must be in [0, 1)", "0.05")
        if not 0 <= self.lr_floor <= 1:
            refuse("lr_floor", self.lr_floor, "must be in [0, 1] (a share of learning_rate)", "0, or 0.1 (Dinomaly)")

    def configure(self, parameters: Iterable[torch.nn.Parameter], total_steps: int) -> dict:
        """Lightning's optimiser configuration for ``parameters``; ``total_steps`` sizes the cosine schedule.

        ``foreach=True``: the same update, computed for all parameter tensors at once (PyTorch picks the
        per-tensor loop on CPU by default, which cost a quarter of a small model's training step here).
        """
        optimizer = torch.optim.AdamW(
            parameters, lr=self.learning_rate, betas=self.betas, weight_decay=self.weight_decay, foreach=True
        )
        if self.lr_schedule == "cosine":
            scheduler = warmup_cosine_schedule(optimizer, total_steps, self.warmup_fraction, self.lr_floor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step_epochs, gamma=self.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def clip_gradient_norm(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the global L2 norm of all of ``optimizer``'s gradients to ``max_norm`` (paper: 0.1), all tensors at once.

    Lightning's own norm clipping gives the same result tensor by tensor; ``foreach`` computes the norms of all
    gradients in one call.
    """
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
