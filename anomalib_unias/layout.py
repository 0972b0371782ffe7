"""The MVTec folder layout every data set here follows, and the category of a sample from its path.

::

    <root>/<category>/train/good/<file>
    <root>/<category>/test/<good|defect>/<file>
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   (or <stem>.png)

anomalib's batches carry no category field; since every image lives at
``<root>/<category>/<split>/<defect>/<file>`` (VisA after anomalib's conversion too), the category is the
folder above the split folder.  This module imports nothing heavy, so metrics and visualizers can use it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UniASArgumentError

TRAIN_FOLDER = "train"
TEST_FOLDER = "test"
NORMAL_FOLDER = "good"
"""Folder of normal images under ``train`` and ``test``."""
MASK_FOLDER = "ground_truth"
MASK_SUFFIX = "_mask"
"""Suffix of a mask's file stem: ``ground_truth/<defect>/<stem>_mask.png`` for ``test/<defect>/<stem>.png``."""
SPLIT_FOLDERS = (TRAIN_FOLDER, TEST_FOLDER, "val", "validation", MASK_FOLDER)
"""Folders that sit directly under a category folder."""
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Image file extensions read by default (compared case-insensitively)."""


def category_of(image_path: str | Path, default: str | None = None) -> str:
    """Return the category folder of an MVTec-layout image path.

    Args:
        image_path: Path of an image.
        default: Category to return for a path outside the MVTec layout; ``None`` raises instead.

    Raises:
        ValueError: if no split folder (train/test/val/ground_truth) appears in the path and no
            ``default`` is given.
    """
    parts = Path(image_path).parts
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] in SPLIT_FOLDERS:
            return parts[index - 1]
    if default is not None:
        return default
    msg = (
        f"Cannot tell the category of {image_path}: expected an MVTec-layout path "
        "<root>/<category>/<train|test>/<defect>/<file>."
    )
    raise UniASArgumentError(msg)
