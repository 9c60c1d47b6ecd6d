"""Where a sweep's ratio comes from: lab vs baseline loop, phase by phase (issue 12).

benchmarks/sweep.py gives one number for a whole series. This splits it: for one shape of
paper-skip1 (dropout 0.2, skip-1 rates 0.025 ... 0.5, fp32) it times, in one process,

- the baseline loop (benchmarks/baseline.py, one configuration, torch's default threads:
  every core, as sweep.py runs it): a training step, one evaluation (eval_iters batches per
  split, nanoGPT's way) and the exact validation pass;
- the lab's GroupTrainer on ONE thread (a sweep's worker) for groups of each size asked for:
  the same three phases, per configuration.

A sweep keeps every core busy with its own worker, so the lab's machine-seconds for one
configuration are its 1-thread seconds divided by the cores; the baseline's are its wall
seconds. Their quotient per phase is the ratio that phase can contribute, before start-up,
the store and the tail of a sweep; the last column mixes the phases as a series of STEPS
steps with an evaluation every EVAL_INTERVAL steps (and at 0 and the end) weighs them.

Two 1-thread workers run side by side in a sweep and slow each other a little (shared cache
and memory), which this single process does not see: read its ratios as upper bounds.
Fastest of `--repeats` for steps; one timing for evaluations and the exact pass.

    python benchmarks/phase_ratios.py --blocks 2 --groups 1,2,3 --steps 600 --eval-interval 300
    python benchmarks/phase_ratios.py --blocks 4 --groups 2,3,5 --steps 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.baseline import BaselineRun, exact_val_loss  # noqa: E402
from benchmarks.step_profile import paper_skip1_group  # noqa: E402
from lab.bench import evaluations  # noqa: E402
from lab.core.config import TrainOptions, lr_at  # noqa: E402
from lab.core.data import get_corpus  # noqa: E402
from lab.core.train import GroupTrainer  # noqa: E402
from lab.workers.scheduler import cpu_count  # noqa: E402


def seconds(fn: Callable[[], object], k: int = 1, repeats: int = 1) -> float:
    """Fastest mean seconds of `k` calls, over `repeats` tries."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(k):
            fn()
        best = min(best, (time.perf_counter() - t) / k)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=2, help="n_layer (default 2)")
    ap.add_argument("--groups", default="1,2,3", help="lab group sizes to time, comma-separated (default 1,2,3)")
    ap.add_argument("--steps", type=int, default=600, help="steps of the series the mix weighs (default 600)")
    ap.add_argument("--eval-interval", type=int, default=300, help="of that series (default 300)")
    ap.add_argument("--repeats", type=int, default=3, help="tries of 10 steps; the fastest counts (default 3)")
    ap.add_argument("--data", default="tinyshakespeare", help='corpus: "tinyshakespeare" or a path')
    args = ap.parse_args(argv)

    corpus = get_corpus(args.data)
    cores = cpu_count()
    configs = paper_skip1_group(max(int(n) for n in args.groups.split(",")), args.blocks)
    n_evals = evaluations(dataclasses.replace(configs[0], max_iters=args.steps, eval_interval=args.eval_interval))
    print(f"phase_ratios: {args.blocks} blocks x {configs[0].n_embd}, fp32, {cores} cores, torch {torch.__version__}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"mix: {args.steps} steps, {n_evals} evaluations of {configs[0].eval_iters} batches per split, one exact pass\n")

    torch.set_num_threads(cores)
    base = BaselineRun(configs[0], corpus)
    seconds(base.step, 5)
    b_step = seconds(base.step, 10, args.repeats)
    b_eval = seconds(base.estimate_loss)
    b_exact = seconds(lambda: exact_val_loss(base.model, corpus, configs[0].block_size))
    b_total = args.steps * b_step + n_evals * b_eval + b_exact
    print(f"| who | step ms | evaluation s | exact s | one configuration's series s (machine) |")
    print(f"|---|---:|---:|---:|---:|")
    print(f"| baseline, {cores} threads | {b_step * 1e3:.1f} | {b_eval:.2f} | {b_exact:.2f} | {b_total:.1f} |")

    torch.set_num_threads(1)
    rows = []
    for n in (int(x) for x in args.groups.split(",")):
        trainer = GroupTrainer(configs[:n], [f"r{i}" for i in range(n)], lambda event: None, TrainOptions(), None)
        trainer.setup(corpus)
        trainer.should_stop = lambda: False

        def step() -> None:
            trainer.train_step(lr_at(trainer.cfg, trainer.step))

        seconds(step, 3)
        # per configuration, machine-seconds: 1-thread seconds / n configurations / cores busy alike
        l_step = seconds(step, 10, args.repeats) / n / cores
        l_eval = seconds(trainer.estimate_loss) / n / cores
        l_exact = seconds(trainer.exact_val_loss) / n / cores
        l_total = args.steps * l_step + n_evals * l_eval + l_exact
        rows.append((n, l_step, l_eval, l_exact, l_total))
        print(f"| lab, group of {n}, 1 thread per core | {l_step * 1e3:.1f} | {l_eval:.2f} | {l_exact:.2f} | {l_total:.1f} |")

    print("\nratio baseline / lab per phase (above 1: the lab is faster), and for the mix:\n")
    print("| lab group | steps | evaluations | exact | mix | share of the lab's mix in steps / evaluations / exact |")
    print("|---:|---:|---:|---:|---:|---|")
    for n, l_step, l_eval, l_exact, l_total in rows:
        shares = (args.steps * l_step / l_total, n_evals * l_eval / l_total, l_exact / l_total)
        print(f"| {n} | {b_step / l_step:.2f}x | {b_eval / l_eval:.2f}x | {b_exact / l_exact:.2f}x | "
              f"**{b_total / l_total:.2f}x** | {' / '.join(f'{s:.0%}' for s in shares)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
