"""Unified data modules, kept importable here for users.

The code lives in :mod:`.samples` (folder scan), :mod:`.dataset` and :mod:`.datamodules`.
"""

from ..layout import IMAGE_EXTENSIONS
from .datamodules import UnifiedFolder, UnifiedMVTecAD, UnifiedVisa, UnpaddedDistributedSampler
from .dataset import UnifiedDataset
from .samples import discover_categories, make_unified_samples

__all__ = [
    "IMAGE_EXTENSIONS",
    "UnifiedDataset",
    "UnifiedFolder",
    "UnifiedMVTecAD",
    "UnifiedVisa",
    "UnpaddedDistributedSampler",
    "discover_categories",
    "make_unified_samples",
]
