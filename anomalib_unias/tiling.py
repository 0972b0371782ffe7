"""Tiles for images larger than UniAS's input: a tile grid cut and blended by one gather each, random training tiles.

UniAS's head is built for one input size: its query grid, neighbour masks and channel-attention width
are ``input_size / 16`` (docs/design.md §4).  For high-resolution and non-square images the
pre-processor resizes to a working resolution ``image_size`` and the torch model cuts every image into
tiles of ``input_size`` (:class:`TileGrid`): all tiles of a batch run through the backbone and head as one
batch, and the per-tile maps are put back into the full map, overlaps weighted by a pyramid window.  The
tiles are anomalib's (:class:`~anomalib.data.utils.tiler.Tiler`: the same positions and order), but cut and
blended by one gather each instead of a Python loop over the tiles, so an exported graph does not grow with
the tile count.  anomalib's ``TilerConfigurationCallback`` sets a tiler too; :func:`check_tiler` refuses one
that does not fit the model, and the model tiles with a :class:`TileGrid` of its size and stride.

Training sees every grid tile as a sample, or, with ``train_tiles=k``, ``k`` tiles per image cut at
random positions (:func:`random_tiles`) or drawn from the grid's tiles (:meth:`TileGrid.sample`): a step
then costs ``k`` tiles whatever the image size, while the model still sees the image at the working
resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from anomalib.data.utils.tiler import Tiler
from torch import nn

from .errors import UniASArgumentError


def check_tiler(tiler: Tiler, input_size: Sequence[int]) -> tuple[int, int]:
    """Refuse a tiler whose tiles a UniAS model built for ``input_size`` tiles cannot use; return its stride.

    Whether its tiles cover the working size is the :class:`~anomalib_unias.resolution.WorkingResolution`'s check.

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
            "the image border. Use 0, and overlapping tiles (a stride smaller than the tile) to blend tile borders."
        )
        raise UniASArgumentError(msg)
    return tiler.stride_h, tiler.stride_w


def pyramid_window(tile_size: Sequence[int]) -> torch.Tensor:
    """Weights (h, w) of a tile's pixels: the product over axes of the distance to the tile's border, plus 1."""
    tile_h, tile_w = tile_size
    rows = torch.arange(tile_h)
    cols = torch.arange(tile_w)
    weight_h = torch.minimum(rows + 1, tile_h - rows).float()
    weight_w = torch.minimum(cols + 1, tile_w - cols).float()
    return weight_h[:, None] * weight_w[None, :]


Blend = Literal["pyramid", "uniform"]
"""How overlapping tiles' maps are combined: weighted by :func:`pyramid_window` (UniAS) or averaged (anomalib)."""


class TileGrid(nn.Module):
    """Cut images of ``image_size`` into tiles of ``tile_size`` at ``stride`` and blend the tiles' maps back.

    The tiles and their order are those of anomalib's ``Tiler.tile`` (row-major positions, the tiles of one image
    after each other), for tiles that cover the image exactly.  Both directions are one gather each, with index
    tensors made once here (non-persistent buffers: not in the state dict), so eager runs and exported graphs
    cost the same whatever the number of tiles.  Each pixel of the blended map is the weighted mean of the values
    its tiles give it (at most ``ceil(tile / stride)`` tiles per axis), weighted by :func:`pyramid_window`
    (``blend="pyramid"``) or equally (``"uniform"``: anomalib's ``untile``).

    Args:
        image_size: ``(H, W)`` of the images.
        tile_size: ``(h, w)`` of a tile.
        stride: ``(H, W)`` step between tiles; the tiles must cover the image exactly.
        blend: ``"pyramid"`` (UniAS) or ``"uniform"``.
    """

    def __init__(
        self, image_size: Sequence[int], tile_size: Sequence[int], stride: Sequence[int], blend: Blend = "pyramid"
    ) -> None:
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.tile_size = (int(tile_size[0]), int(tile_size[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        (height, width), (tile_h, tile_w), (stride_h, stride_w) = self.image_size, self.tile_size, self.stride
        tops = torch.arange(0, height - tile_h + 1, stride_h)
        lefts = torch.arange(0, width - tile_w + 1, stride_w)
        if tops[-1] + tile_h != height or lefts[-1] + tile_w != width:
            msg = f"tiles of {list(self.tile_size)} at stride {list(self.stride)} do not cover {list(self.image_size)}"
            raise UniASArgumentError(msg)
        self.count = len(tops) * len(lefts)
        rows = (tops[:, None] + torch.arange(tile_h)[None, :])[:, None, :, None]  # (nh, 1, h, 1)
        cols = (lefts[:, None] + torch.arange(tile_w)[None, :])[None, :, None, :]  # (1, nw, 1, w)
        pixel = (rows * width + cols).reshape(-1)  # image pixel of every tile pixel, tiles in anomalib's order
        self.register_buffer("tile_index", pixel, persistent=False)
        window = pyramid_window(self.tile_size) if blend == "pyramid" else torch.ones(self.tile_size)
        weight = window.reshape(-1).repeat(self.count).double()  # normalised in float64, kept in float32
        # Group the tile pixels by the image pixel they fall on: the j-th tile over pixel p sits in slot j.
        order = torch.argsort(pixel, stable=True)
        counts = torch.bincount(pixel, minlength=height * width)
        if not counts.all():
            msg = f"tiles of {list(self.tile_size)} at stride {list(self.stride)} leave pixels of the image uncovered"
            raise UniASArgumentError(msg)
        slots = int(counts.max())
        slot = torch.arange(len(pixel)) - (torch.cumsum(counts, 0) - counts)[pixel[order]]
        contributors = torch.zeros(slots, height * width, dtype=torch.long)
        contributor_weights = torch.zeros(slots, height * width, dtype=weight.dtype)
        contributors[slot, pixel[order]] = order
        contributor_weights[slot, pixel[order]] = weight[order]
        # A pixel under fewer tiles fills its slots with its tiles again (each share of the weight cut by the number
        # of its copies), never with a zero-weight stand-in: an infinite map value (a NaN input) stays infinite.
        copy = torch.arange(slots)[:, None] % counts[None, :]
        copies = (slots - copy + counts - 1) // counts
        blend_weight = contributor_weights.gather(0, copy) / copies
        self.register_buffer("blend_index", contributors.gather(0, copy), persistent=False)
        blend_weight = (blend_weight / blend_weight.sum(0, keepdim=True)).float()
        self.register_buffer("blend_weight", blend_weight, persistent=False)

    def tile(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, C, H, W) -> tiles (B * count, C, h, w), the tiles of one image after each other."""
        batch, channels = images.shape[:2]
        tiles = images.flatten(2).index_select(2, self.tile_index)  # (B, C, count * h * w)
        tiles = tiles.view(batch, channels, self.count, *self.tile_size).transpose(1, 2)
        return tiles.reshape(-1, channels, *self.tile_size)

    def sample(self, images: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` of the grid's tiles per image, drawn at random: (B * count, C, h, w), as :meth:`tile` orders.

        Each image's tiles are a random permutation of the grid's (repeated when ``count`` exceeds the grid),
        from torch's default generator (seeded runs repeat), so training sees the positions test cuts.
        """
        batch, channels = images.shape[:2]
        rounds = -(-count // self.count)
        order = torch.cat([torch.rand(batch, self.count).argsort(dim=1) for _ in range(rounds)], dim=1)[:, :count]
        pixels = self.tile_index.view(self.count, -1)[order.to(self.tile_index.device)]  # (B, count, h * w)
        tiles = images.flatten(2).gather(2, pixels.flatten(1)[:, None, :].expand(-1, channels, -1))
        tiles = tiles.view(batch, channels, count, *self.tile_size).transpose(1, 2)
        return tiles.reshape(-1, channels, *self.tile_size)

    def untile(self, tile_maps: torch.Tensor) -> torch.Tensor:
        """Tiles' maps (B * count, C, h, w) -> the blended map (B, C, H, W)."""
        channels = tile_maps.shape[1]
        values = tile_maps.view(-1, self.count, channels, *self.tile_size).transpose(1, 2).flatten(2)
        gathered = values.index_select(2, self.blend_index.reshape(-1)).unflatten(2, self.blend_index.shape)
        return (gathered * self.blend_weight).sum(dim=2).unflatten(2, self.image_size)


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


__all__ = ["Blend", "TileGrid", "check_tiler", "pyramid_window", "random_tiles"]
