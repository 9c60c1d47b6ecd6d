"""Where a short sweep's wall time goes, from process start to exit (issue 12).

Runs `dropres-lab run --headless SUITE --fresh` as a child process, several times, and splits
each run's wall time, from the moment the child is started to the moment it has exited:

- the driver's start: Python and the CLI's imports, the experiments file, the corpus check,
  the store's lock, open and enqueue, dtype "auto" (cached or measured), spawning the workers;
- each worker's start: its Python, `import torch` and `lab.core.train` (to WorkerReady), then
  corpus, model and optimiser (to its group's Started);
- per group what `Finished.phase_s` reports: steps, evaluations, the exact validation pass,
  checkpoints the training waited for, setup;
- the end: workers' exit, the results table, the interpreter's exit.

The child is the real CLI (`lab.cli.main`, as `python -m lab` runs it) with timestamps taken
by wrapping the functions the headless path calls; nothing in the lab is changed for it.

Two shares of "outside training steps and evaluations" are reported, the exact validation pass
counted as an evaluation (it is the run's final, exact evaluation):
- of the wall time: the seconds during which no group was training or evaluating (before the
  first group's first step, after the last group's end), over the wall time;
- of workers x wall: every worker-second not spent in a step or an evaluation (a worker
  waiting for the other group at the end counts as outside).

    python benchmarks/fixed_costs.py                        # the quick suite, 3 repetitions
    python benchmarks/fixed_costs.py quick --reps 5 --out /tmp/fc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALUATING = ("steps", "evaluations", "exact")


# -- the child: the CLI with timestamps ------------------------------------------------------
def child(t_spawn: float, out_file: str, cli_args: list[str]) -> None:
    """Run the CLI in this process, writing its timeline (seconds since `t_spawn`) to `out_file`."""
    marks: dict[str, float] = {"python up": time.time() - t_spawn}
    ready: list[float] = []
    started: dict[str, float] = {}
    finished: list[dict] = []

    def mark(name: str) -> None:
        marks.setdefault(name, time.time() - t_spawn)

    sys.path.insert(0, str(ROOT))
    import lab.cli as cli

    mark("cli imported")
    import lab.experiments as experiments
    import lab.headless as headless
    from lab.core import events as ev
    from lab.workers import local, startup
    from lab.workers.executor import WorkerReady

    mark("run command imported")  # what `run` imports when it starts (lab.experiments, lab.headless)

    def around(owner, name: str, before: str | None, after: str | None) -> None:
        original = getattr(owner, name, None)
        if original is None:  # a lab from before this benchmark's parts existed
            return

        def wrapped(*args, **kwargs):
            if before:
                mark(before)
            try:
                return original(*args, **kwargs)
            finally:
                if after:
                    mark(after)

        setattr(owner, name, wrapped)

    around(experiments, "load_experiments", None, "experiments loaded")
    around(headless, "cuda_device_count", "cuda count start", "cuda counted")
    around(headless, "check_corpora", "corpus check start", "corpus checked")
    around(startup.DriverSession, "__enter__", "lock start", "store open")
    around(headless, "enqueue_specs", None, "enqueued")
    around(startup.DriverSession, "start_workers", "start_workers", "workers started")
    around(local.LocalExecutor, "start", "spawn start", "spawned")
    around(local.LocalExecutor, "shutdown", "shutdown start", "workers exited")
    around(headless, "final_tables", "results table start", None)
    around(headless, "run_headless", None, "run_headless returned")
    poll = local.LocalExecutor.poll

    def timed_poll(self, timeout):
        items = poll(self, timeout)
        ready.extend(time.time() - t_spawn for _, _, e in items if isinstance(e, WorkerReady))
        return items

    local.LocalExecutor.poll = timed_poll
    on_event = headless.ProgressView.on_event

    def timed_event(view, event) -> None:
        t = time.time() - t_spawn
        if isinstance(event, ev.Started):
            started[event.run_id] = t
        elif isinstance(event, ev.Finished):
            finished.append({"run_id": event.run_id, "t": t, "phase_s": event.phase_s})
        on_event(view, event)

    headless.ProgressView.on_event = timed_event
    sys.argv = ["dropres-lab", *cli_args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    mark("cli returned")
    Path(out_file).write_text(json.dumps({"marks": marks, "ready": ready, "started": started, "finished": finished,
                                          "code": code, "torch_in_driver": "torch" in sys.modules}))
    sys.exit(code)


# -- the parent: repetitions and the report ---------------------------------------------------
def one_run(suite: str, file: Path, workers: int | None, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="dropres-fixed-") as tmp:
        out = Path(tmp) / "timeline.json"
        args = ["run", "--headless", suite, "--file", str(file), "--store", str(Path(tmp) / "store"), "--fresh", *extra]
        if workers:
            args += ["--workers", str(workers)]
        load = os.getloadavg()[0]
        t_spawn = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", repr(t_spawn), str(out), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
        wall = time.time() - t_spawn
        if proc.returncode != 0:
            raise SystemExit(f"the {suite} suite did not finish (exit code {proc.returncode}): {proc.stderr[-2000:]}")
        timeline = json.loads(out.read_text())
    timeline.update(wall=wall, load=load)
    return timeline


def parts(t: dict) -> dict[str, float]:
    """The timeline as named seconds (driver side, worker side, end) and the two shares."""
    m, wall = t["marks"], t["wall"]
    groups: dict[tuple, tuple[float, dict]] = {}  # one entry per group (its runs report the same phases)
    for f in t["finished"]:
        groups.setdefault(tuple(sorted(f["phase_s"].items())), (f["t"], f["phase_s"]))
    starts = sorted(set(t["started"].values()))
    first_start, last_end = min(starts), max(end for end, _ in groups.values())
    n_workers = max(len(t["ready"]), 1)
    busy = sum(p[k] for _, p in groups.values() for k in EVALUATING)
    total = {k: sum(p.get(k, 0.0) for _, p in groups.values()) for k in ("setup", "steps", "evaluations", "exact",
                                                                        "checkpoints")}
    spawn_start = m["spawn start"]
    out = {
        "wall": wall,
        "python start": m["python up"],
        "CLI imports": m["cli imported"] - m["python up"],
        "run command's imports": m["run command imported"] - m["cli imported"],
        "experiments file": m["experiments loaded"] - m["run command imported"],
        "CUDA device count": m["cuda counted"] - m["cuda count start"],
        "corpus check": m["corpus checked"] - m["corpus check start"],
        "lock, store open, enqueue": m["enqueued"] - m["lock start"],
        # before this change there is no start_workers: "auto" was decided in Driver.run, after the spawn
        "dtype decision, adopting the workers": m.get("workers started", 0.0) - m.get("start_workers", 0.0),
        "spawn call": m["spawned"] - spawn_start,
        "driver start to spawn": spawn_start,
        "worker start (spawn to ready, slowest)": max(t["ready"]) - spawn_start,
        "ready to first group's Started (corpus, model, optimiser)": first_start - max(min(t["ready"]), spawn_start),
        "start to first Started": first_start,
        "setup (all groups)": total["setup"],
        "steps (all groups)": total["steps"],
        "evaluations (all groups)": total["evaluations"],
        "exact pass (all groups)": total["exact"],
        "checkpoints waited for (all groups)": total["checkpoints"],
        "first to last group end": last_end - min(end for end, _ in groups.values()),
        "last Finished to workers exited": m["workers exited"] - last_end,
        "results table": m["run_headless returned"] - m["results table start"],
        "interpreter exit": wall - m["cli returned"],
        "last Finished to exit": wall - last_end,
        "workers": n_workers,
        "outside, share of wall": (first_start + wall - last_end) / wall,
        "outside, share of workers x wall": (n_workers * wall - busy) / (n_workers * wall),
        "torch in driver": float(t["torch_in_driver"]),
    }
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(float(sys.argv[2]), sys.argv[3], sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", nargs="?", default="quick")
    ap.add_argument("--file", type=Path, default=ROOT / "experiments.toml")
    ap.add_argument("--workers", type=int, help="as run --headless (default: one per group up to the cores)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the table gives each part's minimum")
    ap.add_argument("--dtype", help="as run --headless --dtype (default: the file's)")
    ap.add_argument("--out", type=Path, help="folder to write fixed_costs_run.md into")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import emit_report

    extra = ["--dtype", args.dtype] if args.dtype else []
    one_run(args.suite, args.file.resolve(), args.workers, extra)  # not counted: fills the dtype and file caches
    runs = []
    for i in range(args.reps):
        runs.append(parts(one_run(args.suite, args.file.resolve(), args.workers, extra)))
        print(f"rep {i + 1}: wall {runs[-1]['wall']:.2f} s, outside {runs[-1]['outside, share of wall']:.1%} of wall, "
              f"{runs[-1]['outside, share of workers x wall']:.1%} of workers x wall; load {os.getloadavg()[0]:.2f}",
              flush=True)
    best = min(runs, key=lambda r: r["wall"])
    loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
    walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
    lines = [
        f"`python benchmarks/fixed_costs.py {args.suite} --reps {args.reps}`{' --dtype ' + args.dtype if args.dtype else ''}: "
        f"{best['workers']:.0f} workers; walls {walls} s; "
        f"load average at the end {loads}. Columns: the fastest repetition, and each part's minimum over all.",
        "",
        "| part | fastest run, s | minimum, s |",
        "|---|---:|---:|",
    ]
    for key in best:
        if key in ("workers", "torch in driver") or key.startswith("outside"):
            continue
        lines.append(f"| {key} | {best[key]:.3f} | {min(r[key] for r in runs):.3f} |")
    for key in ("outside, share of wall", "outside, share of workers x wall"):
        lines.append(f"| **{key}** | **{best[key]:.1%}** | {min(r[key] for r in runs):.1%} |")
    lines += ["", f"torch imported by the driver process: {'yes' if best['torch in driver'] else 'no'}."]
    emit_report(lines, args.out, "fixed_costs_run.md")


if __name__ == "__main__":
    main()
