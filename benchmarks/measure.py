"""Measurements the benchmark scripts share: a device's matmul peak and a timed headless run."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the fastest of `repeats` square n x n matmuls: the device's practical peak."""
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


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
