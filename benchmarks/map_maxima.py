"""What sets each category's map maximum, and how much of it a per-position normal baseline takes away.

For one trained UniAS checkpoint, from one reconstruction of every image (``UniASModel.fused_maps``, at the
working resolution):

* **where the maxima sit**: for each category's test images, the share of maxima on a defect pixel, in the
  top or bottom 8 rows, and a histogram of their columns (16 bins across the width);
* **what a normal baseline does**: the maps of the category's training images (all normal) give a mean map
  per pixel (and its spread); each test map is then read against it, and pixel AP per category (mean over the
  categories with defects, each half of the test set, ``_common.assign_halves``) and image AUROC (the map's
  maximum as the score) say what the map's structure cost.  Readings: the raw map (the model's); minus the mean;
  divided by the mean; z-scored (minus the mean, over the spread plus a tenth of its average); minus the mean's
  column profile (a band that stands at a fixed column) or its row profile (the image's top and bottom edges);
  minus the mean of all categories together (what one baseline for every category would do).

This is a diagnosis, not a setting of the model: the baseline needs the image's category, and PaDiM's per-position
Gaussians do the same job inside the model.  The fusions scored are the paper's product, the mean of strides 16+8
and stride 16 alone; with ``--candidates``, the 7 that ``map_fusion: auto`` chooses from, and a last table says
which fusion and reading the select half would rank first if ``auto`` offered the raw maps only, the raw and
z-scored maps (as it does), or the maps divided by the normal mean as well.

    python benchmarks/map_maxima.py CKPT --root ../shared/data/aitex --output benchmarks/results/aitex_map_maxima
    python benchmarks/map_maxima.py CKPT --root ../shared/data/aitex --output OUT --candidates
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence

import numpy as np
import torch
from _common import HALVES, assign_halves, checkpoint_parser, run_stamp
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import Fusion, candidate_fusions
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.data.reading import read_image
from anomalib_unias.layout import category_of

FUSIONS = (Fusion("product", (16, 8, 4, 2)), Fusion("mean", (16, 8)), Fusion("product", (16,)))
"""The fusions scored by default (the model must reconstruct these levels); ``--candidates``: ``auto``'s."""
CHOICE_READINGS = {
    "as it is (auto before the z-scored candidates)": ("raw (the model's map)",),
    "as it is or z-scored (auto now)": ("raw (the model's map)", "z-score"),
    "as it is, z-scored or divided by the mean": ("raw (the model's map)", "z-score", "divided by the mean"),
}
"""Sets of readings ``auto`` could offer: for each, the candidate the select half ranks first."""
EDGE_ROWS = 8
"""Rows at the top and at the bottom of the map counted as the image's edge."""
Baseline = dict[str, np.ndarray]
"""Per category: the normal maps' mean, spread, column and row profiles (each (fusions, H, W))."""


def maps_of(model: UniAS, images: list[torch.Tensor], fusions: Sequence[Fusion]) -> np.ndarray:
    """The ``fusions``' maps of ``images`` (each (3, H, W) as read), shape (N, fusions, H, W)."""
    batch = torch.cat([model.pre_processor.transform(image[None]) for image in images])
    with torch.no_grad():
        maps = model.model.fused_maps(batch, fusions)
    return torch.stack([m[:, 0] for m in maps], dim=1).numpy()


def baselines(normal: dict[str, list[np.ndarray]]) -> dict[str, Baseline]:
    """Per category, the mean map of its normal images and the profiles and spread derived from it."""
    result = {}
    for category, maps in normal.items():
        stack = np.stack(maps)
        mean, spread = stack.mean(0), stack.std(0)
        result[category] = {
            "mean": mean,
            "spread": spread + 0.1 * spread.mean(axis=(1, 2), keepdims=True),
            "columns": mean.mean(axis=1, keepdims=True),
            "rows": mean.mean(axis=2, keepdims=True),
        }
    every = np.stack([m for maps in normal.values() for m in maps]).mean(0)
    for values in result.values():
        values["every category"] = every
    return result


READINGS: dict[str, Callable[[np.ndarray, Baseline], np.ndarray]] = {
    "raw (the model's map)": lambda m, _: m,
    "minus the mean": lambda m, b: m - b["mean"],
    "divided by the mean": lambda m, b: m / (b["mean"] + 1e-6),
    "z-score": lambda m, b: (m - b["mean"]) / b["spread"],
    "minus the mean's column profile": lambda m, b: m - b["columns"],
    "minus the mean's row profile": lambda m, b: m - b["rows"],
    "minus the mean of all categories": lambda m, b: m - b["every category"],
}
"""How a test map (fusions, H, W) is read against its category's normal baseline."""


def score(tests: list[tuple], base: dict[str, Baseline], reading: str, fusion: int) -> dict[str, float]:
    """Mean pixel AP over the categories with defects on each half, per-category held-out APs, held-out AUROC."""
    read = READINGS[reading]
    result: dict[str, float] = {}
    for half in HALVES:
        values = []
        for category in sorted(base):
            rows = [(read(m, base[c])[fusion], t) for c, h, m, t in tests if c == category and h == half]
            truth = np.concatenate([t.ravel() for _, t in rows])
            if truth.any():
                values.append(100 * average_precision_score(truth, np.concatenate([s.ravel() for s, _ in rows])))
                result[f"{half} {category}"] = values[-1]
        result[half] = float(np.mean(values))
    held = [(read(m, base[c])[fusion].max(), t.any()) for c, h, m, t in tests if h == "holdout"]
    result["holdout image AUROC"] = 100 * roc_auc_score([d for _, d in held], [s for s, _ in held])
    return result


def maxima(tests: list[tuple], category: str) -> dict[str, object]:
    """Where the raw paper map's maxima of ``category``'s test images sit."""
    rows = [(m[0], t) for c, _, m, t in tests if c == category]
    height, width = rows[0][0].shape
    places = [np.unravel_index(np.argmax(m), m.shape) for m, _ in rows]
    on_defect = [t[place] for (_, t), place in zip(rows, places, strict=True) if t.any()]
    return {
        "images": len(rows),
        "on a defect pixel": 100 * float(np.mean(on_defect)) if on_defect else float("nan"),
        "in the top/bottom rows": 100 * float(np.mean([y < EDGE_ROWS or y >= height - EDGE_ROWS for y, _ in places])),
        "columns": np.histogram([x for _, x in places], bins=16, range=(0, width))[0].tolist(),
    }


def choices(rows: list[dict[str, object]]) -> list[str]:
    """Markdown: for each set of :data:`CHOICE_READINGS`, the fusion and reading the select half ranks first."""
    lines = [
        "",
        "## What the select half would choose",
        "",
        "Among the fusions above, read as each set of readings allows; the select half's best (as `auto` chooses, "
        "by the geometric mean of the categories' pixel AP; `auto` bins the scores and finds each image's category "
        "from its descriptors, so its own numbers differ slightly).",
        "",
        "| readings offered | chosen | select pAP, geometric mean | select pAP | held-out pAP | held-out image AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for offered, readings in CHOICE_READINGS.items():
        best = max((row for row in rows if row["reading"] in readings), key=geometric_mean_select)
        lines.append(
            f"| {offered} | {best['fusion']}, {best['reading']} | {geometric_mean_select(best):.2f} | "
            f"{best['select']:.2f} | {best['holdout']:.2f} | {best['holdout image AUROC']:.2f} |"
        )
    return lines


def geometric_mean_select(row: dict[str, object]) -> float:
    """The geometric mean of a row's per-category select-half pixel APs: what ``auto`` ranks by."""
    values = [float(value) for key, value in row.items() if key.startswith("select ")]
    return float(np.exp(np.mean(np.log(values))))


def main() -> None:
    parser = checkpoint_parser(__doc__, "aitex", "folder for maxima.md and maxima.csv")
    parser.add_argument("--candidates", action="store_true", help="score map_fusion auto's candidate fusions")
    args = parser.parse_args()
    model = UniAS.load_from_checkpoint(args.checkpoint).eval()
    fusions = candidate_fusions(model.model.head.architecture.levels) if args.candidates else FUSIONS
    datamodule = UnifiedFolder(root=args.root, eval_batch_size=2, num_workers=0)
    datamodule.setup()
    normal: dict[str, list[np.ndarray]] = {}
    paths = [str(p) for p in datamodule.train_data.samples.image_path]
    for start in range(0, len(paths), 4):
        chunk = paths[start : start + 4]
        for path, maps in zip(chunk, maps_of(model, [read_image(p) for p in chunk], fusions), strict=True):
            normal.setdefault(category_of(path), []).append(maps)
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    tests = []
    for batch in datamodule.test_dataloader():
        image, mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        with torch.no_grad():
            fused = torch.stack([m[:, 0] for m in model.model.fused_maps(image, fusions)], dim=1).numpy()
        for i, path in enumerate(batch.image_path):
            truth = (mask[i] > 0.5).numpy().reshape(fused.shape[-2:])
            tests.append((category_of(path), halves[str(path)], fused[i], truth))
    base = baselines(normal)
    categories = sorted(base)
    args.output.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Map maxima and normal baselines of {args.checkpoint.name} on {args.root}",
        "",
        f"`python benchmarks/map_maxima.py {args.checkpoint} --root {args.root} --output {args.output}"
        f"{' --candidates' if args.candidates else ''}` "
        f"({run_stamp()}). Maps at the working resolution; baselines from the {len(paths)} training images "
        f"({', '.join(f'{c}: {len(normal[c])}' for c in categories)}); {len(tests)} test images.",
        "",
        "## Where the paper map's maxima sit (all test images)",
        "",
        "| category | images | max on a defect pixel (% of defective images) | max in the top/bottom "
        f"{EDGE_ROWS} rows (%) | maxima per column bin (16 bins, left to right) |",
        "|---|---|---|---|---|",
    ]
    for category in categories:
        found = maxima(tests, category)
        lines.append(
            f"| {category} | {found['images']} | {found['on a defect pixel']:.0f} | "
            f"{found['in the top/bottom rows']:.0f} | {' '.join(map(str, found['columns']))} |"
        )
    rows = []
    for index, fusion in enumerate(fusions):
        lines += [
            "",
            f"## {fusion.name}",
            "",
            f"| reading | select pAP | held-out pAP | held-out per category ({' / '.join(categories)}) "
            "| held-out image AUROC |",
            "|---|---|---|---|---|",
        ]
        for reading in READINGS:
            result = score(tests, base, reading, index)
            per = " / ".join(f"{result[f'holdout {c}']:.2f}" for c in categories if f"holdout {c}" in result)
            lines.append(
                f"| {reading} | {result['select']:.2f} | {result['holdout']:.2f} | {per} | "
                f"{result['holdout image AUROC']:.2f} |"
            )
            rows.append({"fusion": fusion.name, "reading": reading, **{k: round(v, 4) for k, v in result.items()}})
    lines += choices(rows)
    (args.output / "maxima.md").write_text("\n".join(lines) + "\n")
    with (args.output / "maxima.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
