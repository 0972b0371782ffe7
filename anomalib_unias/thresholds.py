"""Per-category thresholds of one unified model: fitted on validation, kept in a file, applied anywhere.

A unified model serves several product lines whose score ranges differ (a cut that passes every normal
image of one category misses the defects of another), so one global threshold labels some lines badly.
:class:`~anomalib_unias.post_processor.UniASPostProcessor` fits, during validation, anomalib's
F1-adaptive image and pixel thresholds per category (the category is ``category_of(image_path)``) beside
the global ones.  They are stored in the checkpoint and, by ``export``, in ``thresholds.json`` beside the
exported model; :class:`CategoryThresholds` reads, edits and writes that file.

The exported graph itself is unchanged (anomalib's inferencers keep working: the global behaviour).  Its
outputs are normalised with the thresholds it was exported with (the file's ``graph`` entry, which only
export writes) by the strictly increasing map ``s / (s + t)``, so the result for any other threshold follows
from them exactly, without the raw score:

* label: ``s > t_c``  <=>  ``n > t_c / (t_c + t)``;
* per-category normalised score / map: ``s / (s + t_c) = 1 / (1 + (t_c / t) (1 / n - 1))``.

:meth:`CategoryThresholds.apply` does this for a prediction of any runtime (eager, Torch export,
OpenVINO, ONNX); an unknown category falls back to the ``global`` thresholds with a warning.  A file has one
meaning everywhere: ``global`` and ``categories`` are the thresholds images are labelled with (editable; eager
PyTorch with ``UniAS(thresholds=...)`` and :class:`CategoryInferencer` over any export label alike), ``graph``
records what the exported graph normalises with (not to be edited).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UniASArgumentError

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
"""Name of the thresholds file written beside an exported model."""


@dataclass
class Thresholds:
    """Raw-score thresholds: an image is anomalous when its score exceeds ``image``, a pixel ``pixel``."""

    image: float
    pixel: float


FILE_KEYS = ("about", "graph", "global", "categories")
"""The top-level entries of a thresholds file."""


@dataclass
class CategoryThresholds:
    """The thresholds images are labelled with: global ones and one pair per category.

    Args:
        global_thresholds: For images of a category without its own (and for ``category=None``).
        categories: Per-category thresholds; a category missing here uses the global ones.
        graph_thresholds: What an exported graph normalises its outputs with (written by export); ``None`` =
            ``global_thresholds`` (a graph exported with these).
    """

    global_thresholds: Thresholds
    categories: dict[str, Thresholds] = field(default_factory=dict)
    graph_thresholds: Thresholds | None = None

    def for_category(self, category: str | None) -> Thresholds:
        """The thresholds of ``category``; the global ones (with a warning) for an unknown category."""
        if category is None:
            return self.global_thresholds
        if category not in self.categories:
            logger.warning(
                "Category %r has no fitted thresholds (known: %s); using the global thresholds.",
                category,
                ", ".join(sorted(self.categories)) or "none",
            )
            return self.global_thresholds
        return self.categories[category]

    def apply(self, prediction: Any, category: str | None) -> dict[str, np.ndarray]:
        """Per-category score, label, map and mask from a prediction normalised by the exported graph.

        Args:
            prediction: Anything with ``pred_score`` and ``anomaly_map`` as returned by the exported model
                (anomalib's ``OpenVINOInferencer`` / ``TorchInferencer`` results, ``InferenceBatch``, or a
                dict), normalised by ``s / (s + t)`` with :attr:`graph_thresholds`.
            category: The image's category (e.g. ``"fabric02"``); ``None`` = the global thresholds.

        Returns:
            ``pred_score``, ``pred_label``, ``anomaly_map``, ``pred_mask`` as numpy arrays.
        """
        get = prediction.get if isinstance(prediction, dict) else lambda name: getattr(prediction, name)
        graph = self.graph_thresholds or self.global_thresholds
        chosen = self.for_category(category)
        score = renormalise(_numpy(get("pred_score")), graph.image, chosen.image)
        anomaly_map = renormalise(_numpy(get("anomaly_map")), graph.pixel, chosen.pixel)
        return {
            "pred_score": score,
            "pred_label": score > 0.5,
            "anomaly_map": anomaly_map,
            "pred_mask": anomaly_map > 0.5,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the thresholds as editable JSON (raw-score thresholds, one pair per category)."""
        path = Path(path)
        content = {
            "about": (
                "UniAS raw-score thresholds: an image (pixel) is anomalous when its raw score exceeds 'image' "
                "('pixel'). 'categories' label each category's images, 'global' those of other categories; edit "
                "them and re-attach (UniAS(thresholds=...), or CategoryInferencer) without retraining. 'graph' is "
                "what the exported graph normalises with: do not edit it."
            ),
            "graph": asdict(self.graph_thresholds or self.global_thresholds),
            "global": asdict(self.global_thresholds),
            "categories": {name: asdict(values) for name, values in sorted(self.categories.items())},
        }
        path.write_text(json.dumps(content, indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> CategoryThresholds:
        """Read a thresholds file written by :meth:`to_json` (and possibly edited).

        Raises:
            UniASArgumentError: naming the file and the entry that is not a pair of positive finite numbers, or an
                entry the file format does not have.
        """
        path = Path(path)
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            msg = f"Cannot read thresholds file {path}: {error}. Write it with CategoryThresholds.to_json."
            raise UniASArgumentError(msg) from None
        if not isinstance(content, dict) or "global" not in content or set(content) - set(FILE_KEYS):
            unknown = sorted(set(content) - set(FILE_KEYS)) if isinstance(content, dict) else content
            msg = (
                f"Thresholds file {path}: expected the entries {list(FILE_KEYS)} ('global' required), got unknown "
                f"{unknown!r}. Write it with CategoryThresholds.to_json."
            )
            raise UniASArgumentError(msg)
        categories = content.get("categories", {})
        if not isinstance(categories, dict):
            msg = f"Thresholds file {path}: 'categories' must map category names to thresholds, got {categories!r}."
            raise UniASArgumentError(msg)
        return cls(
            global_thresholds=_parse_entry(path, "global", content["global"]),
            categories={name: _parse_entry(path, f"categories/{name}", v) for name, v in categories.items()},
            graph_thresholds=_parse_entry(path, "graph", content["graph"]) if "graph" in content else None,
        )


def _parse_entry(path: Path, name: str, values: Any) -> Thresholds:
    """``{"image": t, "pixel": t}`` with finite numbers > 0 (not booleans, no other keys), else a refusal."""
    numbers = (
        isinstance(values, dict)
        and set(values) == {"image", "pixel"}
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values())
    )
    if not numbers or not all(math.isfinite(v) and v > 0 for v in values.values()):
        msg = (
            f"Thresholds file {path}: entry {name!r} must be {{'image': t, 'pixel': t}} with finite numbers > 0 "
            f"and no other keys, got {values!r}."
        )
        raise UniASArgumentError(msg)
    return Thresholds(image=float(values["image"]), pixel=float(values["pixel"]))


def renormalise(normalised: np.ndarray, threshold: float, new_threshold: float) -> np.ndarray:
    """``s / (s + new_threshold)`` from ``n = s / (s + threshold)``, without the raw score ``s``.

    Elementwise ``1 / (1 + (new / old) (1 / n - 1))``, in float64: 0 stays 0, 1 stays 1, and the order of
    the values is kept.
    """
    values = np.asarray(normalised, dtype=np.float64)
    if new_threshold == threshold:
        return values
    with np.errstate(divide="ignore"):
        return 1 / (1 + (new_threshold / threshold) * (1 / values - 1))


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


class CategoryInferencer:
    """anomalib's inferencer of an exported UniAS model, plus its categories' thresholds.

    ``predict(image)`` is the inferencer's (global) result; ``predict(image, category="fabric02")`` the
    same outputs normalised and labelled with that category's thresholds (:meth:`CategoryThresholds.apply`).

    Args:
        inferencer: anomalib's ``OpenVINOInferencer`` or ``TorchInferencer`` (anything with ``predict``).
        thresholds: The thresholds, or the path of ``thresholds.json`` (written by export beside the model).

    Example:
        >>> from anomalib.deploy import OpenVINOInferencer
        >>> inferencer = CategoryInferencer(
        ...     OpenVINOInferencer(path="weights/openvino/model.xml"), "weights/openvino/thresholds.json"
        ... )  # doctest: +SKIP
        >>> result = inferencer.predict("image.png", category="fabric02")  # doctest: +SKIP
    """

    def __init__(self, inferencer: Any, thresholds: CategoryThresholds | str | Path) -> None:
        self.inferencer = inferencer
        self.thresholds = (
            thresholds if isinstance(thresholds, CategoryThresholds) else CategoryThresholds.from_json(thresholds)
        )

    def predict(self, image: Any, category: str | None = None) -> dict[str, np.ndarray]:
        """Predict ``image`` (a path or array, as the inferencer takes) for ``category`` (``None``: global)."""
        return self.thresholds.apply(self.inferencer.predict(image), category)
