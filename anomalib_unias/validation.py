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


def _covering(edge: int, tile: int, stride: int) -> int:
    """The edge length closest to ``edge`` that tiles of ``tile`` at ``stride`` cover exactly (>= tile)."""
    return tile + max(0, round((edge - tile) / stride)) * stride


def _covering_strides(edge: int, tile: int) -> list[int]:
    """Strides <= ``tile``, multiples of 16, whose tiles cover an edge of ``edge`` exactly, largest first."""
    return [s for s in range(tile, 0, -QUERY_STRIDE) if (edge - tile) % s == 0]


def _check_auto_tiling(
    tile: tuple[int, ...], image_size: str, tile_stride: Sequence[int] | None, train_tiles: int | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """:func:`check_tiling` for ``image_size="auto"``: what can be checked before the data is seen."""
    if image_size != "auto":
        refuse("image_size", image_size, "must be [height, width], 'auto' or null", "'auto'")
    if tile_stride is not None and not all(0 < int(s) <= t for s, t in zip(tile_stride, tile, strict=True)):
        refuse("tile_stride", list(tile_stride), f"each stride must be in [1, tile] = [1, {list(tile)}]", "null")
    if train_tiles is not None and train_tiles < 1:
        refuse("train_tiles", train_tiles, "must be at least 1 (random tiles per image per step) or null", "4")
    stride = tile if tile_stride is None else tuple(int(s) for s in tile_stride)
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
    for axis, name in enumerate(("height", "width")):
        edge, side, step = image[axis], tile[axis], stride[axis]
        if image[axis] == tile[axis]:
            continue  # one tile along this axis: the stride is never used
        if not 0 < step <= side:
            refuse(
                "tile_stride",
                list(stride),
                f"the {name} stride {step} must be in [1, {side}] (at most the tile's {name}: larger strides "
                "skip pixels)",
                f"{side} (non-overlapping) or {side // 2} (half-overlapping), if they cover the image",
            )
        if (edge - side) % step:
            strides = _covering_strides(edge, side)
            refuse(
                "tile_stride",
                list(stride),
                f"tiles of {name} {side} at stride {step} do not cover the image {name} {edge} exactly "
                f"({(edge - side) % step} pixels would be padded)",
                f"image_size {name} {_covering(edge, side, step)} with this stride"
                + (f", or a {name} stride of {', '.join(map(str, strides[:3]))}" if strides else ""),
            )
    if train_tiles is not None and train_tiles < 1:
        refuse("train_tiles", train_tiles, "must be at least 1 (random tiles per image per step) or null", "4")
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
