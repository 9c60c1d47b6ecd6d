"""GPU benchmark (issue 5): the 14 configurations of the paper's skip series on one GPU.

The target: all 50,000-iteration paper series (paper-skip1, paper-skip2, paper-skip4; 14
configurations) together in under 10 minutes of wall time on one H200, against the authors'
reported 16 to 17 minutes per configuration. A full run is far beyond the time a benchmark may
take, so this script trains a few thousand iterations of the whole set and extrapolates
linearly to 50,000 (evaluation every 250 steps keeps the same share of the work at any
length; start-up is included in the measured wall, which makes the extrapolation pessimistic).

It measures, in one process tree and in at most about 8 minutes:
  1. the GPU's matmul peak (fp32/TF32 and bf16);
  2. the nanoGPT-style baseline (benchmarks/baseline.py, bf16 autocast as nanoGPT uses on a GPU)
     on one configuration, with its evaluation schedule, extrapolated to 50,000 iterations;
  3. the lab (`dropres-lab run --headless` on the three suites, --device cuda) with one worker
     and with several workers sharing the GPU (a small model leaves the GPU idle between kernel
     launches, so processes can fill each other's gaps).

    python benchmarks/gpu.py OUT_DIR [--data PATH] [--iters 2000] [--workers 1 3]

Installs nothing; needs the project installed and CUDA. Writes OUT_DIR/gpu.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baseline import train_baseline  # noqa: E402
from benchmarks.measure import matmul_peak, timed_headless  # noqa: E402
from benchmarks.report import emit_report  # noqa: E402
from lab.core.data import get_corpus  # noqa: E402
from lab.experiments import load_experiments  # noqa: E402
from lab.headless import override_specs  # noqa: E402

SUITES = ("paper-skip1", "paper-skip2", "paper-skip4")
FULL_ITERS = 50_000
TARGET_S = 600.0
BUDGET_S = 450.0  # stop starting new measurements after this much wall time


def fmt(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write gpu.md into")
    ap.add_argument("--data", default=os.environ.get("DROPRES_DATA", "tinyshakespeare"),
                    help="corpus path (default: $DROPRES_DATA, else the cached Tiny Shakespeare)")
    ap.add_argument("--iters", type=int, default=2000, help="iterations of each lab configuration measured")
    ap.add_argument("--baseline-iters", type=int, default=1000, help="iterations of the baseline measured")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 3], help="worker counts to try on the one GPU")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device is visible; this benchmark needs one GPU", file=sys.stderr)
        return 2
    start = time.perf_counter()
    corpus = get_corpus(args.data)
    name = torch.cuda.get_device_name(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    peak32 = matmul_peak(torch.float32, "cuda", n=8192, repeats=20)
    peak16 = matmul_peak(torch.bfloat16, "cuda", n=8192, repeats=20)
    lines = [f"# GPU benchmark: {name}", "",
             f"torch {torch.__version__}; matmul peak fp32 {peak32 / 1e12:.1f} TFLOP/s, bf16 {peak16 / 1e12:.1f} TFLOP/s.",
             f"Measured {args.iters} iterations of each of the 14 paper configurations (baseline: "
             f"{args.baseline_iters} of one) and extrapolated linearly to {FULL_ITERS:,}.", "",
             "| what | iterations measured | wall measured | extrapolated to 50k x 14 configs | target |",
             "|---|---:|---:|---:|---:|"]

    specs = override_specs(load_experiments(ROOT / "experiments.toml").select(list(SUITES), None), args.baseline_iters, args.data)
    cfg = specs[0].config
    result = train_baseline(cfg, corpus, device="cuda")
    per_config = result["wall_s"] * FULL_ITERS / args.baseline_iters
    lines.append(f"| baseline, one configuration at a time ({specs[0].run_key}) | {args.baseline_iters} | "
                 f"{fmt(result['wall_s'])} | {fmt(per_config * 14)} ({fmt(per_config)} per configuration; "
                 f"authors: 16-17 min) | {fmt(TARGET_S)} |")
    print(lines[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="dropres-gpu-") as tmp:
        for workers in args.workers:
            if time.perf_counter() - start > BUDGET_S:
                lines.append(f"| lab, {workers} worker(s) | - | skipped: time budget spent | - | - |")
                continue
            try:
                wall = timed_headless([*SUITES, "--max-iters", str(args.iters), "--device", "cuda",
                                       "--workers", str(workers), "--data", args.data], Path(tmp) / f"w{workers}")
            except RuntimeError as exc:
                lines.append(f"| lab, {workers} worker(s) | {args.iters} | failed: {str(exc).splitlines()[-1]} | - | - |")
                continue
            full = wall * FULL_ITERS / args.iters
            verdict = "meets" if full <= TARGET_S else "misses"
            lines.append(f"| lab, {workers} worker(s) on the GPU, 14 configurations | {args.iters} | {fmt(wall)} | "
                         f"**{fmt(full)}** ({verdict}) | {fmt(TARGET_S)} |")
            print(lines[-1], flush=True)
    lines += ["", f"Benchmark wall time: {fmt(time.perf_counter() - start)}."]
    emit_report(lines, args.out, "gpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
