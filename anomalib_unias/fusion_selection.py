"""``map_fusion: auto``: the map fusion with the best pixel AP on the validation split.  Not in the paper.

Which levels carry the anomaly map differs by material far more than any training setting moves it
(README, "Choosing the map from the data"): on Magnetic Tile Defects the mean of the stride-16 and stride-8
maps, on thin cracks the paper's product of all four levels, on small pits the stride-16 map alone, each
several times the others' pixel AP.  anomalib fits its thresholds on the validation split; ``auto`` chooses
the fusion there too, before the thresholds are fitted, so they fit the map that is used:

* before each validation loop, every :func:`~anomalib_unias.anomaly_map.candidate_fusions` map of every
  validation image is made from one reconstruction (:meth:`~anomalib_unias.torch_model.UniASModel.fused_maps`)
  and its pixels are counted into a histogram per category, defect and normal pixels apart
  (:class:`FusionScores`; memory does not grow with the data, and processes add their counts);
* each fusion's pixel AP per category follows from the counts (:func:`binned_average_precision`, bins of
  0.3 % of the score), and the fusion with the best geometric mean over the categories with defect pixels is
  used from then on (:func:`FusionScores.best`; the paper's product on ties, and where no category has a defect
  pixel).  The geometric mean, not the arithmetic one the tables report, because a validation split holds few
  defective images per category: one category's easy images can lift a map's arithmetic mean far above maps
  that serve every category better (AITEX: README, "Choosing the map from the data").  With one category
  both means are its AP;
* every candidate is scored as it is and, where the training images allow, read per pixel against its maps of
  the category's training images (:mod:`anomalib_unias.normal_maps`: a fixed structure such as AITEX's margin
  band stops outshining the defects), z-scored and, with ``map_normal_readings`` asking for it, divided by the
  normal mean, so the validation split also decides that;
* the choice and every fusion's score go into the log and the checkpoint (:data:`CHECKPOINT_KEY`), from which
  test, predict and export take it (:func:`restore_fusion`).

The validation split is anomalib's: by default the test set itself (``val_split_mode: same_as_test``), as
for the thresholds.  For an honest estimate, validate on a split of the test set that is not reported
(``val_split_mode: from_test``), as ``benchmarks/quality.py`` does with its two halves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import distributed

from .anomaly_map import Fusion
from .errors import UniASArgumentError
from .normal_maps import NormalMapStatistics, positive_scores

if TYPE_CHECKING:
    from .torch_model import UniASModel

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "unias_map_fusion"
"""Checkpoint entry of the chosen fusion: ``{"kind", "strides", "against_normal", "validation_pixel_AP": {name: AP}}``
(AP: the geometric mean over categories, :meth:`FusionScores.average_precision`)
and, for a fusion read against normal images, ``"normal_reading"`` (``"z-score"`` where absent),
``"normal_maps"`` (:meth:`~anomalib_unias.normal_maps.NormalMapStatistics.as_entry`, already read as the reading
says) and ``"scale"`` (:data:`AGAINST_NORMAL_SCALE`)."""
AGAINST_NORMAL_SCALE = "exp(asinh(z) / 4)"
"""How a map read against normal images is scaled (:func:`~anomalib_unias.normal_maps.score_against_normal`);
an entry without it was saved while that map was the signed z-score itself (:func:`upgrade_signed_z_scores`)."""
POST_PROCESSOR_SCORES = ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")
"""The post-processor's buffers that hold values of the map (or of its maximum, the image score)."""
LOG10_RANGE = (-12.0, 2.0)
"""Scores are binned on a log scale over this range (a product of four maps lies in [0, 16]); below it, bin 0."""
BINS = 4096 * 3
"""Histogram bins over :data:`LOG10_RANGE`: 0.0011 decades (0.26 % of the score) each."""


def score_bins(scores: torch.Tensor) -> torch.Tensor:
    """The histogram bin of every score: log-spaced over :data:`LOG10_RANGE`; NaN in the top bin (most anomalous).

    The bins are monotone in the score, so the pixel AP of the binned scores is that of the scores up to
    ties inside a bin.
    """
    low, high = LOG10_RANGE
    logs = torch.log10(scores.float().clamp(min=10**low))
    index = ((logs - low) * (BINS / (high - low))).nan_to_num(nan=BINS - 1).long()
    return index.clamp(0, BINS - 1)


def binned_average_precision(counts: torch.Tensor) -> torch.Tensor:
    """Average precision of histograms ``counts`` (..., 2, BINS): [..., 0] normal, [..., 1] defect pixel counts.

    The step-wise AP that scikit-learn computes, with every bin one threshold: the precision at each
    threshold weighted by the share of defect pixels first reached there.  NaN where there is no defect pixel.
    """
    normal, defect = counts.double().flip(-1).unbind(-2)  # most anomalous bin first
    true_positives, false_positives = defect.cumsum(-1), normal.cumsum(-1)
    precision = true_positives / (true_positives + false_positives).clamp(min=1)
    total = defect.sum(-1)
    return torch.where(total > 0, (precision * defect).sum(-1) / total.clamp(min=1), torch.nan)


class FusionScores:
    """Per-category pixel histograms of the maps of several fusions, and the pixel AP each of them gets.

    Args:
        fusions: The fusions scored, the preferred one first (it wins ties).
    """

    def __init__(self, fusions: Sequence[Fusion]) -> None:
        self.fusions = tuple(fusions)
        self.counts: dict[str, torch.Tensor] = {}  # category -> (fusions, 2, BINS) int64

    def update(self, maps: Sequence[torch.Tensor], masks: torch.Tensor, categories: Sequence[str]) -> None:
        """Count the pixels of one batch: ``maps[i]`` (B, 1, H, W) is fusion ``i``'s, ``masks`` (B, [1,] H, W).

        Raises:
            ValueError: a map and the masks differ in size.
        """
        defect = masks.reshape(masks.shape[0], -1).bool().cpu()
        bins = torch.stack([score_bins(m.reshape(m.shape[0], -1).cpu()) for m in maps])  # (F, B, P)
        if bins.shape[1:] != defect.shape:
            msg = f"fusion scores: maps of {list(maps[0].shape)} do not match masks of {list(masks.shape)}"
            raise UniASArgumentError(msg)
        offsets = torch.arange(len(self.fusions)).view(-1, 1, 1) * (2 * BINS) + defect.long() * BINS
        keys = bins + offsets  # (F, B, P): fusion, defect or not, bin
        for category in dict.fromkeys(categories):
            images = [i for i, c in enumerate(categories) if c == category]
            counted = torch.bincount(keys[:, images].reshape(-1), minlength=len(self.fusions) * 2 * BINS)
            counted = counted.view(len(self.fusions), 2, BINS)
            if category in self.counts:
                self.counts[category] += counted
            else:
                self.counts[category] = counted

    def gather(self) -> None:
        """Add up the counts of every process (distributed validation); a single process keeps its own."""
        if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
            return
        names: list[list[str]] = [[] for _ in range(distributed.get_world_size())]
        distributed.all_gather_object(names, sorted(self.counts))
        device = torch.device("cuda", torch.cuda.current_device()) if distributed.get_backend() == "nccl" else "cpu"
        for category in sorted({name for part in names for name in part}):
            counts = self.counts.get(category, torch.zeros(len(self.fusions), 2, BINS, dtype=torch.long)).to(device)
            distributed.all_reduce(counts)
            self.counts[category] = counts.cpu()

    def average_precision(self) -> dict[Fusion, float]:
        """Each fusion's geometric mean pixel AP over the categories that have defect pixels (NaN where none has)."""
        if not self.counts:
            return dict.fromkeys(self.fusions, math.nan)
        per_category = binned_average_precision(torch.stack(list(self.counts.values())))  # (C, F)
        means = per_category.clamp(min=1e-12).log().nanmean(dim=0).exp()  # AP > 0 wherever a defect pixel is
        return {fusion: float(value) for fusion, value in zip(self.fusions, means, strict=True)}

    def best(self) -> Fusion | None:
        """The fusion with the highest geometric mean pixel AP (the earliest on ties); ``None`` without defects."""
        scores = self.average_precision()
        finite = {fusion: score for fusion, score in scores.items() if not math.isnan(score)}
        if not finite:
            return None
        return max(finite, key=lambda fusion: (finite[fusion], -self.fusions.index(fusion)))


def describe_choice(chosen: Fusion | None, scores: Mapping[Fusion, float], images: int) -> str:
    """The log line of a choice: what was chosen, on how many images, and the runners-up.

    ``scores``: every candidate's score, the default (the product of all reconstructed levels, the paper's map)
    first.
    """
    default = next(iter(scores))
    if chosen is None:
        return (
            f"UniAS map_fusion 'auto': the {images} validation images hold no defect pixel, so the map stays the "
            f"{default.name} (the paper's). Give the validation split defective images (val_split_mode: from_test "
            "or same_as_test) to choose the fusion from the data."
        )
    ranked = sorted(scores.items(), key=lambda item: -item[1] if not math.isnan(item[1]) else math.inf)
    others = ", ".join(f"{fusion.name} {100 * score:.2f}" for fusion, score in ranked[1:6])
    return (
        f"UniAS map_fusion 'auto': {chosen.name} (validation pixel AP {100 * scores[chosen]:.2f}, geometric mean "
        f"over categories, {images} images); next: {others}; the paper's {default.name} {100 * scores[default]:.2f}."
    )


def checkpoint_entry(
    chosen: Fusion, scores: Mapping[Fusion, float], statistics: NormalMapStatistics | None = None
) -> dict[str, Any]:
    """What :data:`CHECKPOINT_KEY` holds: the chosen fusion and every fusion's validation pixel AP.

    For a fusion read against normal images, also how and its normal statistics (as read).
    """
    entry = {
        "kind": chosen.kind,
        "strides": list(chosen.strides),
        "against_normal": chosen.against_normal,
        "validation_pixel_AP": {fusion.name: round(score, 6) for fusion, score in scores.items()},
    }
    if statistics is not None:
        entry["normal_maps"] = statistics.as_entry()
    if chosen.against_normal:
        entry["normal_reading"] = chosen.normal_reading
        entry["scale"] = AGAINST_NORMAL_SCALE
    return entry


def upgrade_signed_z_scores(checkpoint: dict[str, Any]) -> None:
    """Put a checkpoint's thresholds on the scale of its map, where it was saved with signed z-scores.

    Until 2026-12-07 a map read against normal images was the z-score itself; its thresholds and min/max were
    fitted on it.  The map is :func:`~anomalib_unias.normal_maps.positive_scores` of the z-score now, strictly
    increasing, so the same function of the old values splits the same pixels and images: thresholds (global and
    per category) and min/max are mapped by it, before the state dict is loaded.  Other checkpoints are untouched.
    """
    entry = checkpoint.get(CHECKPOINT_KEY)
    if not entry or not entry.get("against_normal") or entry.get("scale") == AGAINST_NORMAL_SCALE:
        return
    state = checkpoint.get("state_dict", {})
    for name in POST_PROCESSOR_SCORES:
        if (key := f"post_processor.{name}") in state:
            state[key] = positive_scores(state[key])
    config = checkpoint.get("anomalib_post_processor_config") or {}
    if config.get("category_thresholds"):
        config["category_thresholds"] = {
            category: positive_scores(torch.tensor(values, dtype=torch.float64)).tolist()
            for category, values in config["category_thresholds"].items()
        }
    entry["scale"] = AGAINST_NORMAL_SCALE
    logger.info("UniAS: thresholds fitted on the signed z-scores of an older checkpoint moved to %s.", entry["scale"])


def restore_fusion(checkpoint: Mapping[str, Any], model: UniASModel) -> Fusion | None:
    """Make ``model`` map as the checkpoint's ``auto`` choice did; the fusion, or ``None`` if none was made."""
    entry = checkpoint.get(CHECKPOINT_KEY)
    if not entry:
        return None
    against_normal = bool(entry.get("against_normal", False))
    fusion = Fusion(entry["kind"], tuple(entry["strides"]), against_normal, entry.get("normal_reading", "z-score"))
    model.head.anomaly_map.use(fusion)
    normal = entry.get("normal_maps")
    model.normal_maps.use(NormalMapStatistics.from_entry(normal) if fusion.against_normal and normal else None)
    return fusion
