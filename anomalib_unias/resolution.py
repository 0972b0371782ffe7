"""Warn when the working resolution erases what the images show.

UniAS (like every anomalib model) resizes each image to one working resolution.  When that shrinks an
axis many times, or squashes a tall or wide image into a square, thin cracks and small pits become a
pixel or nothing, and the maps go flat (seen on real 500 x 1258 and 1130 x 460 sets: pixel AP ~2 %).
:func:`resolution_advice` compares the data's typical image size with the model's and, past a shrink
of :data:`MAX_SHRINK` or an aspect change of :data:`MAX_ASPECT_CHANGE`, says so with the numbers and the
settings that keep the detail (a larger ``image_size`` with tiling at the same ``input_size``).
:func:`auto_image_size` picks the working resolution for ``image_size="auto"``: the plain resize to
``input_size`` where it keeps the detail, else half the images' own size, tiled (:data:`AUTO_SCALE`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

MAX_SHRINK = 4.0
"""Largest per-axis shrink factor (image side / working side) accepted without a warning."""
MAX_ASPECT_CHANGE = 2.0
"""Largest change of the aspect ratio (either way) accepted without a warning."""
AUTO_SCALE = 0.5
"""Where ``image_size="auto"`` tiles, it works at this share of the images' typical size (per axis).

Half the size keeps defects of a few pixels (a 10-px pit is 5 px, still two stride-8 cells of the
backbone) and costs a quarter of the tiles, so a fixed training budget sees every part of the image four
times as often.  Measured: UniAS on AITEX's 256 x 4096 strips (configs/cpu.yaml, 60 epochs, maps scored at
the strips' own size) gains half its pixel AP at half size over the full size (README, "High-resolution
and non-square images"); anomalib's PatchCore did best at about half size on the three high-resolution sets
it was run on (AITEX, and 500 x 1258 and 1130 x 460 sets).
"""
AUTO_MAX_PIXELS = 1_500_000
"""``image_size="auto"`` works at no more than this many pixels (it scales down further where needed)."""


def image_sizes(paths: Iterable[str | Path]) -> list[tuple[int, int]]:
    """``(height, width)`` of each image file, read from its header only (no decoding)."""
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
        sizes.append((height, width))
    return sizes


def _round_to_tiles(edge: float, tile: int, stride: int | None = None) -> int:
    """The edge closest to ``edge`` that tiles of ``tile`` at ``stride`` (default: ``tile``) cover exactly."""
    stride = stride or tile
    return tile + max(0, round((edge - tile) / stride)) * stride


def typical_size(sizes: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """The size of the data's typical image: its median area at its median aspect ratio.

    Taken from the images' shapes, not from independent medians of heights and widths, which give a
    shape no image has when the data mixes shapes (small square tiles and long strips, portrait and
    landscape).  Images far from this shape are named by :func:`distorted_images`.
    """
    area = statistics.median(h * w for h, w in sizes)
    aspect = math.exp(statistics.median(math.log(w / h) for h, w in sizes))
    return math.sqrt(area / aspect), math.sqrt(area * aspect)


def distorted_images(
    paths: Sequence[str | Path], sizes: Sequence[tuple[int, int]], image_size: Sequence[int]
) -> str | None:
    """A warning naming the images whose aspect ratio the resize to ``image_size`` distorts too much.

    Too much: a change by more than :data:`MAX_ASPECT_CHANGE` either way (stretched or squashed).  ``None`` if
    no image is.
    """
    target = image_size[1] / image_size[0]
    changes = [max((w / h) / target, target / (w / h)) for h, w in sizes]
    distorted = [i for i, change in enumerate(changes) if change > MAX_ASPECT_CHANGE]
    if not distorted:
        return None
    worst = sorted(distorted, key=lambda i: -changes[i])[:3]
    examples = ", ".join(f"{paths[i]} ({sizes[i][0]} x {sizes[i][1]}, {changes[i]:.1f}x)" for i in worst)
    return (
        f"{len(distorted)} of {len(sizes)} images have an aspect ratio more than {MAX_ASPECT_CHANGE:g}x away from "
        f"the working size {image_size[0]} x {image_size[1]}: the resize stretches or squashes them (worst: "
        f"{examples}), so their defects change shape too. Where that matters, give images of one shape a data set "
        "(and a model) of their own, or rotate them to the others' shape."
    )


def resize_loss(sizes: Sequence[tuple[int, int]], image_size: Sequence[int]) -> tuple[float, float, float] | None:
    """``(height shrink, width shrink, aspect change)`` of resizing images of ``sizes`` to ``image_size``.

    ``None`` when the resize keeps the detail: no axis shrinks more than :data:`MAX_SHRINK` times and the
    aspect ratio changes by at most :data:`MAX_ASPECT_CHANGE` either way (or there is no image).
    """
    if not sizes:
        return None
    height, width = typical_size(sizes)
    shrink_h, shrink_w = height / image_size[0], width / image_size[1]
    aspect_change = max(shrink_h / shrink_w, shrink_w / shrink_h)
    if max(shrink_h, shrink_w) <= MAX_SHRINK and aspect_change <= MAX_ASPECT_CHANGE:
        return None
    return shrink_h, shrink_w, aspect_change


def tile_grid_size(
    sizes: Sequence[tuple[int, int]], input_size: Sequence[int], tile_stride: Sequence[int] | None = None
) -> tuple[int, int]:
    """:data:`AUTO_SCALE` of the images' typical size on the tile grid (what ``image_size="auto"`` tiles).

    The typical size (:func:`typical_size`) times :data:`AUTO_SCALE`, or enlarged to one tile on its shorter
    side where that is smaller (scaled down further, aspect kept, to at most :data:`AUTO_MAX_PIXELS`), each
    rounded to the nearest size that ``input_size`` tiles at ``tile_stride``
    cover exactly (at least one tile).

    Raises:
        ValueError: ``sizes`` is empty (no image to read the size from).
    """
    if not sizes:
        msg = "UniAS image_size='auto' reads the data's image sizes, but the data module has no images."
        raise ValueError(msg)
    height, width = typical_size(sizes)
    # Half the size, but at least one tile on each axis (small, long images are enlarged, their aspect kept), and
    # at most AUTO_MAX_PIXELS.
    scale = max(AUTO_SCALE, input_size[0] / height, input_size[1] / width)
    scale = min(scale, (AUTO_MAX_PIXELS / (height * width)) ** 0.5)
    stride = tuple(tile_stride) if tile_stride is not None else tuple(input_size)
    return (
        _round_to_tiles(height * scale, input_size[0], stride[0]),
        _round_to_tiles(width * scale, input_size[1], stride[1]),
    )


def auto_image_size(
    sizes: Sequence[tuple[int, int]], input_size: Sequence[int], tile_stride: Sequence[int] | None = None
) -> tuple[int, int]:
    """The working resolution for ``image_size="auto"``: no tiling where the plain resize keeps the detail.

    ``input_size`` itself when resizing the images to it keeps the detail (:func:`resize_loss`: e.g. MTD's
    ~250 x 380 tiles at 128 x 128, where tiling measured worse); otherwise :func:`tile_grid_size`, half the
    images' typical size cut into ``input_size`` tiles (e.g. 256 x 4096 fabric strips at 128 x 2048,
    500 x 1258 images at 256 x 640).

    Raises:
        ValueError: ``sizes`` is empty (no image to read the size from).
    """
    if sizes and resize_loss(sizes, input_size) is None:
        return int(input_size[0]), int(input_size[1])
    return tile_grid_size(sizes, input_size, tile_stride)


def auto_tiling(
    sizes: Sequence[tuple[int, int]],
    input_size: Sequence[int],
    tile_stride: Sequence[int] | None,
    train_tiles: int | None,
) -> tuple[tuple[int, int], int | None]:
    """``(image_size, train_tiles)`` that ``image_size="auto"`` resolves to for images of ``sizes``.

    :func:`auto_image_size`; ``train_tiles`` as given where that tiles, ``None`` where it is the plain
    resize to ``input_size`` (no tiles to draw).

    Raises:
        ValueError: ``sizes`` is empty (no image to read the size from).
    """
    image_size = auto_image_size(sizes, input_size, tile_stride)
    return image_size, (None if image_size == tuple(input_size) else train_tiles)


def resolution_advice(
    sizes: Sequence[tuple[int, int]], image_size: Sequence[int], input_size: Sequence[int]
) -> str | None:
    """What the resize to ``image_size`` does to images of ``sizes``, if it loses too much; else ``None``.

    Args:
        sizes: ``(height, width)`` of the data's images.
        image_size: The working resolution the pre-processor resizes to.
        input_size: The model input (the tile, when tiling).
    """
    loss = resize_loss(sizes, image_size)
    if loss is None:
        return None
    height, width = typical_size(sizes)
    work_h, work_w = image_size
    shrink_h, shrink_w, _ = loss
    tile_h, tile_w = input_size
    suggested = list(tile_grid_size(sizes, input_size))
    tiles = (suggested[0] // tile_h) * (suggested[1] // tile_w)
    return (
        f"The images are typically {round(height)} x {round(width)} (of {len(sizes)}); UniAS resizes them to "
        f"{work_h} x {work_w}: the height shrinks {shrink_h:.1f}x and the width {shrink_w:.1f}x (aspect ratio "
        f"{width / height:.2f} -> {work_w / work_h:.2f}), so defects a few pixels wide may vanish. To keep the "
        f"detail, set the model's image_size to {suggested} or 'auto' (tiles of input_size {[tile_h, tile_w]}: "
        f"{tiles} per image; add train_tiles to bound a training step's cost), or choose an input_size closer to "
        "the images' shape (README, 'High-resolution and non-square images')."
    )
