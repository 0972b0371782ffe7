"""The UniAS architecture record: every setting that builds the head, its loss and its map, checked once.

:class:`Architecture` holds the input size, the widths and depths, the attention neighbourhood, the
training-time feature jitter, the loss (weight, cosine sign, hard mining) and the map fusion (paper
values by default, docs/design.md §1-6).  Its checks run when a record is made, so every module built
from one (``UniASModel``, ``UniASHead``, the components) can rely on it; the CLI makes one to refuse a bad
command line before anything is built.  Fields marked :data:`SHAPES_WEIGHTS` decide the shape or the
meaning of the trained weights: a checkpoint's values of those win over a command line's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .errors import refuse
from .normal_maps import NORMAL_READINGS

MapFusion = Literal["product", "mean", "auto"]
"""How the level maps are fused: the paper's ``"product"``, the ``"mean"``, or ``"auto"`` (chosen on validation)."""

QUERY_STRIDE = 16
"""Backbone stride of the query grid: the grid is ``input_size / 16``."""
LEVEL_STRIDES = (16, 8, 4, 2)
"""Backbone stride of each level, coarse to fine (level 0 = stride 16)."""
GROUP_NORM_GROUPS = 32
"""GroupNorm groups of the pixel decoder's FPN convs (paper: 32)."""
SHAPES_WEIGHTS = {"shapes_weights": True}
"""Field metadata: the trained weights only fit this field's value (see :meth:`Architecture.weight_fields`)."""


@dataclass(frozen=True)
class Architecture:
    """The settings that build a UniAS network (paper values by default).

    Args:
        input_size: Model input (H, W), multiples of 16 (paper: 224 x 224); the query grid is input_size / 16.
            With tiling, the tile.
        pixel_dim: Pixel-decoder width (paper: 256).
        hidden_dim: Query width (paper: 256); equal to ``pixel_dim``.
        num_heads: Attention heads everywhere (paper: 4).
        ffn_dim: FFN width everywhere (paper: 2048).
        num_encoder_layers: Pixel-decoder transformer encoder depth (paper: 3).
        neighbour_size: Side of the neighbourhood each query may not attend to (paper: 7).
        levels: Backbone strides of the levels reconstructed, coarsest first (paper: 16, 8, 4, 2).  Fewer levels
            (``(16, 8)``: the two coarse ones) leave out the finest, which cost most of the head's compute: the
            same training time at twice the resolution.  The reference configures its tapped levels too.  Not
            in the paper's recipe.
        dropout: Transformer dropout (paper: 0.1).
        jitter_scale: Feature-jitter scale (paper: 20).
        jitter_prob: Feature-jitter probability per level (paper: 0.5).
        loss_weight: Reconstruction loss weight (paper: 10 on MVTec AD, 1 on VisA).
        legacy_cos_sign: Add ``+cos`` to the loss as the reference code does, instead of the paper's cosine
            distance ``1 - cos``.
        hard_mining: ``None`` = the paper's loss; a share ``p`` (Dinomaly: 0.9) = Dinomaly's loose loss with
            hard mining (:mod:`anomalib_unias.loss`).  Not in the paper.
        hard_mining_warmup: Training steps over which the hard-mining share ramps up (Dinomaly: 1000).
        map_fusion: ``"product"`` (paper) or ``"mean"`` of the level maps (:mod:`anomalib_unias.anomaly_map`);
            ``"auto"``: the fusion and levels with the best pixel AP on the validation split
            (:mod:`anomalib_unias.fusion_selection`; the paper's product until then).  Not in the paper.
        map_strides: Backbone strides of the levels fused into the map, e.g. ``(16, 8)``; ``None`` = all four
            (paper).  Not in the paper.
        map_normal_readings: How ``"auto"`` also reads each candidate map against the category's normal maps
            (:mod:`anomalib_unias.normal_maps`): ``"z-score"``, ``"ratio"`` (divided by the normal mean), both, or
            none (``()``: the maps as they are only).  Not in the paper.

    Raises:
        UniASArgumentError: naming the first field that cannot work, the rule and a value that works.
    """

    input_size: tuple[int, int] = field(default=(224, 224), metadata=SHAPES_WEIGHTS)
    pixel_dim: int = field(default=256, metadata=SHAPES_WEIGHTS)
    hidden_dim: int = field(default=256, metadata=SHAPES_WEIGHTS)
    num_heads: int = field(default=4, metadata=SHAPES_WEIGHTS)
    ffn_dim: int = field(default=2048, metadata=SHAPES_WEIGHTS)
    num_encoder_layers: int = field(default=3, metadata=SHAPES_WEIGHTS)
    neighbour_size: int = field(default=7, metadata=SHAPES_WEIGHTS)
    levels: tuple[int, ...] = field(default=LEVEL_STRIDES, metadata=SHAPES_WEIGHTS)
    dropout: float = 0.1
    jitter_scale: float = 20.0
    jitter_prob: float = 0.5
    loss_weight: float = 10.0
    legacy_cos_sign: bool = False
    hard_mining: float | None = None
    hard_mining_warmup: int = 1000
    map_fusion: MapFusion = "product"
    map_strides: tuple[int, ...] | None = None
    map_normal_readings: tuple[str, ...] = ("z-score",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", self._checked_input_size())
        self._check_widths()
        problem = _grid_problem(*self.input_size, self.num_heads, self.neighbour_size)
        if problem:
            height, width = self.input_size
            works = _working_sizes(height, width, self.num_heads, self.neighbour_size)
            side = max(height, width) // QUERY_STRIDE
            largest = side - 1 if side % 2 == 0 else side - 2
            if "neighbourhood" in problem and largest >= 1:
                works += f"; or keep the size with a neighbour_size of at most {largest}"
            refuse("input_size", [height, width], problem, works)
        self._check_training_settings()
        self._check_levels()
        self._check_map()

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> Architecture:
        """The record of the fields found in ``arguments`` (e.g. a constructor's ``locals()``); defaults elsewhere."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})

    @classmethod
    def weight_fields(cls) -> tuple[str, ...]:
        """The fields the trained weights only fit (shapes, heads, mask): a checkpoint's values of them win."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("shapes_weights"))

    @property
    def fuses_automatically(self) -> bool:
        """Whether the map's fusion is chosen on the validation data (``map_fusion: auto``)."""
        return self.map_fusion == "auto"

    @property
    def query_grid(self) -> tuple[int, int]:
        """The query grid (rows, columns) = ``input_size / 16`` (paper: 14 x 14)."""
        return self.input_size[0] // QUERY_STRIDE, self.input_size[1] // QUERY_STRIDE

    def _checked_input_size(self) -> tuple[int, int]:
        size = self.input_size
        if isinstance(size, int | str) or len(size) != 2:
            refuse("input_size", size, "must be [height, width]", "[224, 224] (paper)")
        return int(size[0]), int(size[1])

    def _check_widths(self) -> None:
        if self.num_heads < 1:
            refuse("num_heads", self.num_heads, "must be at least 1", "4 (paper)")
        if self.neighbour_size < 1 or self.neighbour_size % 2 == 0:
            refuse(
                "neighbour_size",
                self.neighbour_size,
                "must be a positive odd number (the blocked window is centred on each query)",
                "7 (paper)",
            )
        if self.pixel_dim < GROUP_NORM_GROUPS or self.pixel_dim % GROUP_NORM_GROUPS:
            nearest = max(GROUP_NORM_GROUPS, round(self.pixel_dim / GROUP_NORM_GROUPS) * GROUP_NORM_GROUPS)
            refuse(
                "pixel_dim",
                self.pixel_dim,
                "must be a positive multiple of 32 (GroupNorm with 32 groups)",
                f"{nearest} (paper: 256)",
            )
        if self.hidden_dim != self.pixel_dim:
            refuse(
                "hidden_dim",
                self.hidden_dim,
                f"must equal pixel_dim={self.pixel_dim} (the queries are built from the pixel decoder's coarsest map)",
                f"{self.pixel_dim} (paper: 256 for both)",
            )
        if self.pixel_dim % self.num_heads or (self.pixel_dim // self.num_heads) % 2:
            refuse(
                "num_heads",
                self.num_heads,
                f"must divide pixel_dim={self.pixel_dim} into heads of even width",
                "4 (paper)" if self.pixel_dim % 8 == 0 else "1",
            )
        if self.ffn_dim < 1:
            refuse("ffn_dim", self.ffn_dim, "must be at least 1", "2048 (paper)")
        if self.num_encoder_layers < 0:
            refuse("num_encoder_layers", self.num_encoder_layers, "must be 0 or more", "3 (paper)")

    def _check_training_settings(self) -> None:
        if not 0 <= self.dropout < 1:
            refuse("dropout", self.dropout, "must be in [0, 1)", "0.1 (paper)")
        if not (math.isfinite(self.jitter_scale) and self.jitter_scale >= 0):
            rule = "must be a finite number >= 0 (0 = no feature jitter)"
            refuse("jitter_scale", self.jitter_scale, rule, "20 (paper)")
        if not 0 <= self.jitter_prob <= 1:
            refuse("jitter_prob", self.jitter_prob, "is a probability and must be in [0, 1]", "0.5 (paper)")
        if not (math.isfinite(self.loss_weight) and self.loss_weight > 0):
            refuse("loss_weight", self.loss_weight, "must be a finite number > 0", "10 (paper, MVTec AD) or 1 (VisA)")
        if self.hard_mining is not None and not 0 < self.hard_mining < 1:
            rule = "is a share of pixels and must be in (0, 1), or null (paper loss)"
            refuse("hard_mining", self.hard_mining, rule, "0.9")
        if self.hard_mining_warmup < 0:
            refuse("hard_mining_warmup", self.hard_mining_warmup, "must be 0 or more training steps", "1000")

    def _check_levels(self) -> None:
        levels = tuple(int(s) for s in self.levels) if not isinstance(self.levels, int | str) else ()
        runs = [LEVEL_STRIDES[:count] for count in range(1, len(LEVEL_STRIDES) + 1)]
        if levels not in runs:
            refuse(
                "levels",
                list(self.levels) if not isinstance(self.levels, int | str) else self.levels,
                "must be the coarsest levels, coarsest first: the decoder reconstructs coarse to fine from the "
                "stride-16 query grid",
                ", ".join(str(list(run)) for run in reversed(runs)) + " (paper: all four)",
            )
        object.__setattr__(self, "levels", levels)

    def _check_map(self) -> None:
        if self.map_fusion not in ("product", "mean", "auto"):
            refuse("map_fusion", self.map_fusion, "must be 'product' (paper), 'mean' or 'auto'", "'product'")
        readings = self.map_normal_readings
        if (
            isinstance(readings, str)
            or not set(readings) <= set(NORMAL_READINGS)
            or len(set(readings)) != len(readings)
        ):
            shown = readings if isinstance(readings, str) else list(readings)
            refuse("map_normal_readings", shown, f"must be distinct values of {list(NORMAL_READINGS)}", "['z-score']")
        object.__setattr__(self, "map_normal_readings", tuple(readings))
        if self.map_strides is None:
            return
        if self.map_fusion == "auto":
            rule = "must be null with map_fusion='auto', which chooses the levels too"
            refuse("map_strides", list(self.map_strides), rule, "null, or a fixed map_fusion ('product' or 'mean')")
        strides = [int(s) for s in self.map_strides]
        if not strides or len(set(strides)) != len(strides) or not set(strides) <= set(self.levels):
            refuse(
                "map_strides",
                list(self.map_strides),
                f"must be distinct strides of the reconstructed levels {list(self.levels)}, at least one",
                "null (all of them, paper) or [16, 8]",
            )
        object.__setattr__(self, "map_strides", tuple(strides))


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


def _working_sizes(height: int, width: int, num_heads: int, neighbour_size: int) -> str:
    """The valid input sizes closest to (height, width), for error messages."""
    candidates = []
    for h in range(QUERY_STRIDE, max(height, QUERY_STRIDE) * 2 + QUERY_STRIDE, QUERY_STRIDE):
        for w in range(QUERY_STRIDE, max(width, QUERY_STRIDE) * 2 + QUERY_STRIDE, QUERY_STRIDE):
            if _grid_problem(h, w, num_heads, neighbour_size) is None:
                candidates.append((abs(h - height) + abs(w - width), h, w))
    best = sorted(candidates)[:3]
    return ", ".join(f"[{h}, {w}]" for _, h, w in best) or "[224, 224] (paper)"


PAPER_ARCHITECTURE = Architecture()
"""The paper's architecture: 224 x 224, widths 256, FFN 2048, 3 encoder layers, 4 heads, 7 x 7 neighbourhood."""
