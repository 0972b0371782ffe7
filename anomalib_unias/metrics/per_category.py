"""Per-category evaluation with a macro mean, as in the UniAS paper's unified setting (docs/design.md §8).

The paper computes every metric separately for each category (its own pixel set, its own DSC threshold)
and reports the mean over categories.  anomalib batches carry no category; :class:`PerCategory` derives
it from ``image_path`` with :func:`~anomalib_unias.layout.category_of` and routes each sample to a copy of
the wrapped metric made for that category.

Logging: ``compute()`` returns the macro mean as one tensor, so anomalib's own ``Evaluator`` logs it
under ``<name>/mean`` (Lightning's ``log`` only accepts a tensor per ``Metric``).  The per-category
values ``<name>/<category>`` come from :meth:`PerCategory.compute_per_category`, which
:class:`~anomalib_unias.metrics.PerCategoryEvaluator` logs as well.
"""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace
from typing import Any

import torch
from anomalib.metrics import AnomalibMetric
from torch import distributed as dist
from torch import nn
from torchmetrics import Metric

from ..layout import category_of

logger = logging.getLogger(__name__)

# Samples outside the MVTec layout (e.g. a flat folder) are evaluated together under this name.
UNCATEGORISED = "all"


def _to_cpu(states: Any) -> Any:
    """Tensors (in nested dicts/lists) moved to CPU, for ``all_gather_object``."""
    if isinstance(states, torch.Tensor):
        return states.detach().cpu()
    if isinstance(states, dict):
        return {key: _to_cpu(value) for key, value in states.items()}
    if isinstance(states, list | tuple):
        return [_to_cpu(value) for value in states]
    return states


def _drop_per_category_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """Keep the per-category copies, which exist only during an evaluation, out of checkpoints."""
    del module, local_metadata
    for key in [key for key in state_dict if key.startswith(prefix + "per_category.")]:
        del state_dict[key]


class _PerCategory(Metric):
    """Tensor-level part of :class:`PerCategory`: ``update(*field_values, image_path)``."""

    full_state_update = False
    metric: AnomalibMetric

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.categories: list[str] = []
        self.per_category = nn.ModuleList()
        self.target_counts: dict[str, list[int]] = {}  # category -> [positive, negative] ground-truth entries
        self._gathered = False

    def update(self, *values: Any) -> None:
        """Route every sample to the copy of the wrapped metric for its category.

        Args:
            *values: The wrapped metric's fields, in its ``fields`` order, followed by ``image_path``.
        """
        *field_values, image_paths = values
        self._gathered = False
        sample_categories = [category_of(path, default=UNCATEGORISED) for path in image_paths]
        for category in dict.fromkeys(sample_categories):
            positions = [index for index, name in enumerate(sample_categories) if name == category]
            view = SimpleNamespace(
                **{
                    field: value[torch.tensor(positions, device=value.device)]
                    if isinstance(value, torch.Tensor)
                    else [value[index] for index in positions]
                    for field, value in zip(self.metric.fields, field_values, strict=True)
                },
            )
            self._metric_for(category).update(view)
            target = field_values[-1]
            if isinstance(target, torch.Tensor):
                positives = int(torch.count_nonzero(target[torch.tensor(positions, device=target.device)]))
                counts = self.target_counts.setdefault(category, [0, 0])
                counts[0] += positives
                counts[1] += len(positions) * target[0].numel() - positives

    def _metric_for(self, category: str) -> AnomalibMetric:
        if category not in self.categories:
            metric = copy.deepcopy(self.metric).to(self.device)
            metric.compute_on_cpu = self.compute_on_cpu
            self.categories.append(category)
            self.per_category.append(metric)
        return self.per_category[self.categories.index(category)]

    def _gather_across_processes(self) -> None:
        """Multi-process evaluation (DDP): give every process every category's samples from all processes.

        Each process saw only its share of the test set, and maybe not every category.  The per-category
        states are exchanged once (``all_gather_object``, so states of any dtype and empty ones travel
        alike), merged with each state's own reduction (list states concatenated), and the copies are
        told not to synchronise again.  Every metric here is independent of the order of its samples.
        """
        if self._gathered or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        local = {
            category: {attr: getattr(metric, attr) for attr in metric._reductions}
            for category, metric in zip(self.categories, self.per_category, strict=True)
        }
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (_to_cpu(local), self.target_counts))
        categories = sorted({category for states, _ in gathered for category in states})
        self.categories, self.per_category, self.target_counts = [], nn.ModuleList(), {}
        for category in categories:
            metric = self._metric_for(category)
            for attr, reduction in metric._reductions.items():
                parts = [states[category][attr] for states, _ in gathered if category in states]
                if isinstance(getattr(metric, attr), list):
                    merged: Any = [tensor.to(self.device) for part in parts for tensor in part]
                else:
                    stacked = torch.stack([part.to(self.device) for part in parts])
                    merged = reduction(stacked) if reduction is not None else stacked
                setattr(metric, attr, merged)
            metric._to_sync = False
            metric._update_count = max(1, metric._update_count)
            self.target_counts[category] = [
                sum(counts[category][index] for _, counts in gathered if category in counts) for index in (0, 1)
            ]
        self._gathered = True

    def undefined_categories(self) -> list[str]:
        """Categories whose ground truth has only one class (e.g. no defective image, or no defect pixel).

        AUROC, AP, AUPRO and Dice are not defined there (torchmetrics would report 0, Dice NaN).
        """
        return [
            category
            for category in self.categories
            if category in self.target_counts and min(self.target_counts[category]) == 0
        ]

    def compute_per_category(self) -> dict[str, torch.Tensor]:
        """Return ``{category: value}`` for the categories where the metric is defined.

        Categories of :meth:`undefined_categories`, and those whose value is None or NaN, are left out:
        they are "n/a", not 0.
        """
        self._gather_across_processes()
        undefined = set(self.undefined_categories())
        values = {
            category: metric.compute()
            for category, metric in zip(self.categories, self.per_category, strict=True)
            if category not in undefined
        }
        failed = sorted(category for category, value in values.items() if value is None or torch.isnan(value).any())
        if failed:  # defined there, yet NaN: say so, since the table can only show n/a
            logger.warning(
                "%s came out NaN (or none) for %s although both classes are present; shown as n/a and left out "
                "of the mean. Check those categories' maps for NaN/Inf scores.",
                getattr(self, "base_name", type(self).__name__), ", ".join(failed),
            )  # fmt: skip
        return {category: value for category, value in values.items() if category not in failed}

    def compute(self) -> torch.Tensor:
        """Macro mean (float64) over the categories where the metric is defined; NaN (= n/a) if there are none."""
        values = list(self.compute_per_category().values())
        if not values:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return torch.stack([value.double().reshape(()) for value in values]).mean()

    def reset(self) -> None:
        """Forget all categories (and their accumulated samples)."""
        super().reset()
        self.categories = []
        self.per_category = nn.ModuleList()
        self.target_counts = {}
        self._gathered = False

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: torchmetrics' batch-value forward would reset the per-category copies."""
        del args, kwargs
        msg = f"{type(self).__name__} has no per-batch value; call update() and compute()."
        raise NotImplementedError(msg)


class PerCategory(AnomalibMetric, _PerCategory):  # type: ignore[misc]
    """Evaluate ``metric`` separately per category and report each value and their macro mean.

    Args:
        metric: Any anomalib metric (``AUROC``, ``AUPR``, ``AUPRO``, :class:`PaperDice`, ...).  It is used
            as a template: one deep copy per category receives that category's samples.  Its ``strict``
            flag also governs missing fields (``image_path`` included) for the wrapper.
        name: Base of the logged names; defaults to ``metric.name``.  The mean is logged as
            ``<name>/mean`` and each category as ``<name>/<category>``.
        **kwargs: torchmetrics ``Metric`` options.

    Categories come from ``batch.image_path`` (MVTec layout ``<root>/<category>/<split>/...``); a path
    of another layout raises ``ValueError``.  Multi-process (DDP) evaluation gathers every process's
    samples of every category before computing, so the values equal a single-process evaluation's
    (given a sampler that does not repeat samples, see :class:`~anomalib_unias.data.UnifiedFolder`).

    Example (YAML, inside an evaluator's ``test_metrics``)::

        - class_path: anomalib_unias.metrics.PerCategory
          init_args:
            name: pixel_AP
            metric:
              class_path: anomalib.metrics.AUPR
              init_args: {fields: [anomaly_map, gt_mask], strict: false, normalization: null}
    """

    def __init__(self, metric: AnomalibMetric, name: str | None = None, **kwargs) -> None:
        super().__init__(fields=(*metric.fields, "image_path"), strict=metric.strict, **kwargs)
        self.metric = metric
        self.base_name = name or metric.name
        self.name = f"{self.base_name}/mean"
        self.register_state_dict_post_hook(_drop_per_category_state)
