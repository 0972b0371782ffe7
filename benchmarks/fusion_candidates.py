"""Exact pixel AP of every fusion of neighbouring levels, per category and test half, for one trained checkpoint.

Shows which choice rule for ``map_fusion: auto`` carries from the select half (where anomalib validates) to the
held-out half: every run of neighbouring levels (16; 16+8; ...; 8+4+2; ...; 2), product and mean, is scored from
one reconstruction of each test image (``UniASModel.fused_maps``) at the working resolution; the table marks the
runs that ``auto`` chooses from (:func:`anomalib_unias.anomaly_map.candidate_fusions`).

    python benchmarks/fusion_candidates.py CKPT --root ../shared/data/aitex --output OUT.md
"""

from __future__ import annotations

import numpy as np
import torch
from _common import HALVES, assign_halves, checkpoint_arguments, run_stamp
from sklearn.metrics import average_precision_score

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import Fusion, candidate_fusions
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.layout import category_of


def neighbouring_runs(levels: tuple[int, ...]) -> list[Fusion]:
    """Product and mean of every run of neighbouring ``levels`` (one name for a single level's map)."""
    runs = [levels[i : i + n] for n in range(len(levels), 0, -1) for i in range(len(levels) - n + 1)]
    return list(dict.fromkeys(Fusion(kind, run) for run in runs for kind in ("product", "mean")))


def collect(model: UniAS, datamodule: UnifiedFolder, fusions: list[Fusion]) -> dict[tuple, list]:
    """``(fusion index, category, half) -> [(scores, truth), ...]`` over the test set."""
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    store: dict[tuple, list] = {}
    for batch in datamodule.test_dataloader():
        image, mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        maps = model.model.fused_maps(image, fusions)
        for i, path in enumerate(batch.image_path):
            truth = (mask[i] > 0.5).numpy().ravel()
            for index, fused in enumerate(maps):
                key = (index, category_of(path), halves[str(path)])
                store.setdefault(key, []).append((fused[i, 0].numpy().ravel(), truth))
    return store


def main() -> None:
    args = checkpoint_arguments(__doc__, "aitex", "result file (markdown)")
    model = UniAS.load_from_checkpoint(args.checkpoint).eval()
    levels = model.model.head.architecture.levels
    fusions, candidates = neighbouring_runs(tuple(levels)), set(candidate_fusions(levels))
    datamodule = UnifiedFolder(root=args.root, eval_batch_size=2, num_workers=0)
    datamodule.setup()
    with torch.no_grad():
        store = collect(model, datamodule, fusions)
    categories = sorted({key[1] for key in store})
    lines = [
        f"# Every fusion of neighbouring levels of {args.checkpoint.name} on {args.root}",
        "",
        f"`python benchmarks/fusion_candidates.py {args.checkpoint} --root {args.root} --output {args.output}` "
        f"({run_stamp()}).  Exact pixel AP (%) at the working resolution: per category ({', '.join(categories)}) and "
        "their mean on each half of the test set, and all categories' pixels pooled.  `auto`: a fusion that "
        "`map_fusion: auto` chooses from now (the runs that keep the coarsest level).",
        "",
        "| fusion | auto | select mean | holdout mean | select pooled | holdout pooled | select per category "
        "| holdout per category |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, fusion in enumerate(fusions):
        cells = []
        per_category = {}
        for half in HALVES:
            parts = {c: store.get((index, c, half), []) for c in categories}
            scores = {c: np.concatenate([p[0] for p in parts[c]]) for c in categories if parts[c]}
            truths = {c: np.concatenate([p[1] for p in parts[c]]) for c in categories if parts[c]}
            values = [100 * average_precision_score(truths[c], scores[c]) for c in scores if truths[c].any()]
            pooled = 100 * average_precision_score(np.concatenate(list(truths.values())),
                                                   np.concatenate(list(scores.values())))  # fmt: skip
            cells += [f"{np.mean(values):.2f}", f"{pooled:.2f}"]
            per_category[half] = " / ".join(f"{v:.2f}" for v in values)
        lines.append(
            f"| {fusion.name} | {'yes' if fusion in candidates else ''} | {cells[0]} | {cells[2]} | {cells[1]} | "
            f"{cells[3]} | {per_category['select']} | {per_category['holdout']} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
