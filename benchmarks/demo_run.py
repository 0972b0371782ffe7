"""The README's first command, timed: ``anomalib train --config configs/demo.yaml`` from an empty folder.

    python benchmarks/demo_run.py

Runs the command as a new user does (the demo data are generated first, in a fresh temporary folder),
measures its wall time and the peak resident memory of the training process (``RUSAGE_CHILDREN``: the
child's own peak, not this script's), and writes the per-category table the command printed, with the
command, date, commit and CPU, to ``benchmarks/results/demo.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS, run_stamp

COMMAND = ["anomalib", "train", "--config", str(REPO / "configs" / "demo.yaml")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULTS / "demo.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unias_demo_") as work:
        start = time.perf_counter()
        result = subprocess.run(COMMAND, cwd=work, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the demo failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    table = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("|")]
    if not table:
        raise SystemExit("the demo printed no per-category table:\n" + result.stdout[-3000:])
    text = "\n".join(
        [
            "# The embedded demo, as the README's first command runs it",
            "",
            f"`anomalib train --config configs/demo.yaml` in an empty folder ({run_stamp()}, "
            f"{os.cpu_count()} cores): {seconds:.0f} s in all (data generation, training, test), "
            f"peak RSS of the training process {peak_gb:.2f} GB. Written by `python benchmarks/demo_run.py`.",
            "",
            *table,
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
