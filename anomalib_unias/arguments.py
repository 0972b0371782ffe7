"""The constraints on UniAS's arguments outside the architecture, optimiser and resolution records: statistics.

The architecture's own checks run when an :class:`~anomalib_unias.architecture.Architecture` is made, the tiling's
when a :class:`~anomalib_unias.resolution.WorkingResolution` is.
Each refusal is a :class:`~anomalib_unias.errors.UniASArgumentError` that names the argument, the value,
the rule and a value that works, so that a bad setting fails at once (and reads first in the CLI's
output) instead of in the first forward pass or after the first epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import refuse


def check_normalization(*, input_mean: Sequence[float] | None, input_std: Sequence[float] | None) -> None:
    """Check the pre-processor's RGB statistics: three finite means and three finite, positive deviations.

    ``None`` (the backbone's own statistics) always passes.

    Raises:
        UniASArgumentError: naming the first argument that cannot work.
    """
    if input_mean is not None and (len(input_mean) != 3 or not all(math.isfinite(v) for v in input_mean)):
        refuse("input_mean", list(input_mean), "must be three finite numbers (R, G, B)", "null (the backbone's own)")
    if input_std is not None and (len(input_std) != 3 or not all(math.isfinite(v) and v > 0 for v in input_std)):
        refuse("input_std", list(input_std), "must be three finite numbers > 0 (R, G, B)", "null (the backbone's own)")
