"""How a training step's cost scales with group size N and depth, and each worker's memory (issue 5).

Each measurement runs in a fresh process shaped like one lab worker (one torch thread by
default), so its peak resident memory (ru_maxrss) is that of a worker training that group.
Reports ms per step, ms per configuration-step (step / N), the speed-up of grouping over
N = 1, and the worker's peak memory, for the dtype the lab uses here by default.

    python benchmarks/scaling.py [--sizes 1 2 4 8 16] [--layers 2 4 16] [--dtype auto] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit_report  # noqa: E402


def measure(n: int, n_layer: int, dtype: str, threads: int, seconds: float) -> dict:
    """In this process: build a group of n paper configurations, time training steps."""
    import torch

    from lab.core.config import RunConfig
    from lab.core.data import get_corpus
    from lab.core.train import GroupTrainer, TrainOptions

    torch.set_num_threads(threads)
    rates = [0.025, 0.05, 0.1, 0.2, 0.5]
    configs = [RunConfig(n_layer=n_layer, skips=((1, rates[i % 5]),), dtype=dtype, seed=1337 + i) for i in range(n)]
    trainer = GroupTrainer(configs, [f"r{i}" for i in range(n)], lambda event: None, TrainOptions(), None)
    trainer.setup(get_corpus(os.environ.get("DROPRES_DATA", "tinyshakespeare")))
    for _ in range(2):
        trainer.train_step(1e-3)
    steps, t0 = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - t0 < seconds:
        trainer.train_step(1e-3)
        steps += 1
    step_s = (time.perf_counter() - t0) / steps
    return {"n": n, "n_layer": n_layer, "dtype": trainer.dtype, "step_ms": step_s * 1e3,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 16])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: N n_layer
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.dtype, args.threads, args.seconds)))
        return
    rows = []
    for n_layer in args.layers:
        for n in args.sizes:
            proc = subprocess.run([sys.executable, __file__, "--one", str(n), str(n_layer), "--dtype", args.dtype,
                                   "--threads", str(args.threads), "--seconds", str(args.seconds)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"n_layer {n_layer:>2} N {n:>2}: {r['step_ms']:8.1f} ms/step, {r['step_ms'] / n:6.1f} ms/config-step, "
                  f"peak {r['peak_mib']:.0f} MiB", flush=True)
    lines = [f"Training-step cost by group size and depth ({args.threads} thread(s), dtype {args.dtype} -> "
             f"{rows[0]['dtype']}, batch 8 x 64, n_embd 128; one fresh process per cell).", "",
             "| n_layer | N | ms/step | ms/config-step | grouping speed-up vs N=1 | worker peak RSS |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        alone = next(x for x in rows if x["n_layer"] == r["n_layer"] and x["n"] == min(args.sizes))
        speedup = (alone["step_ms"] / alone["n"]) / (r["step_ms"] / r["n"])
        lines.append(f"| {r['n_layer']} | {r['n']} | {r['step_ms']:.1f} | {r['step_ms'] / r['n']:.1f} | "
                     f"{speedup:.2f}x | {r['peak_mib']:.0f} MiB |")
    emit_report(lines, args.out, "scaling.md")


if __name__ == "__main__":
    main()
