"""Tiles for images larger than UniAS's input: anomalib's ``Tiler``, checked for UniAS, and random training tiles.

UniAS's head is built for one input size: its query grid, neighbour masks and channel-attention width
are ``input_size / 16`` (docs/design.md §4).  For high-resolution and non-square images the
pre-processor resizes to a working resolution ``image_size`` and the torch model cuts every image into
tiles of ``input_size`` with anomalib's :class:`~anomalib.data.utils.tiler.Tiler`: all tiles of a batch
run through the backbone and head as one batch, and the per-tile maps are untiled into the full map
(overlaps weighted by a pyramid window, :func:`blend_untile`).  anomalib's ``TilerConfigurationCallback``
sets the same tiler; :func:`check_tiler` refuses one that does not fit the model.

Training sees every grid tile as a sample, or, with ``train_tiles=k``, ``k`` tiles per image cut at
random positions (:func:`random_tiles`): a step then costs ``k`` tiles whatever the image size, while
the model still sees the image at the working resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from anomalib.data.utils.tiler import Tiler

from .errors import UniASArgumentError
from .validation import check_tiling


def make_tiler(tile_size: Sequence[int], stride: Sequence[int]) -> Tiler:
    """Anomalib's ``Tiler`` for tiles of ``tile_size`` at ``stride`` (tiles that cover the image exactly)."""
    return Tiler(tile_size=tuple(tile_size), stride=tuple(stride))


def check_tiler(tiler: Tiler, input_size: Sequence[int], image_size: Sequence[int]) -> tuple[int, int]:
    """Refuse a tiler that does not fit a UniAS model built for ``input_size`` tiles of ``image_size`` images.

    Returns:
        The tiler's stride as ``(height, width)``.

    Raises:
        UniASArgumentError: naming the setting, the values and the fix.
    """
    tile = (tiler.tile_size_h, tiler.tile_size_w)
    if tile != tuple(input_size):
        msg = (
            f"Tiling tile_size={list(tile)} differs from UniAS input_size={list(input_size)}: UniAS's head is built "
            f"for one tile. Set the model's input_size to the tile size {list(tile)} and its image_size to the "
            "working resolution (e.g. the images' size), or give the tiler tile_size="
            f"{list(input_size)}."
        )
        raise UniASArgumentError(msg)
    if tiler.remove_border_count:
        msg = (
            f"Tiling remove_border_count={tiler.remove_border_count}: UniAS's untiled map would have no value near "
            "the image border. Use 0, and overlapping tiles (a stride smaller than the tile) to average tile borders."
        )
        raise UniASArgumentError(msg)
    stride = (tiler.stride_h, tiler.stride_w)
    check_tiling(input_size=input_size, image_size=image_size, tile_stride=stride, train_tiles=None)
    return stride


def pyramid_window(tile_size: Sequence[int]) -> torch.Tensor:
    """Weights (h, w) of a tile's pixels: the product over axes of the distance to the tile's border, plus 1."""
    tile_h, tile_w = tile_size
    rows = torch.arange(tile_h)
    cols = torch.arange(tile_w)
    weight_h = torch.minimum(rows + 1, tile_h - rows).float()
    weight_w = torch.minimum(cols + 1, tile_w - cols).float()
    return weight_h[:, None] * weight_w[None, :]


def blend_untile(tiler: Tiler, tile_maps: torch.Tensor) -> torch.Tensor:
    """Untile ``tile_maps`` (B * tiles, 1, h, w, from the tiler's last ``tile``), overlaps weighted by the window.

    The window is :func:`pyramid_window`.  Where tiles do not overlap this is anomalib's untiling (up to rounding);
    where they do, each pixel is the window-weighted mean of its tiles' values.
    """
    window = pyramid_window(tile_maps.shape[-2:]).to(tile_maps)
    weights = window.expand_as(tile_maps)
    return tiler.untile(tile_maps * window) / tiler.untile(weights)


def random_tiles(images: torch.Tensor, tile_size: Sequence[int], count: int) -> torch.Tensor:
    """``count`` tiles of ``tile_size`` per image, cut at uniformly random positions: (B * count, C, h, w).

    Positions are drawn from torch's default generator (seeded runs repeat); tiles of one image follow
    each other, as in anomalib's ``Tiler.tile``.
    """
    batch, _, height, width = images.shape
    tile_h, tile_w = tile_size
    tops = torch.randint(height - tile_h + 1, (batch, count)).tolist()
    lefts = torch.randint(width - tile_w + 1, (batch, count)).tolist()
    return torch.stack(
        [
            images[b, :, top : top + tile_h, left : left + tile_w]
            for b in range(batch)
            for top, left in zip(tops[b], lefts[b], strict=True)
        ]
    )


__all__ = ["blend_untile", "check_tiler", "make_tiler", "pyramid_window", "random_tiles"]
