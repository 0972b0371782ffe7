"""Data for UniAS (spec sections 7 and 12).

Unified (multi-category) anomalib data modules, the paper's per-category augmentations, an embedded demo
data set and a per-category visualizer.
"""

from .augmentation import (
    CategoryAugmentation,
    RandomRightAngleRotation,
    mvtec_paper_augmentation,
    visa_paper_augmentation,
)
from .category import category_of
from .demo import DEFECT_TYPES, DEMO_CATEGORIES, UniASDemo, generate_demo_dataset
from .unified import UnifiedDataset, UnifiedFolder, UnifiedMVTecAD, UnifiedVisa, make_unified_samples
from .visualizer import UnifiedImageVisualizer

__all__ = [
    "DEFECT_TYPES",
    "DEMO_CATEGORIES",
    "CategoryAugmentation",
    "RandomRightAngleRotation",
    "UniASDemo",
    "UnifiedDataset",
    "UnifiedFolder",
    "UnifiedImageVisualizer",
    "UnifiedMVTecAD",
    "UnifiedVisa",
    "category_of",
    "generate_demo_dataset",
    "make_unified_samples",
    "mvtec_paper_augmentation",
    "visa_paper_augmentation",
]
