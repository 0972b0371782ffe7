"""Every constraint UniAS's arguments must meet, checked before anything is built.

Each refusal is a :class:`UniASArgumentError` that names the argument, the value, the rule and a value
that works, so that a bad setting fails at once (and reads first in the CLI's output) instead of in
the first forward pass or after the first epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

QUERY_STRIDE = 16
"""Backbone stride of the query grid: the grid is ``input_size / 16``."""

GROUP_NORM_GROUPS = 32
"""GroupNorm groups of the pixel decoder's FPN convs (paper: 32)."""


class UniASArgumentError(ValueError):
    """An argument value UniAS cannot run with."""


def _fail(name: str, value: object, rule: str, works: str) -> None:
    msg = f"UniAS argument {name}={value!r}: {rule}. A value that works: {works}."
    raise UniASArgumentError(msg)


def _working_sizes(height: int, width: int, num_heads: int, neighbour_size: int) -> str:
    """The valid input sizes closest to (height, width), for error messages."""
    candidates = []
    for h in range(QUERY_STRIDE, max(height, QUERY_STRIDE) * 2 + QUERY_STRIDE, QUERY_STRIDE):
        for w in range(QUERY_STRIDE, max(width, QUERY_STRIDE) * 2 + QUERY_STRIDE, QUERY_STRIDE):
            if _grid_problem(h, w, num_heads, neighbour_size) is None:
                candidates.append((abs(h - height) + abs(w - width), h, w))
    best = sorted(candidates)[:3]
    return ", ".join(f"[{h}, {w}]" for _, h, w in best) or "[224, 224] (paper)"


def _grid_problem(height: int, width: int, num_heads: int, neighbour_size: int) -> str | None:
    """Why an input size cannot work with these heads and neighbourhood, or None."""
    if height <= 0 or width <= 0 or height % QUERY_STRIDE or width % QUERY_STRIDE:
        return "height and width must be positive multiples of 16 (the query grid is input_size / 16)"
    rows, cols = height // QUERY_STRIDE, width // QUERY_STRIDE
    if (rows * cols) % num_heads:
        return (
            f"the {rows}x{cols} = {rows * cols}-cell query grid must be divisible by num_heads={num_heads} "
            "(the channel attention's token width is the number of grid cells)"
        )
    if rows <= neighbour_size and cols <= neighbour_size:
        # The query at the grid's centre would have its whole grid blocked: no key left to attend to.
        return (
            f"with neighbour_size={neighbour_size} a {rows}x{cols} query grid leaves a query with no key "
            "outside its neighbourhood; the grid needs more than neighbour_size cells on at least one side"
        )
    return None


def check_architecture(  # noqa: PLR0912 (one branch per rule)
    *,
    input_size: Sequence[int],
    pixel_dim: int,
    hidden_dim: int,
    num_heads: int,
    ffn_dim: int,
    num_encoder_layers: int,
    neighbour_size: int,
    dropout: float,
    jitter_scale: float,
    jitter_prob: float,
    loss_weight: float,
) -> tuple[int, int]:
    """Check the architecture arguments; return the input size as ``(height, width)`` ints.

    Raises:
        UniASArgumentError: naming the first argument that cannot work.
    """
    if isinstance(input_size, int | str) or len(input_size) != 2:
        _fail("input_size", input_size, "must be [height, width]", "[224, 224] (paper)")
    height, width = (int(v) for v in input_size)
    if num_heads < 1:
        _fail("num_heads", num_heads, "must be at least 1", "4 (paper)")
    if neighbour_size < 1 or neighbour_size % 2 == 0:
        _fail(
            "neighbour_size",
            neighbour_size,
            "must be a positive odd number (the blocked window is centred on each query)",
            "7 (paper)",
        )
    if pixel_dim < GROUP_NORM_GROUPS or pixel_dim % GROUP_NORM_GROUPS:
        _fail(
            "pixel_dim",
            pixel_dim,
            "must be a positive multiple of 32 (GroupNorm with 32 groups)",
            f"{max(GROUP_NORM_GROUPS, round(pixel_dim / GROUP_NORM_GROUPS) * GROUP_NORM_GROUPS)} (paper: 256)",
        )
    if hidden_dim != pixel_dim:
        _fail(
            "hidden_dim",
            hidden_dim,
            f"must equal pixel_dim={pixel_dim} (the queries are built from the pixel decoder's coarsest map)",
            f"{pixel_dim} (paper: 256 for both)",
        )
    if pixel_dim % num_heads or (pixel_dim // num_heads) % 2:
        _fail(
            "num_heads",
            num_heads,
            f"must divide pixel_dim={pixel_dim} into heads of even width",
            "4 (paper)" if pixel_dim % 8 == 0 else "1",
        )
    if ffn_dim < 1:
        _fail("ffn_dim", ffn_dim, "must be at least 1", "2048 (paper)")
    if num_encoder_layers < 0:
        _fail("num_encoder_layers", num_encoder_layers, "must be 0 or more", "3 (paper)")
    problem = _grid_problem(height, width, num_heads, neighbour_size)
    if problem:
        works = _working_sizes(height, width, num_heads, neighbour_size)
        side = max(height, width) // QUERY_STRIDE
        largest = side - 1 if side % 2 == 0 else side - 2
        if "neighbourhood" in problem and largest >= 1:
            works += f"; or keep the size with a neighbour_size of at most {largest}"
        _fail("input_size", [height, width], problem, works)
    if not 0 <= dropout < 1:
        _fail("dropout", dropout, "must be in [0, 1)", "0.1 (paper)")
    if not (math.isfinite(jitter_scale) and jitter_scale >= 0):
        _fail("jitter_scale", jitter_scale, "must be a finite number >= 0 (0 = no feature jitter)", "20 (paper)")
    if not 0 <= jitter_prob <= 1:
        _fail("jitter_prob", jitter_prob, "is a probability and must be in [0, 1]", "0.5 (paper)")
    if not (math.isfinite(loss_weight) and loss_weight > 0):
        _fail("loss_weight", loss_weight, "must be a finite number > 0", "10 (paper, MVTec AD) or 1 (VisA)")
    return height, width


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
        _fail("image_size", image_size, "must be [height, width], 'auto' or null", "'auto'")
    if tile_stride is not None and not all(0 < int(s) <= t for s, t in zip(tile_stride, tile, strict=True)):
        _fail("tile_stride", list(tile_stride), f"each stride must be in [1, tile] = [1, {list(tile)}]", "null")
    if train_tiles is not None and train_tiles < 1:
        _fail("train_tiles", train_tiles, "must be at least 1 (random tiles per image per step) or null", "4")
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
        _fail("image_size", image_size, "must be [height, width]", f"{list(tile)} (= input_size: no tiling)")
    if any(i < t for i, t in zip(image, tile, strict=True)):
        _fail(
            "image_size",
            list(image),
            f"is smaller than the tile input_size={list(tile)} on some axis (the head is built for the tile, "
            "tiles are cut from the image)",
            f"{[max(i, t) for i, t in zip(image, tile, strict=True)]}, or a smaller input_size",
        )
    stride = tile if tile_stride is None else tuple(int(v) for v in tile_stride)
    if len(stride) != 2:
        _fail("tile_stride", tile_stride, "must be [height, width]", f"{list(tile)} (non-overlapping tiles)")
    for axis, name in enumerate(("height", "width")):
        edge, side, step = image[axis], tile[axis], stride[axis]
        if image[axis] == tile[axis]:
            continue  # one tile along this axis: the stride is never used
        if not 0 < step <= side:
            _fail(
                "tile_stride",
                list(stride),
                f"the {name} stride {step} must be in [1, {side}] (at most the tile's {name}: larger strides "
                "skip pixels)",
                f"{side} (non-overlapping) or {side // 2} (half-overlapping), if they cover the image",
            )
        if (edge - side) % step:
            strides = _covering_strides(edge, side)
            _fail(
                "tile_stride",
                list(stride),
                f"tiles of {name} {side} at stride {step} do not cover the image {name} {edge} exactly "
                f"({(edge - side) % step} pixels would be padded)",
                f"image_size {name} {_covering(edge, side, step)} with this stride"
                + (f", or a {name} stride of {', '.join(map(str, strides[:3]))}" if strides else ""),
            )
    if train_tiles is not None and train_tiles < 1:
        _fail("train_tiles", train_tiles, "must be at least 1 (random tiles per image per step) or null", "4")
    if train_tiles is not None and image == tile:
        _fail(
            "train_tiles",
            train_tiles,
            f"needs tiling: image_size (the working resolution) larger than the tile input_size={list(tile)}",
            "null, or set image_size",
        )
    return (image[0], image[1]), (stride[0], stride[1])


LEVEL_STRIDES = (16, 8, 4, 2)
"""Backbone stride of each level, coarse to fine (level 0 = stride 16)."""


def check_map(*, map_fusion: str, map_strides: Sequence[int] | None) -> tuple[int, ...] | None:
    """Check the map-fusion switches; return the fused levels (coarse to fine indices) or ``None`` (all).

    Raises:
        UniASArgumentError: naming the argument, the value and values that work.
    """
    if map_fusion not in ("product", "mean"):
        _fail("map_fusion", map_fusion, "must be 'product' (paper) or 'mean'", "'product'")
    if map_strides is None:
        return None
    strides = [int(s) for s in map_strides]
    if not strides or len(set(strides)) != len(strides) or not set(strides) <= set(LEVEL_STRIDES):
        _fail(
            "map_strides",
            list(map_strides),
            f"must be distinct level strides out of {list(LEVEL_STRIDES)}, at least one",
            "null (all four, paper) or [16, 8]",
        )
    return tuple(sorted(LEVEL_STRIDES.index(s) for s in strides))


def check_normalization(*, input_mean: Sequence[float] | None, input_std: Sequence[float] | None) -> None:
    """Check the pre-processor's RGB statistics: three finite means and three finite, positive deviations.

    ``None`` (the backbone's own statistics) always passes.

    Raises:
        UniASArgumentError: naming the first argument that cannot work.
    """
    if input_mean is not None and (len(input_mean) != 3 or not all(math.isfinite(v) for v in input_mean)):
        _fail("input_mean", list(input_mean), "must be three finite numbers (R, G, B)", "null (the backbone's own)")
    if input_std is not None and (len(input_std) != 3 or not all(math.isfinite(v) and v > 0 for v in input_std)):
        _fail("input_std", list(input_std), "must be three finite numbers > 0 (R, G, B)", "null (the backbone's own)")


def check_recipe(
    *,
    learning_rate: float,
    weight_decay: float,
    lr_schedule: str,
    lr_step_epochs: int,
    lr_gamma: float,
    warmup_fraction: float,
    hard_mining: float | None = None,
    hard_mining_warmup: int = 1000,
) -> None:
    """Check the optimiser, schedule and loss-variant arguments.

    Raises:
        UniASArgumentError: naming the first argument that cannot work.
    """
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        _fail("learning_rate", learning_rate, "must be a finite number > 0", "1e-4 (paper)")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail("weight_decay", weight_decay, "must be a finite number >= 0", "1e-4 (paper)")
    if lr_schedule not in ("step", "cosine"):
        _fail("lr_schedule", lr_schedule, "must be 'step' (paper) or 'cosine'", "'step'")
    if lr_step_epochs < 1:
        _fail("lr_step_epochs", lr_step_epochs, "must be at least 1 epoch", "400 (paper)")
    if not 0 < lr_gamma <= 1:
        _fail("lr_gamma", lr_gamma, "must be in (0, 1]", "0.1 (paper)")
    if not 0 <= warmup_fraction < 1:
        _fail("warmup_fraction", warmup_fraction, "must be in [0, 1)", "0.05")
    if hard_mining is not None and not 0 < hard_mining < 1:
        _fail("hard_mining", hard_mining, "is a share of pixels and must be in (0, 1), or null (paper loss)", "0.9")
    if hard_mining_warmup < 0:
        _fail("hard_mining_warmup", hard_mining_warmup, "must be 0 or more training steps", "1000")
