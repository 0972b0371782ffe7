"""One global threshold or one per category: image and pixel F1 of a unified UniAS model, per category.

    python benchmarks/category_thresholds.py --checkpoint CKPT --root DATA_ROOT [--name NAME]
    python benchmarks/category_thresholds.py --demo          # trains the embedded demo's model first

The test images are split in two halves (alternate images of every defect folder, ``_common.assign_halves``):
thresholds are fitted on the ``select`` half, exactly as UniAS's post-processor fits them on validation
(anomalib's F1-adaptive threshold on the raw scores: once over all categories, once per category), and
F1 is measured on the ``holdout`` half with each.  Image F1 labels images (score > threshold); pixel F1
labels the pixels of all holdout images (map > threshold).  Rows are appended to ``--output``
(``benchmarks/results/category_thresholds.md`` and ``.csv``), one run per data set.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from _common import REPO, RESULTS, assign_halves, run_stamp
from anomalib.data import ImageBatch
from anomalib.metrics import F1AdaptiveThreshold
from torchmetrics.functional.classification import binary_f1_score

from anomalib_unias import UniAS
from anomalib_unias.data import UnifiedFolder, generate_demo_dataset
from anomalib_unias.layout import category_of


@torch.no_grad()
def raw_predictions(model: UniAS, datamodule: UnifiedFolder) -> dict[str, list]:
    """Raw scores, maps, labels, masks, categories and halves of every test image (model resolution)."""
    model.eval()
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    out: dict[str, list] = {key: [] for key in ("score", "map", "label", "mask", "category", "half")}
    for batch in datamodule.test_dataloader():
        image, mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        prediction = model.model(image)
        out["score"] += prediction.pred_score.tolist()
        out["map"] += list(prediction.anomaly_map.squeeze(1))
        out["label"] += batch.gt_label.tolist()
        out["mask"] += list(mask.reshape(prediction.anomaly_map.squeeze(1).shape).bool())
        out["category"] += [category_of(path) for path in batch.image_path]
        out["half"] += [halves[str(path)] for path in batch.image_path]
    return out


def fit(data: dict[str, list], chosen: list[int]) -> tuple[float, float]:
    """Anomalib's F1-adaptive image and pixel thresholds of the images ``chosen`` (raw scores)."""
    image, pixel = (F1AdaptiveThreshold(fields=f, strict=False) for f in (["pred_score", "gt_label"],
                                                                            ["anomaly_map", "gt_mask"]))  # fmt: skip
    batch = ImageBatch(
        image=torch.zeros(len(chosen), 3, 1, 1),
        gt_label=torch.tensor([data["label"][i] for i in chosen]),
        gt_mask=torch.stack([data["mask"][i] for i in chosen]),
        anomaly_map=torch.stack([data["map"][i] for i in chosen]),
        pred_score=torch.tensor([data["score"][i] for i in chosen]),
    )
    image.update(batch)
    pixel.update(batch)
    return float(image.compute()), float(pixel.compute())


def f1(data: dict[str, list], chosen: list[int], thresholds: tuple[float, float]) -> tuple[float, float]:
    """Image and pixel F1 of the images ``chosen`` labelled with ``thresholds``."""
    scores = torch.tensor([data["score"][i] for i in chosen])
    labels = torch.tensor([data["label"][i] for i in chosen])
    maps = torch.stack([data["map"][i] for i in chosen]).flatten()
    masks = torch.stack([data["mask"][i] for i in chosen]).flatten()
    image_f1 = float(binary_f1_score((scores > thresholds[0]).long(), labels))
    pixel_f1 = float(binary_f1_score((maps > thresholds[1]).long(), masks.long())) if masks.any() else float("nan")
    return image_f1, pixel_f1


def measure(name: str, checkpoint: Path, root: Path) -> list[dict]:
    """The table rows of one data set: per category, F1 with the global and with its own thresholds."""
    model = UniAS.load_from_checkpoint(checkpoint)
    datamodule = UnifiedFolder(root=root, eval_batch_size=4, num_workers=0)
    datamodule.setup()
    data = raw_predictions(model, datamodule)
    index = {half: [i for i, h in enumerate(data["half"]) if h == half] for half in ("select", "holdout")}
    global_thresholds = fit(data, index["select"])
    rows = []
    for category in sorted(set(data["category"])):
        select = [i for i in index["select"] if data["category"][i] == category]
        holdout = [i for i in index["holdout"] if data["category"][i] == category]
        own = fit(data, select)
        global_f1, own_f1 = f1(data, holdout, global_thresholds), f1(data, holdout, own)
        rows.append(
            {
                "data": name,
                "category": category,
                "holdout images": len(holdout),
                "image F1 global": global_f1[0],
                "image F1 per category": own_f1[0],
                "pixel F1 global": global_f1[1],
                "pixel F1 per category": own_f1[1],
                "image threshold global / own": f"{global_thresholds[0]:.4g} / {own[0]:.4g}",
                "pixel threshold global / own": f"{global_thresholds[1]:.4g} / {own[1]:.4g}",
            }
        )
    return rows


def demo_checkpoint(work: Path) -> tuple[Path, Path]:
    """Train the embedded demo as its README command does; return (checkpoint, data root)."""
    root = generate_demo_dataset(work / "datasets" / "unias_demo")
    command = ["anomalib", "train", "--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(root),
               "--default_root_dir", str(work / "results")]  # fmt: skip
    subprocess.run(command, check=True, cwd=work)
    (checkpoint,) = (work / "results").rglob("latest/weights/lightning/model.ckpt")
    return checkpoint, root


def write(rows: list[dict], output: Path, command: str) -> str:
    """Append ``rows`` to the markdown and CSV tables under ``output``; return the markdown of these rows."""
    output.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    cells = [[f"{100 * v:.2f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    markdown_path, csv_path = output / "category_thresholds.md", output / "category_thresholds.csv"
    if not markdown_path.exists():
        markdown_path.write_text(
            "# One global threshold vs one per category (F1 in %, thresholds fitted on the select half of the "
            "test set, F1 on the holdout half)\n"
        )
        csv_path.write_text(",".join(keys) + "\n")
    section = [f"\n`{command}` ({run_stamp()})\n"]
    section += ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    section += ["| " + " | ".join(row) + " |" for row in cells]
    with markdown_path.open("a") as stream:
        stream.write("\n".join(section) + "\n")
    with csv_path.open("a") as stream:
        stream.writelines(",".join(row) + "\n" for row in cells)
    return "\n".join(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a UniAS checkpoint")
    parser.add_argument("--root", type=Path, help="its MVTec-layout data root")
    parser.add_argument("--name", default=None, help="data set name in the table (default: the root's name)")
    parser.add_argument("--demo", action="store_true", help="train the embedded demo's model and measure it")
    parser.add_argument("--work", type=Path, default=Path("runs") / "category_thresholds", help="--demo's folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.demo:
        checkpoint, root = demo_checkpoint(args.work.resolve())
    elif args.checkpoint and args.root:
        checkpoint, root = args.checkpoint, args.root
    else:
        parser.error("give --checkpoint and --root, or --demo")
    rows = measure(args.name or ("demo" if args.demo else root.name), checkpoint, root)
    print(write(rows, args.output, "python benchmarks/category_thresholds.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
