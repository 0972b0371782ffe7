"""anomalib dataset over several categories of an MVTec-layout root, one split (unified setting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName, Split
from torchvision.transforms.v2 import Transform
from torchvision.tv_tensors import Mask

from ..layout import IMAGE_EXTENSIONS
from .reading import read_image, read_mask
from .samples import make_unified_samples


class UnifiedDataset(AnomalibDataset):
    """anomalib dataset over several categories of an MVTec-layout root (one split).

    Images and masks are read by :mod:`anomalib_unias.data.reading` (8-bit files exactly as anomalib
    reads them; 16-bit and float files scaled by their depth; masks binarised by one documented rule;
    errors name the file), into anomalib's ``ImageItem``.  Unlike ``AnomalibDataset.__getitem__``, the
    augmentations are called as
    ``augmentations(image, mask, category)``, so a
    :class:`~anomalib_unias.data.augmentation.CategoryAugmentation` can pick the transform of the sample's
    category (docs/design.md §7); other torchvision-v2 transforms pass the ``str`` through.

    Args:
        root: dataset root holding one folder per category.
        categories: category folder names.
        split: ``"train"`` or ``"test"``.
        extensions: image file extensions (case-insensitive).
        augmentations: transform called as ``augmentations(image, mask, category)``.
        resize_masks: resize a mask whose size differs from its image (nearest) instead of refusing it.
    """

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str],
        split: str | Split,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        augmentations: Transform | None = None,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.root = Path(root)
        self.categories = list(categories)
        self.split = Split(split)
        self.resize_masks = resize_masks
        self.samples = make_unified_samples(self.root, self.categories, self.split, extensions)

    def __getitem__(self, index: int) -> ImageItem:
        """Read one sample and augment image and mask jointly, knowing the sample's category."""
        sample = self.samples.iloc[index]
        image = read_image(sample.image_path)
        if sample.label_index == LabelName.NORMAL:
            gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        else:
            gt_mask, _ = read_mask(sample.mask_path, tuple(image.shape[-2:]), self.resize_masks)
        if self.augmentations:
            image, gt_mask, _ = self.augmentations(image, gt_mask, sample.category)
        return ImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(sample.label_index),
            image_path=sample.image_path,
            mask_path=sample.mask_path,
        )
