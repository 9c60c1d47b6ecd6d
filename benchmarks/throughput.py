"""Training throughput of the lab core against the nanoGPT-style baseline, on this machine.

For the 2-block, the paper's 4-block and the 16-block model (dropout 0.2, skips {1: 0.025},
"paper" skip dropout, norm "stream", batch 8, block 64, n_embd 128, 4 heads, fp32) it
measures, in one process and one run:

- the lab core at N = 1 (GroupTrainer.train_step, one configuration),
- the lab core at N = 8 (one group; the configurations differ in seed and skip-1 rate),
- the baseline (benchmarks/baseline.py: one model, eager, nn.Linear, clip_grad_norm_).

Training steps only, no evaluation. Every measurement is a fixed number of steps after a
warm-up; measurements are interleaved (each repeat times every model and runner once, the
runner order rotating between repeats) and the table reports medians over the repeats.
Tokens per step are N * batch * block (group throughput); "per config" divides by N. The
ratio is core / baseline tokens per second.

Shared machines. With torch using every core, a process elsewhere that takes even part of one
core slows a step by 2x to 100x (the intra-op threads wait at each barrier for a descheduled
thread). Medians cannot absorb that when the other load lasts minutes, so on Linux the script
watches the CPU time used by other processes (/proc/stat minus its own): it waits for the
machine to be quiet before each measurement, and repeats a measurement during which other
processes used more than --max-foreign cores, within a --max-wait budget; the medians are taken
over the undisturbed measurements (all of them when fewer than 3 are), and what it had to do is
written next to the results. Without /proc/stat it measures blindly.

    python benchmarks/throughput.py            # about 4 minutes on 2 quiet cores; writes results/throughput.md
    python benchmarks/throughput.py --quick    # smoke: a few steps, prints only
    python benchmarks/throughput.py --threads 1

Needs the corpus: $DROPRES_DATA, the user cache, or a download (as the lab finds it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/throughput.py` from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.baseline import BaselineRun  # noqa: E402
from lab.core.config import RunConfig  # noqa: E402
from lab.core.data import Corpus, get_corpus  # noqa: E402
from lab.core.train import GroupTrainer, TrainOptions, lr_at  # noqa: E402

DEPTHS = (2, 4, 16)
GROUP_SIZE = 8
SKIP_RATES = (0.025, 0.05, 0.1, 0.2, 0.5, 0.99)  # skip-1 rates cycled over a group
LOG_INTERVAL = 10  # both loops bring losses to the host every 10 steps, as their real loops do
BATCH_SIZE, BLOCK_SIZE = 8, 64
TOKENS_PER_CONFIG_STEP = BATCH_SIZE * BLOCK_SIZE


def bench_config(n_layer: int, **overrides) -> RunConfig:
    values = dict(n_layer=n_layer, n_head=4, n_embd=128, block_size=BLOCK_SIZE, batch_size=BATCH_SIZE, bias=False,
                  norm="stream", skip_dropout="paper", dropout=0.2, skips={1: 0.025},
                  max_iters=50_000, seed=1337)
    values.update(overrides)
    return RunConfig.from_dict(values)


# -- other load on the machine ------------------------------------------------------------------


class LoadMonitor:
    """CPU used by other processes (in cores), from /proc/stat minus this process's own time."""

    def __init__(self, max_foreign: float, max_wait_s: float):
        self.available = Path("/proc/stat").is_file()
        self.tick = os.sysconf("SC_CLK_TCK") if self.available else 100
        self.max_foreign = max_foreign
        self.budget = max_wait_s  # seconds left for waiting and re-measuring
        self.waited = 0.0
        self.remeasured = 0
        self.exhausted = False

    def snapshot(self) -> tuple[float, float, float]:
        """(wall s, busy CPU s of the whole machine, CPU s of this process)."""
        own = os.times()
        if not self.available:
            return time.perf_counter(), 0.0, 0.0
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / self.tick
        return time.perf_counter(), busy, own.user + own.system

    @staticmethod
    def foreign(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        wall = b[0] - a[0]
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / wall if wall > 0 else 0.0

    def can_retry(self) -> bool:
        if self.available and self.budget > 0:
            return True
        self.exhausted = self.exhausted or self.available
        return False

    def wait_quiet(self, window: float = 0.5) -> None:
        """Sleep until other processes use under half of max_foreign cores (within the budget)."""
        while self.can_retry():
            a = self.snapshot()
            time.sleep(window)
            b = self.snapshot()
            if self.foreign(a, b) < self.max_foreign / 2:
                return
            self.budget -= window
            self.waited += window

    def timed(self, fn: Callable[[], float]) -> tuple[float, float]:
        """Run a measurement when quiet; repeat it while it was disturbed. Returns (result, foreign)."""
        while True:
            self.wait_quiet()
            a = self.snapshot()
            result = fn()
            b = self.snapshot()
            load = self.foreign(a, b)
            if load <= self.max_foreign or not self.can_retry():
                return result, load
            self.budget -= b[0] - a[0]
            self.remeasured += 1


# -- what is measured ---------------------------------------------------------------------------


@dataclass
class Runner:
    """Something that trains: `step()` takes one optimiser step; `n` configurations per step."""

    label: str
    n_layer: int
    n: int
    step: Callable[[], None]
    steps: int = 0  # steps per measurement, set by calibration
    tokens_per_s: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)

    def measure(self, steps: int) -> float:
        """Seconds for `steps` training steps."""
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - t


def core_runner(n_layer: int, n: int, corpus: Corpus) -> Runner:
    if n == 1:
        configs = [bench_config(n_layer)]
    else:
        configs = [bench_config(n_layer, seed=1337 + i, skips={1: SKIP_RATES[i % len(SKIP_RATES)]}) for i in range(n)]
    trainer = GroupTrainer(configs, [f"run{i}" for i in range(n)], lambda event: None, TrainOptions(), None)
    trainer.setup(corpus)
    trainer.model.train()
    pending: list[torch.Tensor] = []

    def step() -> None:  # GroupTrainer.train loop without evaluation, events or checkpoints
        pending.append(trainer.train_step(lr_at(trainer.cfg, trainer.step)))
        if trainer.step % LOG_INTERVAL == 0:
            torch.stack(pending).float().cpu()
            pending.clear()

    return Runner("core", n_layer, n, step)


def baseline_runner(n_layer: int, corpus: Corpus) -> Runner:
    run = BaselineRun(bench_config(n_layer), corpus)

    def step() -> None:  # nanoGPT's loop without evaluation: loss.item() every log_interval
        loss = run.step()
        if run.iter_num % LOG_INTERVAL == 0:
            loss.item()

    return Runner("baseline", n_layer, 1, step)


def calibrate(runner: Runner, warmup: int, monitor: LoadMonitor, probe: int = 5) -> float:
    """Warm up, then time single steps; returns the fastest (least disturbed) in seconds.

    The first two steps (allocations) are not timed; the fastest of the rest sizes the
    measurements, so a burst of load elsewhere during calibration cannot shrink them.
    """
    for _ in range(2):
        runner.step()
    return min(monitor.timed(lambda: runner.measure(1))[0] for _ in range(max(warmup - 2, 0) + probe))


# -- report -------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:
        nproc = os.cpu_count() or 0
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "nproc": str(nproc),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def clean(r: Runner, max_foreign: float) -> list[float]:
    """Throughputs of the measurements no other process disturbed (all of them if fewer than 3)."""
    kept = [t for t, f in zip(r.tokens_per_s, r.foreign) if f <= max_foreign]
    return kept if len(kept) >= 3 else r.tokens_per_s


def summarise(runners: list[list[Runner]], max_foreign: float) -> list[dict]:
    rows = []
    for core1, coreN, base in runners:
        base_kept = clean(base, max_foreign)
        b = statistics.median(base_kept)
        for r in (core1, coreN):
            kept = clean(r, max_foreign)
            c = statistics.median(kept)
            paired = [x / y for x, y, f, g in zip(r.tokens_per_s, base.tokens_per_s, r.foreign, base.foreign)
                      if f <= max_foreign and g <= max_foreign] or [x / y for x, y in zip(r.tokens_per_s, base.tokens_per_s)]
            rows.append({
                "model": f"{r.n_layer} blocks", "N": r.n, "core": c, "per_config": c / r.n, "baseline": b,
                "ratio": c / b, "paired": statistics.median(paired), "paired_min": min(paired),
                "paired_max": max(paired), "best_ratio": max(r.tokens_per_s) / max(base.tokens_per_s),
                "spread": (max(kept) - min(kept)) / c,
                "base_spread": (max(base_kept) - min(base_kept)) / b,
                "kept": f"{len(kept)} / {len(base_kept)}",
                "steps": r.steps, "base_steps": base.steps,
                "raw": list(zip(r.tokens_per_s, r.foreign)), "base_raw": list(zip(base.tokens_per_s, base.foreign)),
                "ms_step": 1e3 * r.n * TOKENS_PER_CONFIG_STEP / c,  # at the median throughput
                "base_ms_step": 1e3 * TOKENS_PER_CONFIG_STEP / b,
            })
    return rows


def markdown(rows: list[dict], info: dict, repeats: int, group_size: int) -> str:
    lines = [
        "# Training throughput: lab core vs nanoGPT-style baseline",
        "",
        f"Written by `benchmarks/throughput.py` on {info['date']}.",
        "",
        f"- machine: {info['cpu']}; `nproc` {info['nproc']}",
        f"- torch {info['torch']}, `torch.get_num_threads()` {info['threads']}, Python {info['python']}",
        f"- load average (1/5/15 min) at start {info['load_start']}, at end {info['load_end']}; benchmark wall {info['wall']}",
        f"- other processes: {info['load_note']}",
        f"- settings: dropout 0.2, skips {{1: 0.025}}, skip_dropout \"paper\", norm \"stream\", batch 8, block 64, "
        f"n_embd 128, 4 heads, fp32; at N = {group_size} the configurations differ in seed and skip-1 rate "
        f"({', '.join(str(r) for r in SKIP_RATES)}, cycled)",
        f"- training steps only (no evaluation), medians of {repeats} interleaved repeats after a warm-up; "
        "tokens/s = N x batch x block per step",
        "",
        "| model | N | tokens/s core | tokens/s per config | baseline tokens/s | ratio core/baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['N']} | {r['core']:,.0f} | {r['per_config']:,.0f} | "
                     f"{r['baseline']:,.0f} | {r['ratio']:.3f} |")
    lines += [
        "",
        "Medians are over the measurements no other process disturbed (used more than "
        f"{info['max_foreign']} cores while they ran), all of them if fewer than 3 were clean.",
        "",
        "Details: ms per step (at the median), steps per measurement, clean measurements kept (core / baseline), "
        "spread of the kept ones ((max - min) / median), the paired ratio (median, min and max of core / baseline "
        "measured back to back, both clean) and the ratio of the best repeats.",
        "",
        "| model | N | core ms/step | baseline ms/step | steps core / baseline | kept core / baseline "
        "| spread core | spread baseline | paired ratio (min - max) | best-repeat ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['N']} | {r['ms_step']:.1f} | {r['base_ms_step']:.1f} | "
                     f"{r['steps']} / {r['base_steps']} | {r['kept']} | {100 * r['spread']:.1f} % | "
                     f"{100 * r['base_spread']:.1f} % | "
                     f"{r['paired']:.3f} ({r['paired_min']:.3f} - {r['paired_max']:.3f}) | {r['best_ratio']:.3f} |")
    mark = float(info["max_foreign"])

    def fmt(raw: list[tuple[float, float]]) -> str:
        return ", ".join(f"{t:,.0f}" + (f" (other load {f:.2f})" if f > mark else "") for t, f in raw)

    lines += ["", "Raw tokens/s per repeat, in measurement order (other load in cores where it disturbed one):", ""]
    for r in rows:
        lines.append(f"- {r['model']}, N = {r['N']}: core {fmt(r['raw'])}")
    seen = set()
    for r in rows:
        if r["model"] not in seen:
            seen.add(r["model"])
            lines.append(f"- {r['model']}: baseline {fmt(r['base_raw'])}")
    lines.append("")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: a few steps, 2 repeats; prints only (unless --out)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7; 2 with --quick)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="target seconds per measurement (default 1.5 for N = 1, 1.2x that for N = 8)")
    ap.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="blocks, comma-separated (default 2,4,16)")
    ap.add_argument("--group-size", type=int, default=GROUP_SIZE, help="N of the batched group (default 8)")
    ap.add_argument("--max-foreign", type=float, default=0.1,
                    help="repeat a measurement during which other processes used more CPU than this, in cores (default 0.1)")
    ap.add_argument("--max-wait", type=float, default=None,
                    help="seconds the run may spend waiting for quiet and re-measuring "
                         "(default 600, 0 with --quick; 0: measure blindly)")
    ap.add_argument("--out", type=Path, default=None, help="Markdown results file (default benchmarks/results/throughput.md)")
    ap.add_argument("--data", default="tinyshakespeare", help='corpus: "tinyshakespeare" or a path')
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 7)
    target = args.seconds or (0.05 if args.quick else 1.5)
    warmup = 3 if args.quick else 5
    min_steps = 2 if args.quick else 10
    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    out = args.out if args.out is not None else (None if args.quick else ROOT / "benchmarks" / "results" / "throughput.md")
    console = Console()
    max_wait = args.max_wait if args.max_wait is not None else (0.0 if args.quick else 600.0)
    monitor = LoadMonitor(args.max_foreign, max_wait)
    info = machine_info()
    info["load_start"] = load_average()
    info["max_foreign"] = str(args.max_foreign)
    console.print(f"[bold]throughput[/]: {info['cpu']}, nproc {info['nproc']}, torch {info['torch']}, "
                  f"{info['threads']} threads, repeats {repeats}, load {info['load_start']}")

    corpus = get_corpus(args.data)
    runners: list[list[Runner]] = []  # per depth: [core N=1, core N=group, baseline]
    t_start = time.perf_counter()
    for n_layer in depths:
        trio = [core_runner(n_layer, 1, corpus), core_runner(n_layer, args.group_size, corpus), baseline_runner(n_layer, corpus)]
        per_step = [calibrate(r, warmup, monitor) for r in trio]
        # core N=1 and the baseline run the same number of steps (sized on the baseline)
        same = max(min_steps, round(target / per_step[2]))
        trio[0].steps = trio[2].steps = same
        trio[1].steps = max(min_steps, round(1.2 * target / per_step[1]))
        console.print(f"  {n_layer:>2} blocks: ~{per_step[2] * 1e3:.0f} ms/step baseline, "
                      f"{per_step[0] * 1e3:.0f} core N=1, {per_step[1] * 1e3:.0f} core N={args.group_size}; "
                      f"measuring {same} / {trio[1].steps} steps")
        runners.append(trio)

    for rep in range(repeats):
        for trio in runners:
            order = trio[rep % 3:] + trio[:rep % 3]  # rotate who goes first
            for r in order:
                secs, foreign = monitor.timed(lambda r=r: r.measure(r.steps))
                r.seconds.append(secs)
                r.foreign.append(foreign)
                r.tokens_per_s.append(r.steps * r.n * TOKENS_PER_CONFIG_STEP / secs)
        console.print(f"  repeat {rep + 1}/{repeats} done ({time.perf_counter() - t_start:.0f} s; "
                      f"waited {monitor.waited:.0f} s for quiet, {monitor.remeasured} measurements repeated)")
    info["load_end"] = load_average()
    info["wall"] = f"{time.perf_counter() - t_start:.0f} s"
    if not monitor.available:
        info["load_note"] = "not watched (no /proc/stat)"
    else:
        info["load_note"] = (f"watched; waited {monitor.waited:.0f} s for a quiet machine and repeated "
                             f"{monitor.remeasured} disturbed measurements (threshold {args.max_foreign} cores)")
        if monitor.exhausted:
            info["load_note"] += "; the --max-wait budget ran out, so later measurements may be disturbed"

    rows = summarise(runners, args.max_foreign)
    table = Table(title=f"Training throughput, tokens/s (median of up to {repeats} clean repeats; {info['threads']} threads, nproc {info['nproc']})")
    for col in ("model", "N", "tokens/s core", "tokens/s per config", "baseline tokens/s", "ratio core/baseline"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        style = "bold red" if row["N"] == 1 and row["ratio"] < 0.9 else None
        table.add_row(row["model"], str(row["N"]), f"{row['core']:,.0f}", f"{row['per_config']:,.0f}",
                      f"{row['baseline']:,.0f}", f"{row['ratio']:.3f}", style=style)
    console.print(table)
    console.print(f"load average start {info['load_start']}, end {info['load_end']}; wall {info['wall']}; "
                  f"other processes {info['load_note']}")

    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(rows, info, repeats, args.group_size), encoding="utf-8")
        console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
