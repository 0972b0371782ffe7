"""UniAS (Towards Accurate Unified Anomaly Segmentation, WACV 2025) as an anomalib model.

``UniAS`` is the anomalib model (``anomalib train --model UniAS``); ``UniASModel`` the plain PyTorch
module; :mod:`anomalib_unias.data` the unified (multi-category) data modules and the offline demo;
:mod:`anomalib_unias.metrics` the paper's pAP/DSC per category.
"""

from .lightning_model import UniAS
from .torch_model import UniASHead, UniASModel

__all__ = ["UniAS", "UniASHead", "UniASModel"]
