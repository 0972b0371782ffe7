"""Multi-level anomaly map and image score of UniAS (paper Sec. 3.4, docs/design.md §6).

Per level ``A_l = 1 - cos(R_l, T_l)`` over channels; each map is resized to the finest level's size
(bilinear, align_corners=False) and smoothed with a level-specific Gaussian (kernel 3, 5, 7, 9 with
sigma = kernel / 3, coarse to fine); the maps are multiplied (finest first, as the reference code does)
and the product is upsampled to the input size (bilinear, align_corners=True).  The image score is the
maximum of the map.

Which levels are fused and how is a :class:`Fusion`; the paper's is :data:`PAPER_FUSION`.  Others (not in
the paper, chosen with the ``map_fusion`` / ``map_strides`` switches or from validation data by
``map_fusion: auto``, :mod:`anomalib_unias.fusion_selection`) change only this last step:

* the mean of the level maps instead of their product.  A product multiplies the noise of every level
  into the map; a short training run leaves the fine levels (reconstructed from the coarse query grid)
  noisy, and Dinomaly (Guo et al., CVPR 2025) fuses its levels by the mean;
* only the levels at some backbone strides (e.g. 16 and 8); the others are still reconstructed and
  trained, just not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .architecture import LEVEL_STRIDES
from .components.layers import GaussianBlur2d
from .errors import UniASArgumentError
from .normal_maps import NORMAL_READINGS, NormalReading

FusionKind = Literal["product", "mean"]
"""How the chosen level maps are combined: the paper's ``"product"`` or their ``"mean"``."""


@dataclass(frozen=True)
class Fusion:
    """One way of fusing the level maps: the product or the mean of the levels at ``strides``.

    Args:
        kind: ``"product"`` (paper) or ``"mean"``.  With one level both are that level's smoothed map.
        strides: Backbone strides of the fused levels, coarse to fine (paper: 16, 8, 4, 2).
        against_normal: The fused map read per pixel against the maps of the category's normal images
            (:mod:`anomalib_unias.normal_maps`; the model does that step, after untiling).  Not in the paper.
        normal_reading: How, where ``against_normal``: ``"z-score"`` (``(map - mean) / spread``) or ``"ratio"``
            (``map / mean``).
    """

    kind: FusionKind = "product"
    strides: tuple[int, ...] = LEVEL_STRIDES
    against_normal: bool = False
    normal_reading: NormalReading = "z-score"

    def __post_init__(self) -> None:
        strides = tuple(sorted({int(s) for s in self.strides}, reverse=True))
        object.__setattr__(self, "strides", strides)
        if len(strides) == 1:  # product and mean of one map are that map: one name for it
            object.__setattr__(self, "kind", "product")
        if self.normal_reading not in NORMAL_READINGS:
            readings = list(NORMAL_READINGS)
            msg = f"UniAS map fusion: normal_reading must be one of {readings}, not {self.normal_reading!r}"
            raise UniASArgumentError(msg)
        if not self.against_normal:  # a map read as it is has no reading: one value, so equal fusions compare equal
            object.__setattr__(self, "normal_reading", "z-score")

    @property
    def levels(self) -> tuple[int, ...]:
        """Indices of the fused levels (coarse to fine, 0 = stride 16)."""
        return tuple(LEVEL_STRIDES.index(stride) for stride in self.strides)

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``"mean of strides 16+8"``, ``"stride 16 alone"``."""
        name = (
            f"stride {self.strides[0]} alone"
            if len(self.strides) == 1
            else f"{self.kind} of strides {'+'.join(map(str, self.strides))}"
        )
        if not self.against_normal:
            return name
        if self.normal_reading == "ratio":
            return f"{name}, divided by the normal mean"
        return f"{name}, z-scored against normal images"

    def as_read(self) -> Fusion:
        """The same levels and kind, the map as it is (the head's part of the fusion)."""
        return Fusion(self.kind, self.strides)

    def against_normal_images(self, reading: NormalReading = "z-score") -> Fusion:
        """The same fusion read against normal images as ``reading`` says."""
        return Fusion(self.kind, self.strides, against_normal=True, normal_reading=reading)

    @classmethod
    def of(cls, kind: FusionKind, strides: Iterable[int] | None, levels: Iterable[int] = LEVEL_STRIDES) -> Fusion:
        """The fusion of the ``map_fusion`` / ``map_strides`` arguments (``None`` = every reconstructed level)."""
        return cls(kind, tuple(strides) if strides is not None else tuple(levels))


PAPER_FUSION = Fusion()
"""The paper's map: the product of the four levels (of a model that reconstructs fewer, the product of those)."""


def candidate_fusions(levels: Sequence[int] = LEVEL_STRIDES) -> tuple[Fusion, ...]:
    """The fusions ``map_fusion: auto`` chooses from: product and mean of the coarsest level and its finer neighbours.

    The runs that start at the coarsest level (16; 16+8; 16+8+4; 16+8+4+2 with the paper's four levels: 7 maps,
    stride 16 alone once).  Every fusion measured best on a data set kept the coarsest level (the mean of strides
    16+8 on magnetic tiles, the product of all four on thin cracks, stride 16 alone on small pits), and a map
    without it, made of fine texture alone, chose itself on a small validation split and did not generalise: on
    AITEX (three fabrics, 56 validation strips) stride 2 alone led the validation half (12.87 pAP against 9.54 for
    the paper's product) and came last on the held-out half (0.33 against 2.68), through one fabric's few defects
    (``benchmarks/results/aitex_first_auto_rule/fusion_candidates.md``).  The product of all ``levels`` (the
    paper's map) comes first: the choice keeps it on ties.
    """
    levels = tuple(levels)
    runs = [levels[:length] for length in range(len(levels), 0, -1)]
    return tuple(dict.fromkeys(Fusion(kind, run) for run in runs for kind in ("product", "mean")))


class AnomalyMapGenerator(nn.Module):
    """Fuse per-level cosine-distance maps into one map at the input size.

    Args:
        num_levels: Number of levels (4).
        input_size: (H, W) of the model input; the fused map is returned at this size.
        fusion: Which levels are fused, and how (:data:`PAPER_FUSION` by default); :meth:`use` changes it.
    """

    def __init__(self, num_levels: int, input_size: tuple[int, int], fusion: Fusion = PAPER_FUSION) -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.blurs = nn.ModuleList(GaussianBlur2d(k, k / 3) for k in range(3, 3 + 2 * num_levels, 2))
        self.fusion = fusion

    def use(self, fusion: Fusion) -> None:
        """Fuse with ``fusion`` from now on (as ``map_fusion: auto`` does once it has chosen)."""
        self.fusion = fusion

    def level_maps(self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return the smoothed per-level maps (B, 1, h1, w1) at the finest level's size, coarse to fine."""
        size = targets[-1].shape[-2:]
        maps = []
        for blur, reconstruction, target in zip(self.blurs, reconstructions, targets, strict=True):
            level_map = (1 - F.cosine_similarity(reconstruction, target, dim=1, eps=1e-8)).unsqueeze(1)
            if level_map.shape[-2:] != size:
                level_map = F.interpolate(level_map, size=size, mode="bilinear", align_corners=False)
            maps.append(blur(level_map))
        return maps

    def fuse(self, maps: list[torch.Tensor], fusion: Fusion | None = None) -> torch.Tensor:
        """Fuse smoothed level maps (coarse to fine) and upsample the result to the input size.

        ``fusion``: this one instead of the generator's own (to score other fusions of the same maps).
        """
        fusion = fusion or self.fusion
        chosen = [maps[level] for level in fusion.levels]
        if fusion.kind == "mean":
            fused = torch.stack(chosen).mean(dim=0)
        else:  # the paper's product, finest level first as in the reference code
            fused = chosen[-1]
            for level_map in chosen[:-1]:
                fused = fused * level_map
        return F.interpolate(fused, size=self.input_size, mode="bilinear", align_corners=True)

    def forward(self, reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Return the fused anomaly map (B, 1, H, W)."""
        return self.fuse(self.level_maps(reconstructions, targets))
