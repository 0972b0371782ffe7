#!/usr/bin/env bash
# One short UniAS check on a CUDA GPU (under 10 minutes): parity on CUDA, inference and training speed in
# FP32 / AMP bf16 / AMP fp16, a short MTD training with its test pAP, and a 2-GPU DDP smoke if possible.
# Without a CUDA device it says so and exits 2; `--quick` runs the same code paths on the CPU at tiny sizes.
#   bash benchmarks/gpu_check.sh [--quick] [--mtd-steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/gpu_check.py "$@"
