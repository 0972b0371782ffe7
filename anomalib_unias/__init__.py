"""UniAS (Towards Accurate Unified Anomaly Segmentation, WACV 2025) for anomalib."""

from .torch_model import UniASHead, UniASModel

__all__ = ["UniASHead", "UniASModel"]
