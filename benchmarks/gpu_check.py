"""One short check of UniAS on a CUDA GPU: parity, inference and training speed, AMP, a short MTD training.

    bash benchmarks/gpu_check.sh            # everything, under 10 minutes on one modern GPU
    python benchmarks/gpu_check.py --quick  # the same code paths at tiny sizes (also on CPU)

Prints a table per part and writes ``benchmarks/results/gpu_check.md``.  Parts:

1. golden parity on the GPU (``tests/test_parity.py`` with ``UNIAS_PARITY_DEVICE=cuda``, TF32 off);
2. inference (eval forward of the whole UniAS model, B4, 224 x 224, paper widths, random weights) at
   batch 1 and 32 in FP32, AMP bfloat16 and AMP float16: images/s and peak memory;
3. the training step (forward, backward, clipping, AdamW) at the paper's batch 64 in FP32 / AMP;
4. a short unified training on Magnetic Tile Defects (``--mtd-steps`` steps, Lite0 weights bundled,
   paper widths at 224) and its test pAP, through anomalib's Engine;
5. a 2-process DDP smoke (``anomalib train`` on the demo data) if two GPUs exist.

Without a CUDA device the script says so and, with ``--quick``, runs parts 2-4 on the CPU at tiny sizes
(a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import REPO, RESULTS, data_root, median_seconds

MTD = data_root("mtd")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def autocast(device: torch.device, precision: str):  # noqa: ANN201
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_model(device: torch.device, quick: bool):  # noqa: ANN201
    from anomalib_unias import UniAS

    settings = (
        {"backbone": "tf_efficientnet_lite0", "input_size": (64, 64), "pixel_dim": 32, "hidden_dim": 32, "ffn_dim": 64,
         "num_encoder_layers": 1, "neighbour_size": 3}
        if quick
        else {"backbone": "tf_efficientnet_b4", "pre_trained": False}
    )  # fmt: skip
    return UniAS(**settings, pre_trained=False).to(device), settings.get("input_size", (224, 224))


def inference_table(device: torch.device, quick: bool, repeats: int) -> list[str]:
    model, size = build_model(device, quick)
    model.eval()
    rows = ["| precision | batch | images/s | ms/image | peak memory (GB) |", "|---|---|---|---|---|"]
    for precision in ("fp32", "bf16", "fp16"):
        for batch in (1, 32 if not quick else 4):
            images = torch.rand(batch, 3, *size, device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

            def run(images: torch.Tensor = images, precision: str = precision) -> None:
                with torch.inference_mode(), autocast(device, precision):
                    model.model(images)

            seconds = median_seconds(run, repeats, warmups=2, wait=lambda: synchronise(device))
            rows.append(
                f"| {precision} | {batch} | {batch / seconds:.1f} | {1000 * seconds / batch:.2f} | "
                f"{peak_memory_gb(device):.2f} |"
            )
    return rows


def training_table(device: torch.device, quick: bool, repeats: int) -> list[str]:
    model, size = build_model(device, quick)
    optimizer = model.configure_optimizers()["optimizer"]
    batch = 64 if not quick else 4
    images = torch.rand(batch, 3, *size, device=device)
    rows = ["| precision | batch | s/step | images/s | peak memory (GB) |", "|---|---|---|---|---|"]
    for precision in ("fp32", "bf16", "fp16"):
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step(precision: str = precision, scaler: torch.amp.GradScaler = scaler) -> None:
            optimizer.zero_grad()
            with autocast(device, precision):
                loss, _ = model.model(images)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            model.configure_gradient_clipping(optimizer, 0.1, "norm")
            scaler.step(optimizer)
            scaler.update()

        seconds = median_seconds(step, repeats, warmups=2, wait=lambda: synchronise(device))
        rows.append(f"| {precision} | {batch} | {seconds:.3f} | {batch / seconds:.1f} | {peak_memory_gb(device):.2f} |")
    return rows


def mtd_training(device: torch.device, quick: bool, steps: int) -> list[str]:
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_unias import UniAS
    from anomalib_unias.data import UniASDemo, UnifiedFolder

    seed_everything(133)
    if MTD.is_dir() and not quick:
        datamodule = UnifiedFolder(MTD, train_batch_size=64, eval_batch_size=64, num_workers=8)
        model = UniAS(backbone="tf_efficientnet_lite0", lr_schedule="cosine", learning_rate=5e-4)
        name = "MTD"
    else:
        datamodule = UniASDemo(root=REPO / "datasets" / "unias_demo", train_batch_size=8, num_workers=0)
        model = UniAS(
            backbone="tf_efficientnet_lite0",
            input_size=(64, 64),
            pixel_dim=32,
            hidden_dim=32,
            ffn_dim=64,
            num_encoder_layers=1,
            neighbour_size=3,
        )
        name = "demo (MTD not found or --quick)"
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    engine = Engine(
        max_steps=steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=REPO / "results" / "gpu_check",
        check_val_every_n_epoch=10**6,
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    results = engine.test(model, datamodule=datamodule, verbose=False)[0]
    metrics = ("pixel_AP", "DSC", "F1max_Dice", "image_AUROC")
    values = " | ".join(f"{100 * results[f'{metric}/mean']:.2f}" for metric in metrics)
    return [
        "| data | steps | fit (s) | pAP | DSC | F1max-Dice | image AUROC |",
        "|---|---|---|---|---|---|---|",
        f"| {name} | {steps} | {fit_seconds:.0f} | {values} |",
    ]


def ddp_smoke() -> list[str]:
    command = [
        "anomalib", "train", "--model", "UniAS", "--model.backbone", "tf_efficientnet_lite0",
        "--model.input_size", "[64, 64]", "--model.pixel_dim", "32", "--model.hidden_dim", "32",
        "--model.ffn_dim", "64", "--model.num_encoder_layers", "1", "--model.neighbour_size", "3",
        "--data", "UniASDemo", "--data.num_workers", "0", "--trainer.max_epochs", "1",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "gpu",
        "--trainer.enable_progress_bar", "false", "--default_root_dir", str(REPO / "results" / "gpu_check_ddp"),
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    status = "ok" if result.returncode == 0 and "| mean |" in result.stdout else f"FAILED (exit {result.returncode})"
    if status != "ok":
        print(result.stdout[-2000:], result.stderr[-3000:])
    return [
        "| check | result | seconds |",
        "|---|---|---|",
        f"| 2-GPU DDP train + test | {status} | {time.perf_counter() - start:.0f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of this script; CPU allowed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mtd-steps", type=int, default=300)
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "gpu_check.md"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs an NVIDIA GPU (torch.cuda.is_available() is False).")
        if not args.quick:
            sys.exit(2)
        print("--quick: running the speed and training parts on the CPU at tiny sizes instead.")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    sections = [f"# UniAS GPU check on {name} (torch {torch.__version__})", ""]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if not args.skip_parity:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "tests/test_parity.py"],
                cwd=REPO,
                env={**os.environ, "UNIAS_PARITY_DEVICE": "cuda"},
                check=False,
            )
            sections += [
                "## Golden parity on CUDA (TF32 off)",
                "",
                "passed" if result.returncode == 0 else "FAILED",
                "",
            ]
    for title, rows in (
        ("Inference (eval forward, random weights)", inference_table(device, args.quick, args.repeats)),
        ("Training step (forward, backward, clip, AdamW)", training_table(device, args.quick, args.repeats)),
        ("Short training and test", mtd_training(device, args.quick, args.mtd_steps if not args.quick else 4)),
    ):
        sections += [f"## {title}", "", *rows, ""]
        print("\n".join(sections[-len(rows) - 3 :]), flush=True)
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        sections += ["## DDP", "", *ddp_smoke(), ""]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(sections) + "\n")
    print("\n".join(sections))


if __name__ == "__main__":
    main()
