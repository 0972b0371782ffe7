"""UniAS (Towards Accurate Unified Anomaly Segmentation, WACV 2025) as an anomalib model.

``UniAS`` is the anomalib model (``anomalib train --model UniAS``); ``UniASModel`` the plain PyTorch
module; :mod:`anomalib_unias.data` the unified (multi-category) data modules and the offline demo;
:mod:`anomalib_unias.metrics` the paper's pAP/DSC per category.
"""

import logging

# Like Lightning for its own logger: where the application has configured no logging (a plain script), the
# package's INFO lines (the epoch line, the results table, the resolution it chose) still reach stderr.
_logger = logging.getLogger(__name__)
_logger.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    _logger.addHandler(logging.StreamHandler())
    _logger.propagate = False

from .lightning_model import UniAS  # noqa: E402
from .torch_model import UniASHead, UniASModel  # noqa: E402

__all__ = ["UniAS", "UniASHead", "UniASModel"]
