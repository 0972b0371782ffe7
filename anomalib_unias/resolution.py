"""The working resolution: the size images are worked at and the tiles it is cut into, decided here.

:class:`WorkingResolution` is the record of UniAS's ``image_size``, ``tile_stride``, ``train_tiles`` and
``train_tile_positions``: checked once where it is made (tiles of ``input_size`` must cover the working size
exactly), ``"auto"`` kept as a state until :meth:`WorkingResolution.resolve` reads the data's image sizes
(:func:`data_image_sizes`, the sample the model and the benchmarks read alike).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from PIL import Image

from .architecture import QUERY_STRIDE
from .errors import UniASArgumentError, refuse

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
SIZE_SAMPLE = 2000
"""Images per split whose size is read (headers only) to resolve ``"auto"`` and check the resize."""


MAX_TRAIN_TILES = 256
"""Most random training tiles per image per step: a step holds ``train_batch_size x train_tiles`` tiles."""
TrainTilePositions = Literal["anywhere", "grid"]
"""Where ``train_tiles`` random training tiles are cut: at any position, or only at the test grid's positions."""


def _grid_edge(steps: int, tile: int, stride: int) -> int:
    """The edge that one tile of ``tile`` and ``steps`` more at ``stride`` cover exactly (at least one tile)."""
    return tile + max(0, steps) * stride


def _nearest_covered(edge: int, tile: int, stride: int) -> list[int]:
    """The edge lengths just below and above ``edge`` that tiles of ``tile`` at ``stride`` cover exactly."""
    below = _grid_edge((edge - tile) // stride, tile, stride)
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


def _check_train_tile_positions(train_tile_positions: object) -> None:
    """``train_tile_positions`` is one of :data:`TrainTilePositions`."""
    if train_tile_positions not in get_args(TrainTilePositions):
        refuse(
            "train_tile_positions",
            train_tile_positions,
            f"must be one of {list(get_args(TrainTilePositions))}",
            "'anywhere'",
        )


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
    """:func:`_check_tiling` for ``image_size="auto"``: what can be checked before the data is seen."""
    if image_size != "auto":
        refuse("image_size", image_size, "must be [height, width], 'auto' or null", "'auto'")
    _check_train_tiles(train_tiles)
    stride = tile if tile_stride is None else tuple(int(s) for s in tile_stride)
    if len(stride) != 2:
        refuse("tile_stride", tile_stride, "must be [height, width]", f"{list(tile)} (non-overlapping tiles)")
    _check_stride_range(stride, tile)
    return (tile[0], tile[1]), (stride[0], stride[1])


def _check_tiling(
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
    ``image_size="auto"`` is resolved from the data later (:func:`auto_image_size` puts it on the tile
    grid); here only the stride and ``train_tiles`` are checked, and ``input_size`` is returned as the image
    size until then.

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
    return _grid_edge(round((edge - tile) / stride), tile, stride)


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
        UniASArgumentError: ``sizes`` is empty (no image to read the size from).
    """
    if not sizes:
        msg = "UniAS image_size='auto' reads the data's image sizes, but the data module has no images."
        raise UniASArgumentError(msg)
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
        UniASArgumentError: ``sizes`` is empty (no image to read the size from).
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
        UniASArgumentError: ``sizes`` is empty (no image to read the size from).
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


def data_image_sizes(datamodule: Any) -> tuple[list[str], list[tuple[int, int]]]:
    """The paths and ``(height, width)`` of the first :data:`SIZE_SAMPLE` images of each set-up split (headers only).

    The training and test splits of an anomalib data module (those that are set up); what the model resolves
    ``"auto"`` from, and what the benchmarks resolve it from.
    """
    paths = [
        path
        for split in ("train_data", "test_data")
        if (samples := getattr(getattr(datamodule, split, None), "samples", None)) is not None
        for path in samples.image_path[:SIZE_SAMPLE]
    ]
    return paths, image_sizes(paths)


@dataclass(frozen=True)
class WorkingResolution:
    """The size images are resized to and the ``input_size`` tiles it is cut into; checked when made (:meth:`of`).

    Attributes:
        input_size: The model input ``(H, W)``: the tile, when the working size is larger.
        image_size: The working size ``(H, W)``; ``None`` while ``"auto"`` waits for the data (:meth:`resolve`).
        tile_stride: The step ``(H, W)`` between tiles.
        train_tiles: Random training tiles per image per step; ``None`` = every grid tile.
        train_tile_positions: Where the random training tiles are cut: ``"anywhere"`` in the image, or
            ``"grid"``: the tiles test and predict cut (:meth:`~anomalib_unias.tiling.TileGrid.sample`).
    """

    input_size: tuple[int, int]
    image_size: tuple[int, int] | None
    tile_stride: tuple[int, int]
    train_tiles: int | None = None
    train_tile_positions: TrainTilePositions = "anywhere"

    @classmethod
    def of(
        cls,
        *,
        input_size: Sequence[int],
        image_size: Sequence[int] | str | None = None,
        tile_stride: Sequence[int] | None = None,
        train_tiles: int | None = None,
        train_tile_positions: TrainTilePositions = "anywhere",
    ) -> WorkingResolution:
        """The record of UniAS's arguments (``image_size`` ``None`` = ``input_size``, or ``"auto"``), checked.

        Raises:
            UniASArgumentError: naming the argument, the values and values that work (:func:`_check_tiling`).
        """
        image, stride = _check_tiling(
            input_size=input_size, image_size=image_size, tile_stride=tile_stride, train_tiles=train_tiles
        )
        _check_train_tile_positions(train_tile_positions)
        tile = (int(input_size[0]), int(input_size[1]))
        return cls(tile, None if image_size == "auto" else image, stride, train_tiles, train_tile_positions)

    @property
    def auto(self) -> bool:
        """Whether the working size waits for the data (``image_size="auto"``)."""
        return self.image_size is None

    @property
    def size(self) -> tuple[int, int]:
        """What images are resized to now: the working size, or ``input_size`` until ``"auto"`` is resolved."""
        return self.image_size or self.input_size

    @property
    def tiled(self) -> bool:
        """Whether images are cut into tiles (the working size is larger than ``input_size``)."""
        return self.size != self.input_size

    def resolve(self, sizes: Sequence[tuple[int, int]]) -> WorkingResolution:
        """The record with ``"auto"`` resolved for images of ``sizes`` (:func:`auto_tiling`); itself if not auto.

        Raises:
            UniASArgumentError: ``"auto"`` and ``sizes`` is empty.
        """
        if not self.auto:
            return self
        image_size, train_tiles = auto_tiling(sizes, self.input_size, self.tile_stride, self.train_tiles)
        return WorkingResolution.of(
            input_size=self.input_size,
            image_size=image_size,
            tile_stride=self.tile_stride,
            train_tiles=train_tiles,
            train_tile_positions=self.train_tile_positions,
        )

    def with_stride(self, tile_stride: Sequence[int]) -> WorkingResolution:
        """The same working size cut at ``tile_stride`` (e.g. anomalib's ``TilerConfigurationCallback``'s), checked."""
        return WorkingResolution.of(
            input_size=self.input_size,
            image_size="auto" if self.auto else self.image_size,
            tile_stride=tile_stride,
            train_tiles=self.train_tiles,
            train_tile_positions=self.train_tile_positions,
        )

    def describe(self, sizes: Sequence[tuple[int, int]]) -> str:
        """What ``"auto"`` resolved to for images of ``sizes``, for the log."""
        height, width = typical_size(sizes)
        if not self.tiled:
            shrink = max(height / self.size[0], width / self.size[1])
            target = self.size[1] / self.size[0]
            aspect = max((width / height) / target, target / (width / height))
            return (
                f"UniAS image_size 'auto': the images are typically {round(height)} x {round(width)}; resizing them to "
                f"input_size {list(self.size)} (at most {shrink:.1f}x smaller per axis, aspect ratio changed "
                f"{aspect:.2f}x) keeps the detail, so no tiling."
            )
        tiles = (self.size[0] // self.input_size[0]) * (self.size[1] // self.input_size[1])
        count = tiles if self.tile_stride == self.input_size else "overlapping"
        return (
            f"UniAS image_size 'auto': the images are typically {round(height)} x {round(width)}; working resolution "
            f"{list(self.size)} ({count} tiles of {list(self.input_size)})."
        )
