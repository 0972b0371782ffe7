"""What the tiles lose on Magnetic Tile Defects: the 128 x 128 squash against tiled variants at equal training time.

    python benchmarks/tiling_diagnosis.py                # eight UniAS runs of configs/mtd.yaml, ~155 min on 2 cores
    python benchmarks/tiling_diagnosis.py --epochs 2     # a smoke test of this script
    python benchmarks/tiling_diagnosis.py --variants squash_128 tiled_256_every_tile --seeds 133 5 7 \
        --output benchmarks/results/mtd_tiled_seeds     # the squash against the best tiled variant over seeds

Each variant is one ``python benchmarks/quality.py --models unias`` run (``configs/mtd.yaml`` with ``--set``
overrides, the same seed, data and halves), in its own folder under ``--output``.  The variants separate the
three things a tiled model changes at once:

* the scale: ``squash_256`` sees the images at twice the squash's resolution with no tiles at all;
* the tiles: ``tiled_256_every_tile`` cuts that same 256 x 256 image into its four 128-px tiles and trains on all
  of them, so it differs from ``squash_256`` only by the tile borders (zero padding inside the image) and the
  smaller context of each query;
* the sampling: ``tiled_256_random_tile`` trains on one random tile position per image per step (the cost of a
  squash step), and ``..._overlap`` tests it with half-overlapping tiles blended by the pyramid window; two rows
  separate what differs between it and ``tiled_256_every_tile``: ``tiled_256_grid_tile`` cuts its one tile at
  the test grid's positions (``train_tile_positions: grid``), ``tiled_256_four_random_tiles`` takes every-tile's
  batch and steps with tiles cut anywhere.

Every run also scores its own map at each image's own size (the map resized to it, the mask file as it is), so
that the squash and the tiled models, worked at different resolutions, are graded on the same pixels; with
``--seeds`` each variant runs once per seed and the table adds each variant's mean over them.

A variant whose step costs ``k`` times the squash's gets ``1/k`` of its epochs (``--epochs`` is the squash's), so
each trains for about the same wall time; the table says the measured time.  One row breaks that rule on purpose:
``tiled_256_every_tile_equal_epochs`` trains every tile for the squash's epochs, so the tiled model sees each part
of each image as often as the squash does, at four times the compute.  Writes ``diagnosis.md`` and
``diagnosis.csv`` to ``--output`` (default ``benchmarks/results/mtd_tiled_diagnosis``).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

from _common import QUALITY_SEED, REPO, RESULTS, data_root, run_stamp

VARIANTS = {
    "squash_128": ("the shipped squash (reference)", {"image_size": "[128,128]", "train_tiles": "null"}, 1),
    "squash_256": (
        "twice the resolution, no tiles",
        {"input_size": "[256,256]", "image_size": "[256,256]", "train_tiles": "null"},
        4,
    ),
    "tiled_256_every_tile": (
        "256 in four 128-px tiles, every tile per step",
        {"image_size": "[256,256]", "train_tiles": "null"},
        4,
    ),
    "tiled_256_random_tile": (
        "256 in 128-px tiles, one random tile per image per step",
        {"image_size": "[256,256]", "train_tiles": "1"},
        1,
    ),
    "tiled_256_grid_tile": (
        "256 in 128-px tiles, one of the four grid tiles per image per step",
        {"image_size": "[256,256]", "train_tiles": "1", "train_tile_positions": "grid"},
        1,
    ),
    "tiled_256_four_random_tiles": (
        "256 in 128-px tiles, four random tiles per image per step (every-tile's batch and steps)",
        {"image_size": "[256,256]", "train_tiles": "4"},
        4,
    ),
    "tiled_256_random_tile_overlap": (
        "tiled_256_random_tile tested with half-overlapping tiles (stride 64, pyramid blend)",
        {"image_size": "[256,256]", "train_tiles": "1", "tile_stride": "[64,64]"},
        1,
    ),
    "tiled_256_every_tile_equal_epochs": (
        "256 in four 128-px tiles, every tile per step, for the squash's epochs (four times its training time)",
        {"image_size": "[256,256]", "train_tiles": "null"},
        1,
    ),
}
"""Variant -> (what it tests, UniAS overrides of configs/mtd.yaml, cost of a training step against the squash's)."""
LEARNING_RATE = "5e-4"
"""Every variant's learning rate, whatever ``configs/mtd.yaml`` ships: the rate the table's first rows trained at."""
FIXED_FUSIONS = ("product", "mean_16_8", "stride16 alone")
"""Fixed fusions reported beside the recipe's own choice (``map_fusion: auto``), on the held-out half."""


def run_variant(name: str, overrides: dict[str, str], epochs: int, folder: Path, root: str, seed: int) -> None:
    """One ``quality.py`` UniAS run of ``configs/mtd.yaml`` with ``overrides`` and ``seed``, into ``folder``."""
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "quality.py"),
        "--models",
        "unias",
        "--root",
        root,
        "--curve-points",
        "1",
        "--max-epochs",
        str(epochs),
        "--output",
        str(folder),
        "--seed",
        str(seed),
        "--set",
        f"learning_rate={LEARNING_RATE}",
        *(f"{key}={value}" for key, value in overrides.items()),
    ]
    print(f"=== {name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def finished(folder: Path, epochs: int) -> bool:
    """Whether ``folder`` holds a finished run of ``epochs`` epochs."""
    result = folder / "unias.json"
    return result.exists() and json.loads(result.read_text())["summary"]["settings"]["max_epochs"] == epochs


def folder_name(variant: str, seed: int) -> str:
    """A run's folder: the variant's name, with the seed where it is not quality.py's default."""
    return variant if seed == QUALITY_SEED else f"{variant}_seed{seed}"


def table_row(name: str, what: str, epochs: int, seed: int, output: Path) -> dict[str, object]:
    """The run's numbers from its ``unias.json``: held-out pAP of the chosen and of fixed fusions, times."""
    job = json.loads((output / folder_name(name, seed) / "unias.json").read_text())
    summary, levels = job["summary"], job["levels"]
    at_image_size = job.get("pixel_AP_at_image_size", {}).get("configured (holdout)")
    row: dict[str, object] = {
        "variant": name,
        "seed": seed,
        "what it tests": what,
        "input_size": "x".join(map(str, summary["input_size"])),
        "image_size": "x".join(map(str, summary["image_size"])),
        "tile_stride": "x".join(map(str, summary["tile_stride"])),
        "epochs": epochs,
        "training (s)": round(summary["train_seconds"]),
        "test (s)": round(summary["test_seconds"]),
        "map chosen": summary["settings"]["map"],
        # The chosen map scored as the model makes it: before 2026-12-07 anomalib's test read a z-scored map after
        # the post-processor, which tied every pixel below its normal mean at 0 (normal_maps.score_against_normal).
        "pAP held-out": round(100 * levels["configured (holdout)"]["pixel_AP"], 2),
        "pAP select": round(100 * levels["configured (select)"]["pixel_AP"], 2),
        # Runs older than this column did not score it: n/a, never a number from another resolution.
        "pAP held-out, images' own size": "n/a" if at_image_size is None else round(100 * at_image_size, 2),
    }
    for fusion in FIXED_FUSIONS:
        row[f"{fusion} held-out"] = round(100 * levels[f"{fusion} (holdout)"]["pixel_AP"], 2)
    return row


def write_tables(rows: list[dict[str, object]], output: Path, command: str) -> str:
    """``diagnosis.csv`` and ``diagnosis.md`` in ``output``; returns the Markdown."""
    with (output / "diagnosis.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = [
        f"Command: `{command}`; {run_stamp()}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows),
        *seed_summary(rows),
        "",
        "pAP: pixel AP at the working resolution (mean over the data set's categories) on the held-out half of the "
        "test set, of the model's own map (each run's `levels.md`, `configured`); the select half chose the map "
        "(`map_fusion: auto`); fixed fusions are scored on the same weights. Rows trained before commit cf29ddb with "
        "a z-scored map chosen read 0.4-0.5 lower in their own `quality.md` (anomalib's test saw that map after a "
        "post-processor that tied the negative z-scores at 0). `pAP held-out, images' own size`: the same map resized "
        "(bilinear) to each image's own size and scored against the mask file as it is, so that models worked at "
        "different resolutions are graded on the same pixels (`_quality_scoring.ImageSizePixelAP`).",
    ]
    text = "\n".join(lines) + "\n"
    (output / "diagnosis.md").write_text(text)
    return text


def seed_summary(rows: list[dict[str, object]]) -> list[str]:
    """Markdown lines: each variant's held-out pAP over its seeds (mean, lowest, highest), where it has several."""
    by_variant: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_variant.setdefault(str(row["variant"]), []).append(row)
    if all(len(runs) < 2 for runs in by_variant.values()):
        return []
    columns = ("pAP held-out", "pAP held-out, images' own size")
    lines = [
        "",
        "Over seeds (held-out pAP: mean, lowest-highest):",
        "",
        "| variant | seeds | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for variant, runs in by_variant.items():
        cells = []
        for column in columns:
            values = [float(run[column]) for run in runs if run[column] != "n/a"]
            cells.append(f"{mean(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "n/a")
        seeds = ", ".join(str(run["seed"]) for run in runs)
        lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="the squash's epochs (others: scaled by step cost)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[QUALITY_SEED], help="one run per variant and seed")
    parser.add_argument("--root", default=str(data_root("mtd")), help="MVTec-layout dataset root (default: MTD)")
    parser.add_argument("--output", default=str(RESULTS / "mtd_tiled_diagnosis"))
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            what, overrides, cost = VARIANTS[name]
            epochs = max(1, round(args.epochs / cost))
            if not finished(output / folder_name(name, seed), epochs):  # a rerun continues where the last stopped
                run_variant(name, overrides, epochs, output / folder_name(name, seed), args.root, seed)
            rows.append(table_row(name, what, epochs, seed, output))
    command = "python benchmarks/tiling_diagnosis.py"
    for flag in ("epochs", "variants", "seeds", "output"):
        value = getattr(args, flag)
        if value != parser.get_default(flag):
            command += f" --{flag} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
    print(write_tables(rows, output, command))


if __name__ == "__main__":
    main()
