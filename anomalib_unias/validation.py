"""The constraints on UniAS's arguments outside the architecture and optimiser records: tiling, statistics.

The architecture's own checks run when an :class:`~anomalib_unias.architecture.Architecture` is made.
Each refusal is a :class:`~anomalib_unias.errors.UniASArgumentError` that names the argument, the value,
the rule and a value that works, so that a bad setting fails at once (and reads first in the CLI's
output) instead of in the first forward pass or after the first epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .architecture import QUERY_STRIDE
from .errors import refuse

MAX_TRAIN_TILES = 256
"""Most random training tiles per image per step: a step holds ``train_batch_size x train_tiles`` tiles."""


def _nearest_covered(edge: int, tile: int, stride: int) -> list[int]:
    """The edge lengths just below and above ``edge`` that tiles of ``tile`` at ``stride`` cover exactly."""
    below = tile + max(0, (edge - tile) // stride) * stride
    return sorted({below, below + stride} - {edge})


def _check_train_tiles(train_tiles: object) -> None:
    """``train_tiles`` is null or a whole number in [1, :data:`MAX_TRAIN_TILES`]."""
    if train_tiles is None:
        return
    if isinstance(train_tiles, bool) or not isinstance(train_tiles, int):
        refuse("train_tiles", train_tiles, "must be a whole number of tiles (or null: every grid tile)", "4")
    if not 1 <= train_tiles <= MAX_TRAIN_TILES:
        rule = (
            f"must be in [1, {MAX_TRAIN_TILES}] random tiles per image per step (a step holds train_batch_size x "
            "train_tiles tiles), or null"
        )
        refuse("train_tiles", train_tiles, rule, "4")


def _check_stride_range(stride: Sequence[int], tile: Sequence[int]) -> None:
    """Every stride in [1, tile], on every axis (also one that is a single tile long)."""
    for axis, name in enumerate(("height", "width")):
        if not 0 < stride[axis] <= tile[axis]:
            refuse(
                "tile_stride",
                list(stride),
                f"the {name} stride {stride[axis]} must be in [1, {tile[axis]}] (at most the tile's {name}: larger "
                "strides skip pixels)",
                f"{tile[axis]} (non-overlapping) or {tile[axis] // 2} (half-overlapping), if they cover the image",
            )


def _covering_strides(edge: int, tile: int) -> list[int]:
    """Strides <= ``tile``, multiples of 16, whose tiles cover an edge of ``edge`` exactly, largest first."""
    return [s for s in range(tile, 0, -QUERY_STRIDE) if (edge - tile) % s == 0]


def _check_auto_tiling(
    tile: tuple[int, ...], image_size: str, tile_stride: Sequence[int] | None, train_tiles: int | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """:func:`check_tiling` for ``image_size="auto"``: what can be checked before the data is seen."""
    if image_size != "auto":
        refuse("image_size", image_size, "must be [height, width], 'auto' or null", "'auto'")
    _check_train_tiles(train_tiles)
    stride = tile if tile_stride is None else tuple(int(s) for s in tile_stride)
    if len(stride) != 2:
        refuse("tile_stride", tile_stride, "must be [height, width]", f"{list(tile)} (non-overlapping tiles)")
    _check_stride_range(stride, tile)
    return (tile[0], tile[1]), (stride[0], stride[1])


def check_tiling(
    *,
    input_size: Sequence[int],
    image_size: Sequence[int] | str | None,
    tile_stride: Sequence[int] | None,
    train_tiles: int | None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check the tiling arguments; return ``(image_size, tile_stride)`` as ``(height, width)`` ints.

    With tiling, ``input_size`` is the tile (the head is built for it) and ``image_size`` the working
    resolution the pre-processor resizes to; tiles of ``input_size`` at ``tile_stride`` must cover it
    exactly (no padded or interpolated border), so every pixel of the map comes from real image content.
    ``image_size="auto"`` is resolved from the data later (:func:`~anomalib_unias.resolution.auto_image_size`
    puts it on the tile grid); here only the stride and ``train_tiles`` are checked, and ``input_size`` is
    returned as the image size until then.

    Raises:
        UniASArgumentError: naming the argument, the values and values that work.
    """
    tile = tuple(int(v) for v in input_size)
    if isinstance(image_size, str):
        return _check_auto_tiling(tile, image_size, tile_stride, train_tiles)
    image = tile if image_size is None else tuple(int(v) for v in image_size)
    if len(image) != 2:
        refuse("image_size", image_size, "must be [height, width]", f"{list(tile)} (= input_size: no tiling)")
    if any(i < t for i, t in zip(image, tile, strict=True)):
        refuse(
            "image_size",
            list(image),
            f"is smaller than the tile input_size={list(tile)} on some axis (the head is built for the tile, "
            "tiles are cut from the image)",
            f"{[max(i, t) for i, t in zip(image, tile, strict=True)]}, or a smaller input_size",
        )
    stride = tile if tile_stride is None else tuple(int(v) for v in tile_stride)
    if len(stride) != 2:
        refuse("tile_stride", tile_stride, "must be [height, width]", f"{list(tile)} (non-overlapping tiles)")
    _check_stride_range(stride, tile)
    _check_train_tiles(train_tiles)
    for axis, name in enumerate(("height", "width")):
        edge, side, step = image[axis], tile[axis], stride[axis]
        if (edge - side) % step == 0:
            continue
        if tile_stride is None:  # the stride is the tile's own: the image size is what is off the grid
            refuse(
                "image_size",
                list(image),
                f"the {name} {edge} is not covered exactly by tiles of input_size {name} {side} "
                f"({(edge - side) % step} pixels would be padded)",
                f"a {name} of {' or '.join(map(str, _nearest_covered(edge, side, step)))}, or 'auto'",
            )
        strides = _covering_strides(edge, side)
        refuse(
            "tile_stride",
            list(stride),
            f"tiles of {name} {side} at stride {step} do not cover the image {name} {edge} exactly "
            f"({(edge - side) % step} pixels would be padded)",
            f"image_size {name} {' or '.join(map(str, _nearest_covered(edge, side, step)))} with this stride"
            + (f", or a {name} stride of {', '.join(map(str, strides[:3]))}" if strides else ""),
        )
    if train_tiles is not None and image == tile:
        refuse(
            "train_tiles",
            train_tiles,
            f"needs tiling: image_size (the working resolution) larger than the tile input_size={list(tile)}",
            "null, or set image_size",
        )
    return (image[0], image[1]), (stride[0], stride[1])


def check_normalization(*, input_mean: Sequence[float] | None, input_std: Sequence[float] | None) -> None:
    """Check the pre-processor's RGB statistics: three finite means and three finite, positive deviations.

    ``None`` (the backbone's own statistics) always passes.

    Raises:
        UniASArgumentError: naming the first argument that cannot work.
    """
    if input_mean is not None and (len(input_mean) != 3 or not all(math.isfinite(v) for v in input_mean)):
        refuse("input_mean", list(input_mean), "must be three finite numbers (R, G, B)", "null (the backbone's own)")
    if input_std is not None and (len(input_std) != 3 or not all(math.isfinite(v) and v > 0 for v in input_std)):
        refuse("input_std", list(input_std), "must be three finite numbers > 0 (R, G, B)", "null (the backbone's own)")
