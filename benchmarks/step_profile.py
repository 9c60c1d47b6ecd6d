"""How close a training step comes to the matmul peak, and where the rest of the step goes.

For one group of paper-skip1's shape (4 blocks x 128, dropout 0.2, skip-1 rates 0.025 ... 0.5,
"paper" skip dropout, norm "stream", batch 8, block 64, fp32; a group of 5 by default) it
prints, for each torch thread count asked for, in one process:

- the share of the peak: the group's training FLOP/s (lab/core/throughput.py: 6 x weights x
  tokens plus attention) over the fp32 matmul peak measured in the same process with the same
  threads, interleaved with the steps (fastest of each, so load elsewhere can only lower it),
  by the wall clock and per CPU-second of this process (time.process_time: on a shared
  machine the process waits for a core without being charged for it, so this one holds up
  under load; at 1 thread it is the share a quiet core would show);
- with `--against REF` (repeatable): the same step with lab/core/model.py as it was at the git
  revision REF (or a model file of that shape at the path REF), timed interleaved with the
  working tree's (in turn, rotating who goes first); the ratio is the first one's fastest step
  over each other's (above 1: the other is faster);
- with `--profile`: each op's share of a step's self CPU time (torch.profiler), grouped.

Everything else (data, loss, clipping, the optimiser) is GroupTrainer.train_step itself, so
an A/B changes only the model file. On a loaded machine read ratios and shares, not
milliseconds; run under `nice -n -15` and note `uptime`.

    python benchmarks/step_profile.py --threads 1,2 --profile
    python benchmarks/step_profile.py --threads 1,2 --against HEAD~1 --repeats 9
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/step_profile.py` from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lab.core.model as model_now  # noqa: E402
import lab.core.train as train_module  # noqa: E402
from lab.core.config import RunConfig, TrainOptions, lr_at  # noqa: E402
from lab.core.data import Corpus, get_corpus  # noqa: E402
from lab.core.throughput import matmul_peak, train_flop_per_step  # noqa: E402
from lab.core.train import GroupTrainer  # noqa: E402

SKIP1_RATES = (0.025, 0.05, 0.1, 0.2, 0.5)  # paper-skip1's series, cycled over the group

# Self-CPU-time categories of the profile: (label, op-name substrings), first match wins.
CATEGORIES = (
    ("bmm / baddbmm (projections, attention, head)", ("bmm", "::mm", "addmm", "matmul")),
    ("gelu + backward", ("gelu",)),
    ("dropout masks: random bits", ("random_",)),
    ("dropout masks: compare", ("::le", "::lt", "::gt", "::ge")),
    ("mul (masks applied, scales)", ("::mul",)),
    ("where", ("::where",)),
    ("add / addcmul (sums, residuals)", ("::add", "addcmul")),
    ("copy_ / clone (layouts, casts)", ("copy_", "clone", "contiguous")),
    ("LayerNorm + backward", ("layer_norm",)),
    ("softmax + backward", ("softmax",)),
    ("cross-entropy", ("nll_loss", "log_softmax", "cross_entropy")),
    ("embedding + backward", ("embedding",)),
    ("AdamW", ("adam",)),
    ("gradient clipping norms", ("norm",)),
)


def paper_skip1_group(n: int, n_layer: int, attn_dropout: float = 0.2) -> list[RunConfig]:
    return [RunConfig.from_dict(dict(n_layer=n_layer, dropout=0.2, attn_dropout=attn_dropout, dtype="float32",
                                     skips={1: SKIP1_RATES[i % len(SKIP1_RATES)]}, seed=1337 + i)) for i in range(n)]


def model_at(ref: str) -> types.ModuleType:
    """lab/core/model.py as it was at git revision `ref` (or the model file at the path `ref`,
    a variant to try), imported as a module of lab.core."""
    if ref.endswith(".py"):
        source, origin = Path(ref).read_text(encoding="utf-8"), ref
    else:
        source = subprocess.run(["git", "show", f"{ref}:lab/core/model.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        origin = f"{ref}:lab/core/model.py"
    name = f"lab.core._model_{len(sys.modules)}"
    module = types.ModuleType(name)
    module.__package__ = "lab.core"
    module.__file__ = origin
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def using(model_module: types.ModuleType) -> Iterator[None]:
    """GroupTrainer builds and scores with `model_module`'s Decoder and config_losses."""
    saved = train_module.Decoder, train_module.config_losses
    train_module.Decoder, train_module.config_losses = model_module.Decoder, model_module.config_losses
    try:
        yield
    finally:
        train_module.Decoder, train_module.config_losses = saved


class Step:
    """One group's GroupTrainer; `time(k)` is the seconds of k training steps."""

    def __init__(self, label: str, model_module: types.ModuleType, configs: list[RunConfig], corpus: Corpus):
        self.label, self.module = Path(label).name, model_module
        with using(model_module):
            self.trainer = GroupTrainer(configs, [f"r{i}" for i in range(len(configs))], lambda e: None, TrainOptions(), None)
            self.trainer.setup(corpus)
        self.trainer.model.train()
        self.best = self.best_cpu = float("inf")

    def run(self, k: int) -> None:
        with using(self.module):
            for _ in range(k):
                self.trainer.train_step(lr_at(self.trainer.cfg, self.trainer.step))

    def time(self, k: int) -> None:
        """Record the fastest wall and process-CPU seconds per step."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.run(k)
        self.best = min(self.best, (time.perf_counter() - t0) / k)
        self.best_cpu = min(self.best_cpu, (time.process_time() - c0) / k)


def profile_shares(step: Step, steps: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(category shares, top ops' shares) of the self CPU time of `steps` training steps."""
    from torch.profiler import ProfilerActivity, profile

    step.run(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step.run(steps)
    ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(t for _, t in ops)
    grouped: dict[str, float] = defaultdict(float)
    for key, t in ops:
        label = next((lab for lab, needles in CATEGORIES if any(s in key for s in needles)), "everything else")
        grouped[label] += t / total
    order = [lab for lab, _ in CATEGORIES] + ["everything else"]
    categories = [(lab, grouped[lab]) for lab in order if grouped.get(lab, 0) > 0]
    top = sorted(((key, t / total) for key, t in ops), key=lambda kv: -kv[1])[:15]
    return categories, top


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure, comma-separated (default 1,2)")
    ap.add_argument("--group", type=int, default=5, help="configurations in the group (default 5)")
    ap.add_argument("--blocks", type=int, default=4, help="n_layer (default 4)")
    ap.add_argument("--attn-dropout", type=float, default=0.2,
                    help="rate on the attention probabilities (default 0.2, as paper-skip1)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats; the fastest counts (default 7)")
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed repeat (default 5)")
    ap.add_argument("--against", metavar="REF", action="append", default=[],
                    help="also time lab/core/model.py at git revision REF (or the model file REF.py), interleaved; repeatable")
    ap.add_argument("--profile", action="store_true", help="print each op's share of a step (torch.profiler)")
    ap.add_argument("--data", default="tinyshakespeare", help='corpus: "tinyshakespeare" or a path')
    args = ap.parse_args(argv)

    corpus = get_corpus(args.data)
    configs = paper_skip1_group(args.group, args.blocks, args.attn_dropout)
    flop = train_flop_per_step(configs[0], corpus.vocab_size, len(configs))
    print(f"step_profile: {args.blocks} blocks x {configs[0].n_embd}, group of {len(configs)}, dropout 0.2 "
          f"(attention {args.attn_dropout}), fp32, "
          f"{flop / 1e9:.2f} GFLOP per step; load {load_average()}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        steps = [Step(ref, model_at(ref), configs, corpus) for ref in args.against] + [Step("now", model_now, configs, corpus)]
        for s in steps:
            s.run(3)  # warm-up: allocations, first-touch
        peak = peak_cpu = 0.0
        for rep in range(args.repeats):
            for s in steps[rep % len(steps):] + steps[:rep % len(steps)]:
                s.time(args.steps)
            peak = max(peak, matmul_peak(torch.float32, repeats=3))
            peak_cpu = max(peak_cpu, matmul_peak(torch.float32, repeats=3, clock=time.process_time))
        print(f"\n{threads} thread(s): fp32 matmul peak {peak / 1e9:.1f} GFLOP/s wall, {peak_cpu / 1e9:.1f} per "
              f"CPU-second (1024^2, fastest of {3 * args.repeats})")
        for s in steps:
            print(f"  {s.label:>16}: {s.best * 1e3:7.1f} ms/step, {flop / s.best / 1e9:6.1f} GFLOP/s, "
                  f"{100 * flop / s.best / peak:5.1f} % of peak (wall); {s.best_cpu * 1e3:7.1f} CPU-ms/step, "
                  f"{100 * flop / s.best_cpu / peak_cpu:5.1f} % of peak (per CPU-second)")
        for s in steps[1:]:
            print(f"  ratio {steps[0].label} / {s.label} (above 1: {s.label} is faster): wall "
                  f"{steps[0].best / s.best:.3f}, CPU {steps[0].best_cpu / s.best_cpu:.3f}")
        if args.profile:
            for s in steps:
                categories, top = profile_shares(s, args.steps)
                print(f"  profile of {s.label} (self CPU time of {args.steps} steps):")
                for label, share in categories:
                    print(f"    {100 * share:5.1f} %  {label}")
                print("    top ops: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in top))
    print(f"\nload at end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
