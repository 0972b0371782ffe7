"""Let ``map_fusion: auto`` choose a trained checkpoint's map again, with the candidates of the code as it is now.

For a checkpoint trained before a change to the candidates (e.g. the z-scored maps of
:mod:`anomalib_unias.normal_maps`), without training again: the checkpoint is loaded, validated on the select half
of the test set (``FusionChoice`` chooses there, as at the end of training, and the thresholds are fitted), and the
chosen map is scored on both halves with ``quality.py``'s metrics (``_quality_scoring.evaluate``), beside the
checkpoint's own earlier choice.

    python benchmarks/rechoose_map.py CKPT --root ../shared/data/mtd --output benchmarks/results/OUT.md
    python benchmarks/rechoose_map.py CKPT ... --normal-readings z-score ratio   # offer other normal readings
    python benchmarks/rechoose_map.py CKPT ... --save-checkpoint rechosen.ckpt   # e.g. for int8_accuracy.py

``--normal-readings`` sets the model's ``map_normal_readings`` before choosing (the checkpoint's otherwise).
``--save-checkpoint`` writes the model with its new choice and the thresholds fitted on the select half.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from _common import checkpoint_parser, run_stamp
from _quality_scoring import evaluate, keep_half
from anomalib.engine import Engine
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_unias import UniAS
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.normal_maps import NORMAL_READINGS

METRICS = ("pixel_AP", "F1max_Dice", "image_AUROC")
"""Scored on each half (anomalib's metric names)."""


def scores(model: UniAS, datamodule: UnifiedFolder) -> dict[str, dict[str, float]]:
    """The model's own map on each half, each metric the mean over the categories: ``{half: {metric: %}}``."""
    found = evaluate(model, datamodule, fusions=("configured",), metrics=METRICS, per_category=True)
    return {name.split("(")[1].rstrip(")"): {k: 100 * v for k, v in values.items()} for name, values in found.items()}


def main() -> None:
    parser = checkpoint_parser(__doc__, "mtd", "result file (markdown)")
    parser.add_argument("--normal-readings", nargs="*", choices=NORMAL_READINGS, help="map_normal_readings offered")
    parser.add_argument("--save-checkpoint", type=Path, help="where to write the checkpoint with the new choice")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = UniAS.load_from_checkpoint(args.checkpoint)
    head = model.model.head
    if not head.architecture.fuses_automatically:
        raise SystemExit(f"{args.checkpoint} was not trained with map_fusion: auto; there is no choice to make again.")
    if args.normal_readings is not None:
        head.architecture = replace(head.architecture, map_normal_readings=tuple(args.normal_readings))
    datamodule = UnifiedFolder(root=args.root, eval_batch_size=4, num_workers=0)
    datamodule.setup(TrainerFn.FITTING)
    keep_half(datamodule.val_data, "select")
    before_fusion = model.model.head.anomaly_map.fusion
    before = scores(model, datamodule)
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    default_root_dir=args.output.parent / "runs")  # fmt: skip
    engine.validate(model=model, datamodule=datamodule, verbose=False)
    after_fusion = model.model.head.anomaly_map.fusion
    after = scores(model, datamodule)
    if args.save_checkpoint is not None:
        engine.trainer.save_checkpoint(args.save_checkpoint)
    lines = [
        f"# `map_fusion: auto` chosen again for {args.checkpoint.name} on {args.root}",
        "",
        f"`python benchmarks/rechoose_map.py {args.checkpoint} --root {args.root} --output {args.output}"
        + (f" --normal-readings {' '.join(args.normal_readings)}" if args.normal_readings is not None else "")
        + f"` (readings offered: {list(head.architecture.map_normal_readings)}; {run_stamp()}). "
        "The choice on the select half (validation), the metrics of the model's map on each half (%, each "
        "the mean over the categories, as `quality.py`'s headline).",
        "",
        "| choice | map | select pAP | held-out pAP | held-out F1max-Dice | held-out image AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for label, fusion, values in (("in the checkpoint", before_fusion, before), ("chosen now", after_fusion, after)):
        lines.append(
            f"| {label} | {fusion.name} | {values['select']['pixel_AP']:.2f} | {values['holdout']['pixel_AP']:.2f} | "
            f"{values['holdout']['F1max_Dice']:.2f} | {values['holdout']['image_AUROC']:.2f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
