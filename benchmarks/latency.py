"""Latency of the lab's screen switches and of opening Detail (issue 11, item 12).

In a temporary folder it fills a store with --runs finished runs (each with a per-batch loss
every 10 steps and an evaluation every 250 of --iters steps, as a trainer would record them;
no training), opens the lab on it under Textual's pilot (`App.run_test`, --size) and presses
keys as a user does, --repeats times over:

    F3 Runs, down, F5 Detail, F4 Results, down, F5 Detail, F2 Experiments

timing each screen key (`benchmarks.keys.timed_press`: until the key is handled, the screen
shown has processed what that queued and has refreshed once). Opening Detail is timed until
its curves, read by a worker thread, are drawn as well: that is when the user sees the run.
The first visit of each screen (its compose) is reported apart from the switches after it.

    python benchmarks/latency.py                    # 64 runs, 20 repeats, 120x36
    python benchmarks/latency.py --out /tmp/latency.md --label after

It prints a table (median, p90 and max per key) and appends it, with the machine's load
average before and after (the numbers mean little without it), to --out
(default benchmarks/results/latency.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/latency.py` from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.keys import run_queue_wait, timed_press  # noqa: E402
from lab.core import events as ev  # noqa: E402
from lab.core.config import RunConfig  # noqa: E402
from lab.store import Store  # noqa: E402

#: The keys of one repeat; those in TIMED are measured, the others move the cursor.
CYCLE = ("f3", "down", "f5", "f4", "down", "f5", "f2")
TIMED = {"f2": "F2 Experiments", "f3": "F3 Runs", "f4": "F4 Results", "f5": "F5 Detail (curves drawn)"}
EXPERIMENTS = """\
default_suite = "bench"

[defaults]
data = "tinyshakespeare"
n_layer = 4

[suites.bench]
grid = { "skips.1" = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], seed = [1, 2, 3, 4, 5, 6, 7, 8] }
"""


def fill_store(store_dir: Path, runs: int, iters: int) -> None:
    """`runs` finished runs of `iters` steps, through the events a worker sends."""
    with Store.open(store_dir) as store:
        for i in range(runs):
            rate, seed = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)[i % 8], 1 + i // 8
            cfg = RunConfig.from_dict(dict(data="tinyshakespeare", n_layer=4, skips={1: rate}, seed=seed,
                                           max_iters=iters, eval_interval=250))
            name = f"skips.1={rate:g},seed={seed}"
            rid = store.enqueue("bench", name, name, cfg, None).run_id
            store.apply(ev.Started(rid, 0, iters, 804096, "cpu", "float32", 4))
            events: list = []
            for step in range(0, iters + 1, 10):
                val = 1.5 + 2.5 * 2.718 ** (-step / 1500) + 0.02 * rate + 0.001 * seed
                events.append(ev.StepLogged(rid, step, val - 0.05, 1e-3, 9800.0))
                if step % 250 == 0:
                    events.append(ev.Evaluated(rid, step, val - 0.04, val, 1e-3))
            store.apply_many(events)
            store.apply(ev.Finished(rid, iters, val, val, val - 0.04, val - 0.004, 60.0, 9800.0))


async def _detail_drawn(pilot, key: str, drawn: asyncio.Event) -> tuple[float, float]:
    """Seconds from the key until Detail has drawn the curves its worker read, and refreshed;
    and the seconds of that the UI thread waited for a CPU."""
    loop = asyncio.get_running_loop()
    drawn.clear()
    wait0 = run_queue_wait()
    t0 = time.perf_counter()
    await timed_press(pilot, key)
    await asyncio.wait_for(drawn.wait(), timeout=60)
    refreshed = loop.create_future()
    pilot.app.screen.call_after_refresh(lambda: refreshed.done() or refreshed.set_result(None))
    await asyncio.wait_for(refreshed, timeout=30)
    elapsed = time.perf_counter() - t0
    wait1 = run_queue_wait()
    return elapsed, (wait1 - wait0) if wait0 is not None and wait1 is not None else 0.0


Timing = tuple[float, float]  # (seconds until shown, seconds of those the UI thread waited for a CPU)


async def measure(store_dir: Path, experiments: Path, repeats: int, size: tuple[int, int]
                  ) -> tuple[dict[str, list[Timing]], dict[str, Timing]]:
    """(timings per timed key over the repeats after the first, timing of each first visit)."""
    from lab.tui.app import LabApp
    from lab.tui.screens.detail import DetailScreen

    drawn = asyncio.Event()
    loaded = DetailScreen.on_detail_screen_loaded

    def on_loaded(screen, message) -> None:  # Detail drew what its worker read
        loaded(screen, message)
        drawn.set()

    DetailScreen.on_detail_screen_loaded = on_loaded  # type: ignore[method-assign]
    times: dict[str, list[Timing]] = {key: [] for key in TIMED}
    first: dict[str, Timing] = {}
    try:
        app = LabApp(store_dir, experiments, start_mode="runs")
        async with app.run_test(size=size) as pilot:
            await pilot.pause(1.0)  # the first store read and the poller are under way
            for repeat in range(repeats + 1):
                for key in CYCLE:
                    if key == "f5":
                        seconds = await _detail_drawn(pilot, key, drawn)
                    else:
                        seconds = await timed_press(pilot, key)
                    if key not in TIMED:
                        continue
                    if repeat == 0:
                        first.setdefault(key, seconds)
                    else:
                        times[key].append(seconds)
            await pilot.press("ctrl+q")
    finally:
        DetailScreen.on_detail_screen_loaded = loaded  # type: ignore[method-assign]
    return times, first


def percentile(values: list[float], q: float) -> float:
    """The q-th quantile (0..1) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    at = q * (len(ordered) - 1)
    lo = int(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


def report(label: str, args: argparse.Namespace, times: dict[str, list[Timing]], first: dict[str, Timing],
           load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> str:
    ms = lambda s: f"{s * 1000:.0f}"  # noqa: E731
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "lab"], capture_output=True,
                           text=True).stdout.strip()
    lines = [
        f"## {label}: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}"
        f"{' + uncommitted changes under lab/' if dirty else ''}",
        "",
        f"{args.runs} finished runs of {args.iters} steps, terminal {args.size[0]}x{args.size[1]}, "
        f"{args.repeats} repeats; {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}"
        + (" (a loaded machine: other processes wanted the CPUs)" if load_before[0] >= (os.cpu_count() or 1) * 0.75
           else ""),
        "",
        "Columns: wall time from the key to the screen shown; the last, the median of that time less"
        " what the UI thread spent waiting for a CPU (Linux schedstat): the part the lab itself costs.",
        "",
        "| key | first visit ms | median ms | p90 ms | max ms | median less CPU wait ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in TIMED.items():
        walls = [wall for wall, _ in times[key]]
        own = [wall - wait for wall, wait in times[key]]
        lines.append(f"| {name} | {ms(first[key][0])} | {ms(statistics.median(walls))} | {ms(percentile(walls, 0.9))} "
                     f"| {ms(max(walls))} | {ms(statistics.median(own))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(120, 36), metavar=("COLUMNS", "LINES"))
    parser.add_argument("--label", default="measured")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.md")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="dropres-latency-"))
    try:
        (folder / "experiments.toml").write_text(EXPERIMENTS)
        fill_store(folder / "runs", args.runs, args.iters)
        load_before = os.getloadavg()
        times, first = asyncio.run(measure(folder / "runs", folder / "experiments.toml", args.repeats,
                                           tuple(args.size)))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(args.label, args, times, first, load_before, load_after)
    print(text)
    if not args.out.exists():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Lab latency (benchmarks/latency.py)\n\n" + (__doc__ or "").split("\n\n")[0] + "\n\n")
    with args.out.open("a") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
