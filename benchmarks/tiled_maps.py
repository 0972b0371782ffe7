"""Score a trained UniAS checkpoint's maps under test-time tiling variants and map fusions, at the images' own size.

For choosing how a tiled model is read, without retraining: each variant re-cuts the test images into
tiles at a stride, blends overlapping tiles' maps (``uniform``: anomalib's plain average; ``pyramid``: the
window of :class:`anomalib_unias.tiling.TileGrid`, what UniAS does) and fuses the levels (the model's
own fusion, or ``--fusion``/``--levels``).  Maps are upsampled to each image's own size and scored there
(``--native``), so that models trained at different working resolutions compare on the same pixels; pixel
AP and image AUROC per category on each half of the test set (``_common.assign_halves``), and the seam
ratio: the image is cut into columns one tile stride wide (tile boundaries fall on their edges); on each
good test image, the median map value in the two pixel columns at each such edge over the median in the
columns' middle (the image's own left and right border columns left out); the median over the good images
(1 = no seam; medians, because the paper's product of four levels has outliers that swamp a mean).

    python benchmarks/tiled_maps.py CKPT --root ../shared/data/aitex --native --output results/tiled_maps.md

The checkpoint is any UniAS ``last.ckpt``/``model.ckpt``, e.g. of
``python benchmarks/quality.py --models unias ... --output DIR`` (``DIR/runs/unias/**/last.ckpt``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import HALVES, assign_halves, data_root, run_stamp
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.nn import functional as F  # noqa: N812

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import Fusion
from anomalib_unias.architecture import LEVEL_STRIDES
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.layout import category_of
from anomalib_unias.tiling import TileGrid

SCORED_AT = {True: "the images' own size", False: "the working resolution"}
SEAM_COLUMNS = 2
"""Pixel columns at each side of a tile that count as its seam."""


@torch.no_grad()
def tiled_map(
    model: UniAS, images: torch.Tensor, fusion: Fusion, stride: int, blend: str, pad: int = 0
) -> torch.Tensor:
    """The map (B, 1, H, W) of ``fusion`` for ``images`` cut into the model's tiles at ``stride``, blended by ``blend``.

    ``pad`` > 0 mirrors that many pixels of the image at every side before tiling and crops them off the map.
    """
    if pad:
        height, width = images.shape[-2:]
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        return tiled_map(model, padded, fusion, stride, blend)[..., pad : pad + height, pad : pad + width]
    grid = TileGrid(images.shape[-2:], model.model.input_size, (stride, stride), blend=blend).to(images.device)
    return model.model.fused_maps(images, [fusion], tiler=grid)[0]


def score(
    model: UniAS, datamodule: UnifiedFolder, fusion: Fusion, stride: int, blend: str, native: bool, pad: int = 0
) -> dict:
    """Pixel AP and image AUROC per category and half, the seam ratio and the seconds taken, for one variant."""
    halves = assign_halves(list(datamodule.test_data.samples.image_path))
    pixels: dict[tuple[str, str], list] = {}
    images: dict[tuple[str, str], list] = {}
    seam_ratios = []
    start = time.perf_counter()
    for batch in datamodule.test_dataloader():
        image, gt_mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        anomaly_map = tiled_map(model, image, fusion, stride, blend, pad)
        if native:
            anomaly_map = F.interpolate(anomaly_map, size=batch.image.shape[-2:], mode="bilinear")
            gt_mask = batch.gt_mask
        for index, path in enumerate(batch.image_path):
            key = (category_of(path), halves[str(path)])
            values = anomaly_map[index, 0]
            pixels.setdefault(key, []).append((values.numpy().ravel(), (gt_mask[index] > 0.5).numpy().ravel()))
            images.setdefault(key, []).append((float(values.max()), bool(batch.gt_label[index])))
            if not bool(batch.gt_label[index]):
                seam_ratios += seam_ratio(values, stride * values.shape[-1] // image.shape[-1])
    result: dict = {"seconds": round(time.perf_counter() - start, 1)}
    for half in HALVES:
        categories = sorted({category for category, h in pixels if h == half})
        aps, aurocs = {}, {}
        for category in categories:
            scores = np.concatenate([s for s, _ in pixels[category, half]])
            labels = np.concatenate([m for _, m in pixels[category, half]])
            aps[category] = 100 * average_precision_score(labels, scores) if labels.any() else float("nan")
            image_scores, image_labels = zip(*images[category, half], strict=True)
            two_classes = 0 < sum(image_labels) < len(image_labels)
            aurocs[category] = 100 * roc_auc_score(image_labels, image_scores) if two_classes else float("nan")
        result[half] = {
            "pAP": float(np.nanmean(list(aps.values()))),
            "image_AUROC": float(np.nanmean(list(aurocs.values()))),
            "pAP_per_category": aps,
        }
    if seam_ratios:
        result["seam_ratio"] = float(np.median(seam_ratios))
    return result


def seam_ratio(anomaly_map: torch.Tensor, step: int) -> list[float]:
    """``[edge / middle]`` of one (H, W) map cut into columns ``step`` pixels wide; ``[]`` if it has no inner column.

    The image's first and last columns are left out (its own borders are not seams).
    """
    columns = anomaly_map[:, : anomaly_map.shape[-1] // step * step].unflatten(-1, (-1, step))[:, 1:-1]
    if columns.shape[1] == 0:
        return []
    middle = step // 2
    edge = torch.cat([columns[..., :SEAM_COLUMNS], columns[..., -SEAM_COLUMNS:]], dim=-1).median()
    return [float(edge / columns[..., middle - SEAM_COLUMNS : middle + SEAM_COLUMNS].median())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="UniAS checkpoint (.ckpt)")
    parser.add_argument("--root", default=str(data_root("aitex")), help="MVTec-layout dataset root")
    parser.add_argument(
        "--variants", nargs="+", default=["128:uniform", "64:uniform", "64:pyramid"], metavar="STRIDE:BLEND[:PAD]"
    )
    parser.add_argument("--fusion", choices=("product", "mean"), help="override the model's map fusion")
    parser.add_argument("--levels", nargs="+", type=int, help="with --fusion: levels fused (0 = stride 16)")
    parser.add_argument("--native", action="store_true", help="score at the images' own size (maps upsampled)")
    parser.add_argument("--eval-batch-size", type=int, default=2, help="1 for folders of mixed image sizes")
    parser.add_argument("--output", help="write the table (.md) and the numbers (.json beside it)")
    args = parser.parse_args()
    model = UniAS.load_from_checkpoint(args.checkpoint).eval()
    fusion = model.model.head.anomaly_map.fusion  # the model's own, or the one asked for (the model is not changed)
    if args.fusion:
        strides = [LEVEL_STRIDES[level] for level in args.levels] if args.levels else LEVEL_STRIDES
        fusion = Fusion(args.fusion, tuple(strides))
    datamodule = UnifiedFolder(root=args.root, eval_batch_size=args.eval_batch_size, num_workers=0)
    datamodule.setup()
    rows = {}
    for variant in args.variants:
        stride, blend, *pad = variant.split(":")
        rows[variant] = score(model, datamodule, fusion, int(stride), blend, args.native, int(pad[0]) if pad else 0)
        print(variant, json.dumps(rows[variant]), flush=True)
    lines = [
        f"# Tiling variants of {args.checkpoint}",
        "",
        f"Command: `python benchmarks/tiled_maps.py {args.checkpoint} --root {args.root} --variants "
        f"{' '.join(args.variants)}{' --native' if args.native else ''}"
        f"{f' --fusion {args.fusion}' if args.fusion else ''}"
        f"{' --levels ' + ' '.join(map(str, args.levels)) if args.levels else ''}`; "
        f"{run_stamp()}.",
        f"Model: image_size {list(model.model.image_size)}, tiles {list(model.model.input_size)}, map "
        f"{fusion.name}; maps scored at "
        f"{SCORED_AT[args.native]}; values in %.",
        "",
        "| stride:blend | pAP select | pAP holdout | image AUROC select | image AUROC holdout | seam ratio | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, row in rows.items():
        lines.append(
            f"| {variant} | {row['select']['pAP']:.2f} | {row['holdout']['pAP']:.2f} | "
            f"{row['select']['image_AUROC']:.2f} | {row['holdout']['image_AUROC']:.2f} | "
            f"{row.get('seam_ratio', float('nan')):.2f} | {row['seconds']:.0f} |"
        )
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n".join(lines) + "\n")
        output.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
