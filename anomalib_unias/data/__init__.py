"""Data for UniAS (docs/design.md §7).

Unified (multi-category) anomalib data modules, the paper's per-category augmentations and an embedded
demo data set.
"""

from .augmentation import (
    CategoryAugmentation,
    RandomRightAngleRotation,
    mvtec_paper_augmentation,
    visa_paper_augmentation,
)
from .datamodules import UnifiedFolder, UnifiedMVTecAD, UnifiedVisa
from .dataset import UnifiedDataset
from .demo import DEFECT_TYPES, DEMO_CATEGORIES, UniASDemo, generate_demo_dataset
from .samples import make_unified_samples

__all__ = [
    "DEFECT_TYPES",
    "DEMO_CATEGORIES",
    "CategoryAugmentation",
    "RandomRightAngleRotation",
    "UniASDemo",
    "UnifiedDataset",
    "UnifiedFolder",
    "UnifiedMVTecAD",
    "UnifiedVisa",
    "generate_demo_dataset",
    "make_unified_samples",
    "mvtec_paper_augmentation",
    "visa_paper_augmentation",
]
