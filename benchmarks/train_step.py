r"""Where UniAS's training step spends its time: seconds, FLOPs, GFLOP/s, top operators, FP32 vs bf16 autocast.

    python benchmarks/train_step.py                                  # B4, 224 x 224, paper widths, batch 8
    python benchmarks/train_step.py --compare-tree /tmp/old_checkout  # the same, old checkout side by side
    python benchmarks/train_step.py --backbone tf_efficientnet_lite0 --size 128 --set pixel_dim=64 hidden_dim=64 \
        ffn_dim=256 num_encoder_layers=1 neighbour_size=5               # the CPU recipe's size

The step is the model's own recipe: forward, backward, ``configure_gradient_clipping`` (or torch's
``clip_grad_norm_`` for a checkout that does not define it) and the optimizer of ``configure_optimizers``.
Each tree runs in its own process (``PYTHONPATH`` = the tree), one after the other, so both are timed on
the same machine in one run.  FLOPs are counted once with ``torch.utils.flop_counter``; the profile is one
step of ``torch.profiler`` (self CPU time per operator).  ``--bf16`` adds the step under
``torch.autocast("cpu", torch.bfloat16)`` (what Lightning's ``--trainer.precision bf16-mixed`` does);
that changes the numerics, it is not an equal-maths variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO as REPO_ROOT
from _common import run_stamp


def worker(config: dict) -> dict:
    """Build the model of the tree on ``sys.path`` and time its training step."""
    import warnings

    warnings.simplefilter("ignore")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import anomalib_unias
    from anomalib_unias import UniAS

    torch.set_num_threads(config["threads"])
    size = config["size"]
    module = UniAS(
        backbone=config["backbone"], pre_trained=False, input_size=(size, size), visualizer=False, **config["widths"]
    )
    network = module.model.train()
    optimizer = module.configure_optimizers()["optimizer"]
    parameters = [p for p in network.parameters() if p.requires_grad]
    own_clipping = "configure_gradient_clipping" in type(module).__dict__
    torch.manual_seed(0)
    images = torch.rand(config["batch"], 3, size, size)

    def step(bf16: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = network(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if own_clipping:
            module.configure_gradient_clipping(optimizer, 0.1, "norm")
        else:
            torch.nn.utils.clip_grad_norm_(parameters, 0.1)
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    result = {"tree": str(Path(anomalib_unias.__file__).parents[1]), "gflop": counter.get_total_flops() / 1e9}
    for precision in ["fp32"] + (["bf16"] if config["bf16"] else []):
        step(precision == "bf16")
        times = []
        for _ in range(config["repeats"]):
            start = time.perf_counter()
            step(precision == "bf16")
            times.append(time.perf_counter() - start)
        result[f"{precision}_s"] = sorted(times)
    if config["profile"]:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            step()
        events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        result["top_operators"] = [
            (e.key, e.self_cpu_time_total / 1e6, 100 * e.self_cpu_time_total / total) for e in events[:12]
        ]
    return result


def run_tree(tree: Path, config: dict) -> dict:
    """Run :func:`worker` in a fresh process with ``tree`` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_b4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="UniAS width arguments")
    parser.add_argument("--compare-tree", type=Path, help="another checkout of this repository to time first")
    parser.add_argument("--bf16", action="store_true", help="also time the step under CPU bf16 autocast")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--output", type=Path, default=None, help="also write the report here (markdown)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    widths = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = {"backbone": args.backbone, "size": args.size, "batch": args.batch, "repeats": args.repeats,
              "threads": args.threads, "widths": widths, "bf16": args.bf16, "profile": args.profile}  # fmt: skip
    trees = [args.compare_tree, REPO_ROOT] if args.compare_tree else [REPO_ROOT]
    results = [run_tree(tree, config) for tree in trees]
    setting = f"{args.backbone}, {args.size} x {args.size}, batch {args.batch}, {args.threads} threads"
    lines = [
        "# UniAS training step on CPU",
        "",
        f"`python benchmarks/train_step.py {' '.join(sys.argv[1:])}` ({run_stamp()}).",
        "",
        f"{setting}, {widths or 'paper widths'}",
        "",
        "| tree | GFLOP/step | FP32 s/step (min / median) | GFLOP/s | bf16 s/step | bf16 speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        fp32 = result["fp32_s"]
        median = fp32[len(fp32) // 2]
        bf16 = result.get("bf16_s")
        bf16_text = f"{bf16[len(bf16) // 2]:.2f} | {median / bf16[len(bf16) // 2]:.2f}x" if bf16 else "- | -"
        lines.append(f"| {result['tree']} | {result['gflop']:.0f} | {fp32[0]:.2f} / {median:.2f} | "
                     f"{result['gflop'] / median:.0f} | {bf16_text} |")  # fmt: skip
    if len(results) == 2:
        old, new = (r["fp32_s"][len(r["fp32_s"]) // 2] for r in results)
        lines.append(f"\nnew / old step time: {new / old:.2f} (speed-up {old / new:.2f}x)")
    for result in results:
        if "top_operators" in result:
            lines += [
                "",
                f"Top operators by self CPU time, {result['tree']}:",
                "",
                "| operator | s | % |",
                "|---|---|---|",
            ]
            lines += [f"| {name} | {seconds:.2f} | {share:.1f} |" for name, seconds, share in result["top_operators"]]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
