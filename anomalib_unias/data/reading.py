"""Reading images and masks of any common bit depth, and checking a whole data set before training.

anomalib 2.7 reads every image with PIL ``convert("RGB")`` and every mask as ``value > 0``: a 16-bit
image saturates to white, a JPEG-saved or noisy mask grows, a truncated file fails only when it is
first read (for test images: after all training epochs), without its name.  Here:

**Images** become float tensors in [0, 1], ``(3, H, W)``:

* 8-bit (and 1-bit, palette, RGBA, ...) files exactly as anomalib reads them (PIL, ``convert("RGB")``);
* 16-bit greyscale or RGB PNG/TIFF divided by 65535;
* float TIFF (or PIL mode ``F``) taken as they are when every value is finite and in [0, 1];
* greyscale is repeated to three channels and an alpha channel is dropped.

Anything else (other integer ranges, float values outside [0, 1], NaN/Inf, more than four channels) is
refused with the reason.

**Masks** (:data:`MASK_RULE`): a mask whose values are all in {0, full} or all in {0, 1} (full = 255 for
8-bit, 65535 for 16-bit, 1.0 for float) is read as it is; any other mask is binarised at half the full
value (``> 127`` for 8-bit) and reported.  Colour masks are reduced to the maximum over their channels.
A mask whose size differs from its image is an error unless the data module is told to resize masks.

:func:`check_samples` decodes every image and mask of a samples table once (in threads: decoding
releases the GIL) and raises one :class:`DataCheckError` listing every bad file with its reason and
the fix, before any training step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from torchvision.transforms.v2.functional import InterpolationMode, resize, to_dtype, to_image
from torchvision.tv_tensors import Image as ImageTensor
from torchvision.tv_tensors import Mask

from ..errors import UniASError

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
MASK_RULE = (
    "masks with values only in {0, full} or only in {0, 1} are read as they are (full = 255 for 8-bit, "
    "65535 for 16-bit, 1.0 for float); other masks are binarised at half the full value (> 127 for 8-bit)"
)
IMAGE_FIX = (
    "re-save it as an 8- or 16-bit PNG/TIFF (or a float TIFF with values in [0, 1]), or remove it from the data set"
)


class DataCheckError(UniASError, ValueError):
    """Files of a data set that cannot be used, each with its reason and the fix."""


class UnreadableFileError(UniASError, OSError):
    """An image or mask file that cannot be read (the message names the file and the fix)."""


@dataclass
class MaskNote:
    """A mask that was binarised by :data:`MASK_RULE` rather than read as it is."""

    path: str
    distinct_values: int
    changed_pixels: int  # pixels where "> 0" (anomalib's rule) and the threshold disagree


def _unit_range(array: np.ndarray, path: str | Path) -> np.ndarray:
    """``array`` scaled to float32 [0, 1] by its bit depth; refuse what has no such meaning."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.min() >= 0 and array.max() <= 65535:  # 16-bit data in a wider integer type
            return array.astype(np.float32) / 65535
        msg = f"{path}: integer pixels ({array.dtype}) outside the 16-bit range; {IMAGE_FIX}"
        raise UnreadableFileError(msg)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            msg = f"{path}: {int((~np.isfinite(array)).sum())} NaN/Inf pixel values; replace them, or {IMAGE_FIX}"
            raise UnreadableFileError(msg)
        if array.size and (array.min() < 0 or array.max() > 1):
            msg = (
                f"{path}: float pixels in [{array.min():.4g}, {array.max():.4g}], not in [0, 1]; scale them to "
                f"[0, 1], or {IMAGE_FIX}"
            )
            raise UnreadableFileError(msg)
        return array.astype(np.float32)
    msg = f"{path}: unsupported pixel type {array.dtype}; {IMAGE_FIX}"
    raise UnreadableFileError(msg)


def _three_channels(array: np.ndarray, path: str | Path) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1..4 -> (H, W, 3): grey repeated, alpha dropped."""
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (1, 2):  # grey (+ alpha)
        return np.repeat(array[..., :1], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):  # RGB (+ alpha)
        return array[..., :3]
    msg = f"{path}: array of shape {array.shape} is not a greyscale or RGB(A) image; {IMAGE_FIX}"
    raise UnreadableFileError(msg)


def _raw_array(path: Path) -> np.ndarray | Image.Image:
    """TIFFs as tifffile's array (native depth); anything else as a fully decoded PIL image."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = tifffile.imread(path)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):  # planar (C, H, W)
            array = np.moveaxis(array, 0, -1)
        return array
    image = Image.open(path)
    image.load()
    return image


def read_image(path: str | Path) -> ImageTensor:
    """Read an image as a float ``(3, H, W)`` tensor in [0, 1] (see the module docstring).

    Raises:
        UnreadableFileError: the file cannot be decoded or has no [0, 1] meaning; the message names it.
    """
    path = Path(path)
    try:
        raw = _raw_array(path)
    except Exception as error:
        msg = f"{path}: cannot be read ({type(error).__name__}: {error}); {IMAGE_FIX}"
        raise UnreadableFileError(msg) from error
    if isinstance(raw, Image.Image):
        if raw.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
            raw = np.asarray(raw)
        else:  # 8-bit and lower: exactly anomalib's read_image
            return to_dtype(to_image(raw.convert("RGB")), torch.float32, scale=True)
    array = _three_channels(_unit_range(np.asarray(raw), path), path)
    return ImageTensor(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))


def read_image_for_anomalib(path: str | Path, as_tensor: bool = False) -> torch.Tensor | np.ndarray:
    """The ``read_image(path, as_tensor)`` of anomalib, reading as :func:`read_image` (and so as training) does.

    anomalib's own reader (``PIL convert("RGB")``) turns a 16-bit image white and a float TIFF in [0, 1] black;
    its deployment entry points (``anomalib predict``, ``OpenVINOInferencer`` and ``TorchInferencer`` given a
    path) read with this function instead once the plugin is installed (:mod:`anomalib_unias.anomalib_fixes`).
    8-bit images come out as anomalib read them; files without a [0, 1] meaning (NaN pixels, floats outside
    [0, 1]) are refused naming the file, never blanked.

    Returns:
        A float ``(3, H, W)`` tensor in [0, 1] (``as_tensor``), else an ``(H, W, 3)`` float64 array in [0, 1].
    """
    image = read_image(path)
    return image if as_tensor else image.permute(1, 2, 0).numpy().astype(np.float64)


def read_mask(
    path: str | Path, size: tuple[int, int] | None = None, resize_masks: bool = False
) -> tuple[Mask, MaskNote | None]:
    """Read a ground-truth mask as a binary ``(H, W)`` uint8 mask by :data:`MASK_RULE`.

    Args:
        path: Mask file.
        size: The image's (H, W); a mask of another size is refused unless ``resize_masks``.
        resize_masks: Resize a mask of another size to ``size`` (nearest neighbour) instead of refusing it.

    Returns:
        The mask and, if it was binarised by threshold, a :class:`MaskNote`.

    Raises:
        UnreadableFileError: the file cannot be decoded, or its size differs from ``size``.
    """
    path = Path(path)
    try:
        raw = _raw_array(path)
    except Exception as error:
        msg = (
            f"{path}: mask cannot be read ({type(error).__name__}: {error}); "
            "re-save it as a PNG with 0 = normal, 255 = defect"
        )
        raise UnreadableFileError(msg) from error
    if isinstance(raw, Image.Image):
        raw = raw.convert("RGB") if raw.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV") else raw
        array = np.asarray(raw)
        if raw.mode in ("LA", "RGBA"):
            array = array[..., :-1]
    else:
        array = raw
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        msg = f"{path}: mask array of shape {array.shape} is not a 2-D mask; re-save it as a single-channel PNG"
        raise UnreadableFileError(msg)
    full = (
        1.0
        if np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_
        else (255 if array.dtype == np.uint8 else 65535)
    )
    values = np.unique(array)
    note = None
    if set(values.tolist()) <= {0, full} or set(values.tolist()) <= {0, 1}:
        binary = array > 0
    else:
        binary = array > full / 2
        note = MaskNote(str(path), int(values.size), int(np.count_nonzero(binary != (array > 0))))
    mask = Mask(torch.from_numpy(binary.astype(np.uint8)))
    if size is not None and tuple(mask.shape) != tuple(size):
        if not resize_masks:
            msg = (
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (W x H) but its image is {size[1]}x{size[0]}; "
                "resize the mask to the image (nearest neighbour), or let the data module resize masks "
                "(resize_masks=True, --data.resize_masks true)"
            )
            raise UnreadableFileError(msg)
        mask = Mask(resize(mask[None], list(size), interpolation=InterpolationMode.NEAREST)[0])
    return mask, note


@dataclass
class DataReport:
    """What :func:`check_samples` found: bad files (errors) and binarised masks (notes)."""

    errors: list[str] = field(default_factory=list)
    mask_notes: list[MaskNote] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)


def _check_row(image_path: str, mask_path: str, resize_masks: bool) -> DataReport:
    report = DataReport()
    try:
        image = read_image(image_path)
    except UnreadableFileError as error:
        report.errors.append(str(error))
        return report
    if mask_path:
        try:
            mask, note = read_mask(mask_path, tuple(image.shape[-2:]), resize_masks)
        except UnreadableFileError as error:
            report.errors.append(str(error))
            return report
        if note is not None:
            report.mask_notes.append(note)
        if not mask.any():
            report.empty_masks.append(mask_path)
    return report


def check_samples(
    rows: Iterable[tuple[str, str]], resize_masks: bool = False, workers: int | None = None
) -> DataReport:
    """Decode every ``(image_path, mask_path)`` once; raise one error listing every unusable file.

    ``mask_path`` is ``""`` for normal images.  Binarised masks and defective images with an empty mask
    are logged once (warnings); they are not errors.

    Raises:
        DataCheckError: at least one file cannot be used; the message lists them all, with the fix.
    """
    rows = list(rows)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda row: _check_row(*row, resize_masks), rows))
    report = DataReport(
        errors=[e for part in parts for e in part.errors],
        mask_notes=[n for part in parts for n in part.mask_notes],
        empty_masks=[m for part in parts for m in part.empty_masks],
    )
    if report.errors:
        listing = "\n".join(f"  - {error}" for error in report.errors)
        msg = f"{len(report.errors)} of {len(rows)} data files cannot be used (nothing was trained):\n{listing}"
        raise DataCheckError(msg)
    if report.mask_notes:
        listing = "\n".join(
            f"  - {note.path}: {note.distinct_values} distinct values, {note.changed_pixels} pixels differ from '> 0'"
            for note in report.mask_notes[:20]
        )
        more = f"\n  ... and {len(report.mask_notes) - 20} more" if len(report.mask_notes) > 20 else ""
        logger.warning(
            "%d masks are not binary and were binarised (%s):\n%s%s", len(report.mask_notes), MASK_RULE, listing, more
        )
    if report.empty_masks:
        logger.warning(
            "%d defective test images have an empty mask (no defect pixel): %s",
            len(report.empty_masks),
            ", ".join(report.empty_masks[:10]) + (" ..." if len(report.empty_masks) > 10 else ""),
        )
    return report
