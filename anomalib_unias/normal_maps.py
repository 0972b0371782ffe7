"""A map read against the maps of normal images: a z-score per pixel, per category.  Not in the paper.

Some data sets have structure at a fixed place in every image that the reconstruction never learns, and it
outshines the defects.  On AITEX each fabric's blank margin meets the cloth at the same column in every strip:
every test strip's map maximum lies in that band, none on a defect, and image AUROC is 53
(``benchmarks/results/aitex_map_maxima/maxima.md``).  Reading each pixel of the map against the same pixel of
the category's normal images, ``(map - mean) / spread``, takes that structure away (held-out image AUROC 93,
pixel AP 2.68 -> 3.61 with the paper's product).  On MTD, where the maxima are not fixed in place, it costs
pixel AP (28.14 -> 27.60 for the mean of strides 16+8), so it is not a default: ``map_fusion: auto`` scores every
candidate map both as it is and z-scored (:mod:`anomalib_unias.fusion_selection`) and keeps the z-score only
where the validation split says so.  With ``map_normal_readings: [z-score, ratio]`` it also scores each map
divided by its normal mean (``map / mean``: no spread to estimate from a few images; on an AITEX model trained on
every tile, the mean of strides 16+8 read so scored 24.54 held-out pixel AP against 3.95 z-scored,
``benchmarks/results/aitex_every_tile/``).

* **Statistics** (:class:`NormalStatistics`): the mean and spread per pixel of each candidate fusion's map
  over the training images (all normal), per category, at the working resolution; spread = standard deviation
  plus a tenth of its mean over the image (so that a pixel normal images never move does not divide by 0).
* **The category of an image**, which an exported graph is not given, is the nearest category prototype: the
  mean over the category's training images of the backbone's stride-16 features averaged over the image
  (over all its tiles).  With one category there is nothing to choose.
* **In the model** (:class:`NormalMaps`): the chosen fusion's statistics as buffers that are not part of the
  state dict (the parity weights and every earlier checkpoint keep their keys); they travel in the checkpoint's
  fusion entry (:mod:`anomalib_unias.fusion_selection`) and in every export's graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import torch
from torch import nn

SPREAD_FLOOR = 0.1
"""The spread is the standard deviation plus this share of its mean over the image."""
NormalReading = Literal["z-score", "ratio"]
"""How a map is read against its category's normal maps: ``(map - mean) / spread`` or ``map / mean``."""
NORMAL_READINGS: tuple[str, ...] = get_args(NormalReading)
"""Every :data:`NormalReading`."""
RATIO_FLOOR = 1e-6
"""A ratio divides by the normal mean, but at least this share of its mean over the image (never by 0)."""


@dataclass(frozen=True)
class NormalMapStatistics:
    """One fusion's statistics: ``prototypes`` (K, D), ``mean`` and ``spread`` (K, 1, H, W), K categories."""

    categories: tuple[str, ...]
    prototypes: torch.Tensor
    mean: torch.Tensor
    spread: torch.Tensor

    def to(self, device: torch.device | str) -> NormalMapStatistics:
        """The same statistics on ``device``."""
        return NormalMapStatistics(
            self.categories, self.prototypes.to(device), self.mean.to(device), self.spread.to(device)
        )

    def as_entry(self) -> dict[str, object]:
        """What the checkpoint keeps (tensors on the CPU)."""
        return {
            "categories": list(self.categories),
            "prototypes": self.prototypes.cpu(),
            "mean": self.mean.cpu(),
            "spread": self.spread.cpu(),
        }

    @classmethod
    def from_entry(cls, entry: dict[str, object]) -> NormalMapStatistics:
        """The statistics :meth:`as_entry` kept."""
        return cls(tuple(entry["categories"]), entry["prototypes"], entry["mean"], entry["spread"])  # type: ignore[arg-type]

    def read_as(self, reading: NormalReading) -> NormalMapStatistics:
        """The statistics that make :func:`z_score` read a map as ``reading`` says.

        ``"z-score"``: these.  ``"ratio"``: the spread replaced by the mean (at least :data:`RATIO_FLOOR` of its
        mean over the image), so that ``(map - mean) / spread`` is ``map / mean - 1``: the same ranks as the
        ratio, through the same graph (an export needs nothing new).
        """
        if reading == "z-score":
            return self
        floor = RATIO_FLOOR * self.mean.mean(dim=(-2, -1), keepdim=True)
        divisor = torch.maximum(self.mean, floor).clamp(min=torch.finfo(torch.float32).tiny)
        return NormalMapStatistics(self.categories, self.prototypes, self.mean, divisor)


def nearest_category(descriptors: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index (B,) of the prototype (K, D) nearest to each image descriptor (B, D) in Euclidean distance."""
    distances = (descriptors.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(dim=-1)
    return distances.argmin(dim=1)


class Statistics(Protocol):
    """What a z-score reads: ``prototypes`` (K, D), ``mean`` and ``spread`` (K, 1, H, W) of K categories."""

    prototypes: torch.Tensor
    mean: torch.Tensor
    spread: torch.Tensor


def z_score(anomaly_map: torch.Tensor, descriptors: torch.Tensor, statistics: Statistics) -> torch.Tensor:
    """``(map - mean) / spread`` of each image's map (B, 1, H, W) with the statistics of its nearest category."""
    if statistics.mean.shape[0] == 1:
        return (anomaly_map - statistics.mean) / statistics.spread
    index = nearest_category(descriptors, statistics.prototypes)
    return (anomaly_map - statistics.mean.index_select(0, index)) / statistics.spread.index_select(0, index)


def positive_scores(values: torch.Tensor) -> torch.Tensor:
    """``exp(asinh(values) / 4)``: the real line onto (0, inf), strictly increasing, so ranks and pixel AP stay.

    Z-scores are signed and reach the thousands; this puts -1e4..1e4 into 0.08..12 (a z-score of 0 at 1), where
    float32 still tells apart z-scores 1e-6 apart near 0 and a relative 1e-6 beyond 1.
    """
    return torch.exp(torch.asinh(values) / 4)


def score_against_normal(anomaly_map: torch.Tensor, descriptors: torch.Tensor, statistics: Statistics) -> torch.Tensor:
    """The map read against normal images: :func:`positive_scores` of its :func:`z_score`, every value > 0.

    Positive like every other UniAS map, so the post-processor's normalisation (``s / (s + t)`` for ``s >= 0``,
    :mod:`anomalib_unias.post_processor`) keeps every pixel's rank: a signed z-score lost the order of all
    pixels below their normal mean there (ties at 0), and with it pixel AP (MTD, stride 16 alone: 25.26 on the
    map, 24.76 after the post-processor).
    """
    return positive_scores(z_score(anomaly_map, descriptors, statistics))


class NormalStatistics:
    """Per-category sums over normal images of several fusions' maps, and the statistics they give.

    Every :meth:`update` brings the same fusions' maps in the same order.
    """

    def __init__(self) -> None:
        self.sums: dict[str, list[torch.Tensor]] = {}  # category -> [count, descriptor sum, map sum, square sum]

    def update(self, maps: Sequence[torch.Tensor], descriptors: torch.Tensor, categories: Sequence[str]) -> None:
        """Add one batch: ``maps[f]`` (B, 1, H, W) per fusion, ``descriptors`` (B, D), each image's category."""
        stacked = torch.stack([m[:, 0] for m in maps], dim=1).double().cpu()  # (B, F, H, W)
        descriptors = descriptors.double().cpu()
        for index, category in enumerate(categories):
            values = stacked[index]
            if category not in self.sums:
                self.sums[category] = [0, torch.zeros_like(descriptors[index]), torch.zeros_like(values),
                                       torch.zeros_like(values)]  # fmt: skip
            sums = self.sums[category]
            sums[0] += 1
            sums[1] += descriptors[index]
            sums[2] += values
            sums[3] += values.square()

    @property
    def usable(self) -> bool:
        """Whether every category has at least two normal images (a spread needs two)."""
        return bool(self.sums) and all(sums[0] >= 2 for sums in self.sums.values())

    def of(self, fusion: int) -> NormalMapStatistics:
        """The statistics of the ``fusion``-th fusion's map, categories in sorted order."""
        categories = tuple(sorted(self.sums))
        prototypes, means, spreads = [], [], []
        for category in categories:
            count, descriptor_sum, map_sum, square_sum = self.sums[category]
            mean = map_sum[fusion] / count
            deviation = (square_sum[fusion] / count - mean.square()).clamp(min=0).sqrt()
            spread = deviation + SPREAD_FLOOR * deviation.mean()
            prototypes.append(descriptor_sum / count)
            means.append(mean)
            spreads.append(spread.clamp(min=torch.finfo(torch.float32).tiny))
        return NormalMapStatistics(
            categories,
            torch.stack(prototypes).float(),
            torch.stack(means).unsqueeze(1).float(),
            torch.stack(spreads).unsqueeze(1).float(),
        )


class NormalMaps(nn.Module):
    """The z-score of the model's map against the chosen fusion's normal statistics; the map itself until set."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(0, 0), persistent=False)
        self.register_buffer("mean", torch.zeros(0, 1, 0, 0), persistent=False)
        self.register_buffer("spread", torch.zeros(0, 1, 0, 0), persistent=False)

    @property
    def active(self) -> bool:
        """Whether maps are z-scored."""
        return self.mean.numel() > 0

    def use(self, statistics: NormalMapStatistics | None) -> None:
        """Z-score against ``statistics`` from now on; ``None``: return the map as it is."""
        if statistics is None:
            statistics = NormalMapStatistics((), torch.zeros(0, 0), torch.zeros(0, 1, 0, 0), torch.zeros(0, 1, 0, 0))
        statistics = statistics.to(self.mean.device)
        self.prototypes, self.mean, self.spread = statistics.prototypes, statistics.mean, statistics.spread

    def forward(self, anomaly_map: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        """The map read against normal images (B, 1, H, W), or ``anomaly_map`` itself when no statistics are set."""
        if not self.active:
            return anomaly_map
        return score_against_normal(anomaly_map, descriptors, self)
