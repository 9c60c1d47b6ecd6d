"""Measurements the benchmark scripts share: a device's matmul peak (the lab's own,
lab/core/throughput.py) and a timed headless run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.core.throughput import matmul_peak  # noqa: E402,F401  (re-exported for the benchmarks)


def timed_headless(run_args: list[str], store: Path) -> float:
    """Wall seconds of `dropres-lab run --headless RUN_ARGS --store STORE --fresh` in a
    subprocess; RuntimeError with the end of its output when it does not exit 0."""
    cmd = [sys.executable, "-m", "lab", "run", "--headless", *run_args, "--store", str(store), "--fresh"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lab run failed ({proc.returncode}): {(proc.stderr.strip() or proc.stdout)[-2000:]}")
    return wall
