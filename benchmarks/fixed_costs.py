"""Where a short sweep's wall time goes: training steps and evaluations against everything else (issue 12).

Runs a suite headless in this process (the driver here, its workers spawned as in
`dropres-lab run --headless`), hears every event, and splits the wall time from this
script's start to the end of the run: the workers' start (spawn, imports, corpus, model,
optimiser: to each group's Started), and per group what `Finished.phase_s` reports (setup,
steps, evaluations, the exact validation pass, checkpoints the training waited for), then
the tear-down. The headline is the share of the workers' wall time (workers x wall) not
spent in training steps or evaluations.

    python benchmarks/fixed_costs.py                       # the quick suite
    python benchmarks/fixed_costs.py quick --out /tmp/fc      # also writes /tmp/fc/fixed_costs_run.md
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

import lab.headless as headless  # noqa: E402
from benchmarks.report import emit_report  # noqa: E402
from lab.core import events as ev  # noqa: E402
from lab.experiments import load_experiments  # noqa: E402

PHASES = ("setup", "steps", "evaluations", "exact", "checkpoints")


def timed_suite(file: Path, suite: str, store: Path, workers: int | None) -> tuple[float, list[tuple[float, object]]]:
    """Run `suite` headless; (wall seconds from this script's start, [(seconds, event)])."""
    heard: list[tuple[float, object]] = []
    view_on_event = headless.ProgressView.on_event

    def on_event(view, event) -> None:
        heard.append((time.perf_counter() - T0, event))
        view_on_event(view, event)

    headless.ProgressView.on_event = on_event
    try:
        specs = load_experiments(file).select([suite])
        code = headless.run_headless(specs, headless.HeadlessOptions(store=str(store), fresh=True, workers=workers),
                                     Console(file=io.StringIO()))
    finally:
        headless.ProgressView.on_event = view_on_event
    if code != 0:
        raise SystemExit(f"the {suite} suite did not finish (exit code {code})")
    return time.perf_counter() - T0, heard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", nargs="?", default="quick")
    ap.add_argument("--file", type=Path, default=ROOT / "experiments.toml")
    ap.add_argument("--workers", type=int, help="as run --headless (default: one per group up to the cores)")
    ap.add_argument("--out", type=Path, help="folder to write fixed_costs.md into")
    args = ap.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="dropres-fixed-") as tmp:
        wall, heard = timed_suite(args.file, args.suite, Path(tmp) / "store", args.workers)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = {e.run_id: t for t, e in heard if isinstance(e, ev.Started)}
    finished = [(t, e) for t, e in heard if isinstance(e, ev.Finished)]
    groups: dict[tuple, tuple[float, float, dict]] = {}  # one entry per group (its runs report the same phases)
    for t, e in finished:
        phases = getattr(e, "phase_s", {}) or {"run": e.wall_s}  # a lab before issue 12: the group's wall only
        groups.setdefault(tuple(sorted(phases.items())), (started[e.run_id], t, phases))
    pids = {e.pid for _, e in heard if isinstance(e, ev.Started)}
    n_workers = len(pids)
    total = {p: sum(g[2].get(p, 0.0) for g in groups.values()) for p in PHASES + ("run",)}
    first_start = min(started.values())
    busy = total["steps"] + total["evaluations"]
    outside = n_workers * wall - busy
    lines = [
        f"`python benchmarks/fixed_costs.py {args.suite}`: {len(finished)} runs in {len(groups)} groups on "
        f"{n_workers} workers, wall {wall:.1f} s; load average before {load}, after {load_after}.",
        "",
        "| part | seconds | share of workers x wall |",
        "|---|---:|---:|",
        f"| start to the first group's first step (spawn, imports, corpus, model, optimiser) | {first_start:.2f} | "
        f"{first_start * n_workers / (n_workers * wall):.0%} |",
    ]
    for p in PHASES + ("run",):
        if not total[p]:
            continue
        lines.append(f"| {p} (all groups) | {total[p]:.2f} | {total[p] / (n_workers * wall):.0%} |")
    tail = wall - max(t for t, _ in finished)
    lines += [
        f"| after the last Finished (tear-down, results table) | {tail:.2f} | {tail * n_workers / (n_workers * wall):.0%} |",
        "",
        f"Outside training steps and evaluations: {outside:.1f} of {n_workers} x {wall:.1f} worker-seconds = "
        f"**{outside / (n_workers * wall):.0%}** (the exact validation pass counted as outside: it is "
        f"{total['exact'] / (n_workers * wall):.0%}).",
    ]
    emit_report(lines, args.out, "fixed_costs_run.md")


if __name__ == "__main__":
    main()
