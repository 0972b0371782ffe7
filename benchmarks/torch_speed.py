"""Speed and memory of the UniAS torch model on this machine's CPU (issue: torch model speed).

Prints eval images/s at batch 1 and 8 and seconds per training step at batch 8 (forward + backward +
gradient clipping + AdamW), with peak resident memory, for a backbone at a given input size.
Random weights: speed does not depend on them.

    python benchmarks/torch_speed.py --backbone tf_efficientnet_b4 --size 224
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from anomalib_unias.components.backbone import FrozenBackbone, drop_unused_stages, timm_feature_network
from anomalib_unias.torch_model import UniASModel

REFERENCE = {"eval b1 (img/s)": 1 / 0.636, "eval b8 (img/s)": 1.63, "train step b8 (s)": 13.7}


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_eval(model: UniASModel, batch: int, size: int, repeats: int) -> float:
    images = torch.randn(batch, 3, size, size)
    model.eval()
    with torch.inference_mode():
        model(images)
        start = time.perf_counter()
        for _ in range(repeats):
            model(images)
    return batch * repeats / (time.perf_counter() - start)


def time_train_step(model: UniASModel, batch: int, size: int, repeats: int) -> float:
    images = torch.randn(batch, 3, size, size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    model.train()

    def step() -> None:
        loss, _ = model(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_b4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UniASModel(FrozenBackbone(drop_unused_stages(timm_feature_network(args.backbone))), (args.size, args.size))
    results = {
        "eval b1 (img/s)": time_eval(model, 1, args.size, args.repeats * 2),
        "eval b8 (img/s)": time_eval(model, 8, args.size, args.repeats),
    }
    eval_peak = peak_rss_gib()
    results["train step b8 (s)"] = time_train_step(model, 8, args.size, args.repeats)
    print(f"UniAS torch model, {args.backbone} at {args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}")
    print("| measure | ours | reference code | ours / reference |")
    print("|---|---|---|---|")
    for name, value in results.items():
        ref = REFERENCE[name]
        gain = ref / value if name.startswith("train") else value / ref
        print(f"| {name} | {value:.3f} | {ref:.3f} | {gain:.2f}x |")
    print(f"| peak RSS eval (GiB) | {eval_peak:.2f} | | |")
    print(f"| peak RSS with training (GiB) | {peak_rss_gib():.2f} | | |")


if __name__ == "__main__":
    main()
