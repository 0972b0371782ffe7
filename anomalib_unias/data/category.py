"""Which category a sample belongs to, derived from its image path.

anomalib's batches carry no category field.  In the MVTec layout every image lives at
``<root>/<category>/<split>/<defect>/<file>`` (VisA after anomalib's conversion too), so the category is
the folder above the split folder.
"""

from __future__ import annotations

from pathlib import Path

SPLIT_FOLDERS = ("train", "test", "val", "validation", "ground_truth")


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
    raise ValueError(msg)
