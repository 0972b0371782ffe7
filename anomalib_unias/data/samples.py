"""The samples table of a multi-category MVTec-layout root: folder scan and mask pairing.

Masks are paired with defective images by file stem (anomalib pairs them by sorted position), and every
image extension in ``extensions`` is read (anomalib's MVTecAD reads only PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalib.data.utils import LabelName, Split, validate_path
from pandas import DataFrame

from ..errors import UniASFileNotFoundError, UniASRuntimeError
from ..layout import IMAGE_EXTENSIONS, MASK_FOLDER, MASK_SUFFIX, NORMAL_FOLDER, SPLIT_FOLDERS, TEST_FOLDER, TRAIN_FOLDER


def make_unified_samples(
    root: str | Path,
    categories: Sequence[str],
    split: str | Split,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> DataFrame:
    """Build anomalib's samples table for several categories of an MVTec-layout root.

    The columns are those of anomalib's ``make_mvtec_ad_dataset`` (``path, split, label, image_path,
    mask_path, label_index``) plus ``category``; ``mask_path`` is ``""`` for normal images, as in anomalib's
    ``make_folder_dataset`` (``None`` would turn into NaN when pandas concatenates the splits).
    The train split reads ``train/good``; the test split reads every ``test/<label>`` folder, and each
    defective image gets the mask of the same stem in ``ground_truth/<label>/`` (``<stem>_mask.<ext>``
    preferred, else ``<stem>.<ext>``).

    Raises:
        FileNotFoundError: a category folder is missing, or a defective image has no mask.
        RuntimeError: a category has no image of ``extensions`` in the split.
    """
    root = validate_path(root)
    split = Split(split)
    extensions = tuple(extension.lower() for extension in extensions)
    rows = []
    for category in categories:
        category_root = root / category
        if not category_root.is_dir():
            msg = f"Category folder {category_root} does not exist (categories: {list(categories)})."
            raise UniASFileNotFoundError(msg)
        image_folders = (
            [category_root / TRAIN_FOLDER / NORMAL_FOLDER]
            if split == Split.TRAIN
            else sorted(path for path in (category_root / TEST_FOLDER).glob("*") if path.is_dir())
        )
        images = [
            path
            for folder in image_folders
            for path in sorted(folder.glob("*"))
            if path.is_file() and path.suffix.lower() in extensions
        ]
        if not images:
            folders = ", ".join(str(folder) for folder in image_folders) or str(category_root / TEST_FOLDER)
            msg = f"Found no {split.value} images with extensions {extensions} in {folders}."
            raise UniASRuntimeError(msg)
        for image_path in images:
            label = image_path.parent.name
            is_normal = label == NORMAL_FOLDER
            mask_path = "" if is_normal else str(_find_mask(image_path, category_root, extensions))
            rows.append(
                (
                    str(category_root),
                    split.value,
                    label,
                    str(image_path),
                    mask_path,
                    LabelName.NORMAL if is_normal else LabelName.ABNORMAL,
                    category,
                ),
            )
    samples = DataFrame(
        rows,
        columns=["path", "split", "label", "image_path", "mask_path", "label_index", "category"],
    )
    samples.label_index = samples.label_index.astype(int)
    samples.attrs["task"] = "segmentation"
    return samples


def _find_mask(image_path: Path, category_root: Path, extensions: Sequence[str]) -> Path:
    """Return the ground-truth mask of a defective test image, paired by file stem."""
    mask_folder = category_root / MASK_FOLDER / image_path.parent.name
    for stem in (image_path.stem + MASK_SUFFIX, image_path.stem):
        for candidate in sorted(mask_folder.glob(f"{stem}.*")):
            if candidate.suffix.lower() in extensions:
                return candidate
    msg = (
        f"The defective test image {image_path} has no ground-truth mask: expected "
        f"{mask_folder / (image_path.stem + MASK_SUFFIX)}.png (or {image_path.stem}.png; any of {tuple(extensions)}). "
        f"Add the mask there (0 = normal, >0 = defect), or move the image out of {image_path.parent}."
    )
    raise UniASFileNotFoundError(msg)


def discover_categories(root: str | Path) -> list[str]:
    """Return the sorted sub-folders of ``root`` that contain a ``train`` or ``test`` folder.

    Raises:
        FileNotFoundError: ``root`` is missing, or it holds no category folder.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"Dataset root {root} does not exist."
        raise UniASFileNotFoundError(msg)
    categories = sorted(
        path.name for path in root.iterdir() if (path / TRAIN_FOLDER).is_dir() or (path / TEST_FOLDER).is_dir()
    )
    if not categories:
        hint = (
            f" {root} itself looks like ONE category folder: pass its parent {root.parent} as root."
            if any((root / folder).is_dir() for folder in SPLIT_FOLDERS)
            else ""
        )
        msg = f"No category folders (<category>/train, <category>/test) found in {root}.{hint}"
        raise UniASFileNotFoundError(msg)
    return categories
