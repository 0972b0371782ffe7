"""The report of ``quality.py``: the jobs' JSON files as markdown and CSV tables, the curve and the map panel."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import cpu_name
from _quality_scoring import CURVE_METRICS, METRICS

LABELS = {"unias": "UniAS", "patchcore": "PatchCore", "padim": "PaDiM"}


def write_report(output: Path, names: Sequence[str]) -> str:
    """Collect the jobs' JSON files into the markdown/CSV tables and the two PNGs; return the markdown."""
    jobs = {
        name: json.loads((output / f"{name}.json").read_text()) for name in names if (output / f"{name}.json").exists()
    }
    markdown = main_table(output, jobs)
    per_defect = per_defect_table(output, jobs)
    markdown += per_category_table(output, jobs)
    (output / "quality.md").write_text(markdown)
    if "unias" in jobs:
        plot_learning_curve(output, jobs)
    plot_panel(output, [name for name in ("unias", "patchcore") if (output / f"{name}_maps.npz").exists()])
    markdown += levels_table(output, jobs)
    return markdown + "\n" + per_defect


def main_table(output: Path, jobs: dict[str, dict]) -> str:
    """``quality.csv`` and the markdown of the main table (one row per model), its settings and test images."""
    header = ["model", *METRICS, "train_s", "test_s", "peak_rss_gb", "input_size", "settings"]
    csv_rows = [",".join(header)]
    columns = ["model", "pAP", "DSC", "F1max-Dice", "image AUROC", "pixel AUROC", "AUPRO"]
    columns += ["training (s)", "test (s)", "peak RSS (GB)"]
    run = next(iter(jobs.values()))["summary"].get("run")
    # Result files written before run_stamp() existed keep date, commit and CPU apart.
    stamp = run and (run.get("stamp") or f"{run['date']}, commit {run['commit']}, {run['cpu']}")
    lines = [f"Command: `{run['command']}`; {stamp}.", ""] if run else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, job in jobs.items():
        summary = job["summary"]
        values = [f"{100 * summary[m]:.2f}" for m in METRICS]
        times = [str(summary["train_seconds"]), str(summary["test_seconds"]), str(summary["peak_rss_gb"])]
        lines.append(
            f"| {LABELS[name]} | "
            + " | ".join(values)
            + f" | {summary['train_seconds']:.0f} | {summary['test_seconds']:.0f} | {summary['peak_rss_gb']:.2f} |"
        )
        settings = "; ".join(f"{k}={v}" for k, v in summary["settings"].items()).replace(",", " ")
        csv_rows.append(",".join([LABELS[name], *values, *times, "x".join(map(str, summary["input_size"])), settings]))
    lines.append("")
    for name, job in jobs.items():
        settings = ", ".join(f"{k}={v}" for k, v in job["summary"]["settings"].items())
        lines.append(f"- {LABELS[name]}: {settings}")
    test_images = {job["summary"]["test_images"] for job in jobs.values()}
    first = next(iter(jobs.values()))["summary"]
    tiling = (
        f"; images resized to {'x'.join(map(str, first['image_size']))}, tiles of "
        f"{'x'.join(map(str, first['input_size']))} (UniAS: at stride {'x'.join(map(str, first['tile_stride']))}, "
        "blended; the baselines: anomalib's non-overlapping tiles)"
        if first.get("image_size", first["input_size"]) != first["input_size"]
        else ""
    )
    lines.append(
        f"- test images: {', '.join(map(str, test_images))} (the held-out half of the test set); input size "
        f"{'x'.join(map(str, first['input_size']))}{tiling}; CPU: {cpu_name()}, {os.cpu_count()} cores"
    )
    (output / "quality.csv").write_text("\n".join(csv_rows) + "\n")
    return "\n".join(lines) + "\n"


def per_defect_table(output: Path, jobs: dict[str, dict]) -> str:
    """``per_defect.md`` / ``.csv``: pAP per defect type (that type's images plus the good ones); the table."""
    defects = sorted({d for job in jobs.values() for d in job["per_defect"]})
    per_defect = ["| model | " + " | ".join(defects) + " |", "|---" * (len(defects) + 1) + "|"]
    per_defect_csv = [",".join(["model", *defects])]
    for name, job in jobs.items():
        cells = [f"{100 * job['per_defect'].get(d, float('nan')):.2f}" for d in defects]
        per_defect.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        per_defect_csv.append(",".join([LABELS[name], *cells]))
    (output / "per_defect.csv").write_text("\n".join(per_defect_csv) + "\n")
    (output / "per_defect.md").write_text(
        "pAP (%) per defect type: that type's test images plus all good test images.\n\n" + "\n".join(per_defect) + "\n"
    )
    return "\n".join(per_defect) + "\n"


def per_category_table(output: Path, jobs: dict[str, dict]) -> str:
    """``per_category.md`` / ``.csv`` where there are several categories: pAP and F1max-Dice of each; the table."""
    categories = sorted(
        {key.split("/", 1)[1] for job in jobs.values() for key in job.get("per_category", {}) if "/" in key}
    )
    if len(categories) <= 1:
        return ""
    header = "| model | " + " | ".join(f"{c} pAP | {c} F1max-Dice" for c in categories) + " |"
    table = [header, "|---" * (2 * len(categories) + 1) + "|"]
    csv_lines = [",".join(["model", *(f"{c} {m}" for c in categories for m in ("pAP", "F1max_Dice"))])]
    for name, job in jobs.items():
        values = job.get("per_category", {})
        cells = [
            f"{100 * values.get(f'{metric}/{c}', float('nan')):.2f}"
            for c in categories
            for metric in ("pixel_AP", "F1max_Dice")
        ]
        table.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        csv_lines.append(",".join([LABELS[name], *cells]))
    (output / "per_category.csv").write_text("\n".join(csv_lines) + "\n")
    (output / "per_category.md").write_text("Per category (%), held-out test half.\n\n" + "\n".join(table) + "\n")
    return "\n" + "\n".join(table) + "\n"


def levels_table(output: Path, jobs: dict[str, dict]) -> str:
    """``levels.md``: every map fusion of the UniAS model on both halves (categories pooled); the table."""
    if "unias" not in jobs or not jobs["unias"].get("levels"):
        return ""
    title = "UniAS map of the final model (test set, categories pooled as one, working resolution)"
    diagnostics = [f"| {title} | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    diagnostics += [
        f"| {fusion} | " + " | ".join(f"{100 * values[m]:.2f}" for m in METRICS) + " |"
        for fusion, values in jobs["unias"]["levels"].items()
    ]
    (output / "levels.md").write_text("\n".join(diagnostics) + "\n")
    return "\n" + "\n".join(diagnostics) + "\n"


def plot_learning_curve(output: Path, jobs: dict[str, dict]) -> None:
    """UniAS test pAP against training minutes (and epochs), baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = jobs["unias"]["curve"]
    (output / "learning_curve.csv").write_text(
        "epoch,train_seconds,train_loss,"
        + ",".join(CURVE_METRICS)
        + "\n"
        + "".join(
            f"{r['epoch']},{r['train_seconds']},{r['train_loss']:.5f},"
            + ",".join(f"{100 * r.get(m, float('nan')):.2f}" for m in CURVE_METRICS)
            + "\n"
            for r in curve
        )
    )
    figure, axis = plt.subplots(figsize=(7, 4.2))
    minutes = [r["train_seconds"] / 60 for r in curve]
    pixel_ap = [100 * r["pixel_AP"] for r in curve]
    axis.plot(minutes, pixel_ap, "o-", color="tab:red", label="UniAS (test pAP, categories pooled)")
    for epoch, x, r in zip([r["epoch"] for r in curve], minutes, curve, strict=True):
        axis.annotate(
            f"ep {epoch}", (x, 100 * r["pixel_AP"]), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center"
        )
    for name, color in (("patchcore", "tab:blue"), ("padim", "tab:green")):
        if name in jobs:
            axis.axhline(
                100 * jobs[name]["summary"]["pixel_AP"],
                color=color,
                linestyle="--",
                label=f"{LABELS[name]} (fit {jobs[name]['summary']['train_seconds'] / 60:.0f} min)",
            )
    axis.set_xlabel("UniAS training wall time (min, 2 CPU cores)")
    axis.set_ylabel("pixel AP (%)")
    axis.set_title("Test pAP during training")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "learning_curve.png", dpi=120)
    plt.close(figure)


def defect_window(mask: np.ndarray, context: int = 3, min_side: int = 96) -> tuple[slice, slice]:
    """The part of an image worth showing: ``context`` times the defect's box, at least ``min_side`` px.

    A 4096 x 256 strip with a 10-px defect is unreadable whole; small images are shown whole.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    window = []
    for positions, length in ((rows, mask.shape[0]), (cols, mask.shape[1])):
        centre = (int(positions.min()) + int(positions.max())) // 2
        side = min(length, max(min_side, context * (int(positions.max()) - int(positions.min()) + 1)))
        start = min(max(0, centre - side // 2), length - side)
        window.append(slice(start, start + side))
    return window[0], window[1]


def plot_panel(output: Path, names: Sequence[str]) -> None:
    """Image, ground truth and each model's map for the panel images (two per defect type)."""
    if not names:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    data = {name: np.load(output / f"{name}_maps.npz") for name in names}
    paths = [str(p) for p in data[names[0]]["paths"]]
    columns = 2 + len(names)
    crops = [defect_window(mask) for mask in data[names[0]]["masks"]]
    aspect = max((window[1].stop - window[1].start) / (window[0].stop - window[0].start) for window in crops)
    cell = (2.1 * min(aspect, 3.0), 2.1)
    figure, axes = plt.subplots(len(paths), columns, figsize=(cell[0] * columns, cell[1] * len(paths)), squeeze=False)
    for row, (path, window) in enumerate(zip(paths, crops, strict=True)):
        mask = data[names[0]]["masks"][row]
        image = Image.open(path).convert("RGB").resize(mask.shape[::-1])
        zoom = "" if window == (slice(0, mask.shape[0]), slice(0, mask.shape[1])) else " (zoom)"
        panels = [
            (np.asarray(image)[window], f"{Path(path).parent.name}/{Path(path).name}{zoom}", None),
            (mask[window], "ground truth", "gray"),
        ]
        panels += [(data[name]["maps"][row][window], LABELS[name], "jet") for name in names]
        for column, (picture, title, cmap) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(picture, cmap=cmap, aspect="equal")
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    figure.suptitle("each map scaled to its own range", fontsize=8)
    figure.savefig(output / "anomaly_maps.png", dpi=80)
    plt.close(figure)
