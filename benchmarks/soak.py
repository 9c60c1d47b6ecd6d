"""Soak: many tiny runs through a background driver with the interactive lab open (issue 6, "Load").

In a temporary folder it generates a corpus and an experiments.toml whose suite `soak` is a
grid of --runs tiny runs (n_layer 1, n_embd 16, block 16, batch 4, --iters steps, evaluated
every --eval-interval; at 200 steps 64 runs end in seconds, too soon to see memory trends, hence
5000 by default; the grid varies skips.1 and seed, so the scheduler packs them into
groups of --group-size). Then, in this process, it opens the lab (`LabApp` under Textual's
pilot, `App.run_test`) and launches the suite from it, as the Experiments screen does: the
lab enqueues the runs and starts a detached background driver with --workers workers. While
the runs train:

- a key every --key-interval seconds (F3 Runs, F4 Results, F5 Detail, Escape back, cursor
  up and down), posted to the app as the terminal driver would, with its latency: until the
  app has handled it, the screen shown has processed what that queued, and that screen has
  refreshed once more (the pilot's `_wait_for_screen`, then `call_after_refresh`; see
  `benchmarks.keys.timed_press` for why not `pilot.press`);
- a reader thread runs `dropres-lab results --format json` in a loop, each a separate process
  reading the store: it counts successes and errors (a non-zero exit, invalid JSON, or fewer
  finished results than a previous read: a finished result must never disappear);
- every --sample-every seconds it samples the resident memory (VmRSS) of the lab (this
  process), of the driver and of the driver's workers.

When every run has ended (or --timeout passes) it closes the lab, lets the driver exit (or
stops it), checks the store (integrity, every run's status, every finished run's evaluation
steps exactly once), prints a table and writes --out (default benchmarks/results/soak.md).

    python benchmarks/soak.py                      # 64 runs of 5000 steps: one to two minutes on 2 busy cores
    python benchmarks/soak.py --runs 12 --iters 100 --out /tmp/soak.md

Exit code 0 when every run finished with its full history and nothing was lost, 1 otherwise.
`run_soak` is the functional core, also used by tests/test_soak.py with fewer runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/soak.py` from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.keys import timed_press  # noqa: E402
from lab.experiments import load_experiments  # noqa: E402
from lab.workers.settings import DriverSettings  # noqa: E402
from lab.store import DriverLock, Store  # noqa: E402

SUITE = "soak"
ENDED = ("finished", "failed", "diverged", "stopped")
SKIP_RATES = (0.0, 0.1, 0.2, 0.3)
#: One key per --key-interval, cycling: screen switches and cursor moves, nothing that changes runs.
KEYS = ("f3", "down", "down", "down", "f4", "down", "down", "up", "f5", "escape", "f3", "up", "up", "f4", "f3")
SIZE = (120, 36)
#: Keys that show a screen: the first visit mounts it, later ones only switch to it.
SCREEN_KEYS = ("f3", "f4", "f5")


# -- the lab folder -----------------------------------------------------------------------------


def write_corpus(path: Path, chars: int = 40000, seed: int = 0) -> Path:
    """A deterministic pseudo-text (the same recipe as the tests' corpus)."""
    rng = random.Random(seed)
    words = ["the", "king", "queen", "of", "and", "to", "my", "lord", "thou", "art", "love", "death"]
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(words) + ("\n" if rng.random() < 0.1 else ""))
    path.write_text(" ".join(out)[:chars], encoding="utf-8")
    return path


def write_experiments(folder: Path, runs: int, iters: int, eval_interval: int) -> Path:
    """experiments.toml with the suite `soak`: a grid of `runs` runs (skip-1 rates x seeds)."""
    corpus = write_corpus(folder / "corpus.txt")
    n_rates = next(k for k in (4, 2, 1) if runs % k == 0)
    rates = ", ".join(f"{r}" for r in SKIP_RATES[:n_rates])
    seeds = ", ".join(str(1000 + i) for i in range(runs // n_rates))
    text = f"""default_suite = "{SUITE}"

[defaults]
data = "{corpus}"
n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
batch_size = 4
dropout = 0.0
skips = {{ 1 = 0.0 }}
max_iters = {iters}
lr = 1e-3
min_lr = 1e-4
warmup_iters = 10
eval_interval = {eval_interval}
eval_iters = 2

[suites.{SUITE}]
description = "soak: many tiny runs"
grid = {{ "skips.1" = [{rates}], seed = [{seeds}] }}
"""
    path = folder / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- measurements ----------------------------------------------------------------------------------


def rss_mib(pid: int | str) -> float | None:
    """Resident memory of a process in MiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Reader:
    """`dropres-lab results --format json` in a loop, in a thread; each call its own process."""

    store_dir: Path
    pause_s: float = 1.0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    most_finished: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="results-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=90)

    def _loop(self) -> None:
        args = [sys.executable, "-m", "lab", "results", "--store", str(self.store_dir), "--format", "json"]
        while not self._stop.is_set():
            try:
                res = subprocess.run(args, capture_output=True, text=True, timeout=60,
                                     env={**os.environ, "COLUMNS": "200"})
            except subprocess.TimeoutExpired:
                self.errors.append("timed out after 60 s")
                continue
            if res.returncode != 0:
                self.errors.append(f"exit {res.returncode}: {res.stderr.strip()[-300:]}")
            else:
                try:
                    data = json.loads(res.stdout)
                except json.JSONDecodeError as exc:
                    self.errors.append(f"invalid JSON: {exc}")
                else:
                    finished = sum(r.get("status") == "finished" for r in data)
                    if finished < self.most_finished:
                        self.errors.append(f"{finished} finished results after {self.most_finished} earlier")
                    self.most_finished = max(self.most_finished, finished)
                    self.ok += 1
            self._stop.wait(self.pause_s)

    @property
    def reads(self) -> int:
        return self.ok + len(self.errors)


@dataclass
class Outcome:
    runs: int
    iters: int
    workers: int
    group_size: int
    statuses: dict[str, int] = field(default_factory=dict)
    finished: int = 0
    complete_histories: int = 0  # finished runs with every evaluation step exactly once
    lost: int = 0
    integrity: str = ""
    metric_points: int = 0
    latencies: list[tuple[str, float, float]] = field(default_factory=list)  # (key, seconds, of which waiting for a CPU)
    slow_keys: int = 0
    reader_ok: int = 0
    reader_errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, float | None, float | None, float | None]] = field(default_factory=list)
    driver_pid: int | None = None
    driver_exited: str = ""
    wall_s: float = 0.0
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.timed_out and self.finished == self.runs and self.complete_histories == self.runs
                and self.lost == 0 and self.integrity == "ok" and not self.reader_errors)


# -- the soak --------------------------------------------------------------------------------------


def _worker_pids(app) -> set[int]:
    pids = set()
    for live in list(app.live.values()):
        pid = live.row.provenance.get("worker_pid")
        if isinstance(pid, int):
            pids.add(pid)
    return pids


async def _drive(lab_dir: Path, experiments: Path, out: Outcome, *, key_interval: float, sample_every: float,
                 timeout: float, reader: Reader, log) -> None:
    from lab.tui.app import LabApp

    store_dir = lab_dir / "runs"
    settings = DriverSettings(device="cpu", workers=out.workers, group_size=out.group_size, linger_s=2.0)
    app = LabApp(store_dir, experiments, driver_settings=settings, start_mode="runs")
    try:
        async with app.run_test(size=SIZE) as pilot:
            specs = load_experiments(experiments).select([SUITE])
            t0 = time.monotonic()
            deadline = t0 + timeout
            app.launch(specs)  # what the Experiments screen's launch does
            while app.driver is None or not app.driver.alive or len(app.live) < out.runs:
                if time.monotonic() > deadline:
                    out.timed_out = True
                    out.notes.append("the driver did not start")
                    return
                await pilot.pause(0.2)
            out.driver_pid = app.driver.pid
            log(f"launched {len(app.live)} runs; background driver pid {out.driver_pid}")
            reader.start()
            workers: set[int] = set()
            next_sample = 0.0
            i = 0
            last_report = 0.0
            while True:
                now = time.monotonic()
                statuses = [live.row.status for live in app.live.values()]
                ended = sum(s in ENDED for s in statuses)
                workers |= _worker_pids(app)
                if now >= next_sample:
                    worker_rss = [r for r in (rss_mib(p) for p in workers) if r is not None]
                    out.rss.append((now - t0, rss_mib("self"), rss_mib(out.driver_pid),
                                    sum(worker_rss) if worker_rss else None))
                    next_sample = now + sample_every
                if now - last_report >= 10:
                    last_report = now
                    worst = max((s for _, s, _ in out.latencies), default=0.0)
                    log(f"{now - t0:5.0f} s: {ended}/{out.runs} ended, {statuses.count('running')} running; "
                        f"{len(out.latencies)} keys, worst {worst * 1000:.0f} ms; reader {reader.ok} ok, "
                        f"{len(reader.errors)} errors")
                if ended == out.runs and len(app.live) >= out.runs:
                    break
                if now > deadline:
                    out.timed_out = True
                    out.notes.append(f"timed out after {timeout:.0f} s with {out.runs - ended} runs not ended")
                    break
                key = KEYS[i % len(KEYS)]
                i += 1
                out.latencies.append((key, *await timed_press(pilot, key)))
                await asyncio.sleep(key_interval)
            out.wall_s = time.monotonic() - t0
            now = time.monotonic()
            worker_rss = [r for r in (rss_mib(p) for p in workers) if r is not None]
            out.rss.append((now - t0, rss_mib("self"), rss_mib(out.driver_pid), sum(worker_rss) if worker_rss else None))
    finally:
        app.store.close()


def stop_driver(store_dir: Path, wait_s: float = 15.0) -> str:
    """Let a lingering background driver exit by itself; else SIGTERM its group, then SIGKILL."""
    deadline = time.time() + wait_s
    while time.time() < deadline and DriverLock.is_held(store_dir):
        time.sleep(0.2)
    if not DriverLock.is_held(store_dir):
        return "exited by itself"
    pid, _ = DriverLock(store_dir).holder()
    if pid is None:
        return "lock held by an unknown process"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline and DriverLock.is_held(store_dir):
        time.sleep(0.2)
    if not DriverLock.is_held(store_dir):
        return "stopped with SIGTERM"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return "killed with SIGKILL"


def check_store(store_dir: Path, out: Outcome, eval_interval: int) -> None:
    expected = list(range(0, out.iters + 1, eval_interval))
    if expected[-1] != out.iters:
        expected.append(out.iters)
    db = sqlite3.connect(store_dir / "store.sqlite3")
    try:
        out.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        out.metric_points = db.execute("SELECT count(*) FROM metrics").fetchone()[0]
    finally:
        db.close()
    with Store.open(store_dir) as store:
        runs = store.runs(SUITE)
        for run in runs:
            out.statuses[run.status] = out.statuses.get(run.status, 0) + 1
            if run.status != "finished":
                continue
            out.finished += 1
            if [m[0] for m in store.metrics(run.run_id, "val")] == expected:
                out.complete_histories += 1
    out.lost = out.runs - len(runs) + sum(n for s, n in out.statuses.items() if s in ("failed", "stopped", "diverged"))
    out.lost += out.finished - out.complete_histories


def run_soak(runs: int = 64, iters: int = 5000, eval_interval: int = 250, workers: int = 2, group_size: int = 8,
             key_interval: float = 0.25, sample_every: float = 3.0, timeout: float = 900.0,
             folder: Path | None = None, log=lambda message: None) -> Outcome:
    """The soak's functional core: returns what happened (see `Outcome.ok`). The driver is
    always stopped and, unless `folder` is given, the temporary folder removed."""
    out = Outcome(runs, iters, workers, group_size)
    own = folder is None
    lab_dir = Path(tempfile.mkdtemp(prefix="dropres-soak-")) if own else folder
    lab_dir.mkdir(parents=True, exist_ok=True)
    store_dir = lab_dir / "runs"
    experiments = write_experiments(lab_dir, runs, iters, eval_interval)
    reader = Reader(store_dir)
    cwd = os.getcwd()
    os.chdir(lab_dir)  # the background driver starts in the working folder
    try:
        asyncio.run(_drive(lab_dir, experiments, out, key_interval=key_interval, sample_every=sample_every,
                           timeout=timeout, reader=reader, log=log))
    finally:
        os.chdir(cwd)
        reader.stop()
        out.reader_ok, out.reader_errors = reader.ok, list(reader.errors)
        out.driver_exited = stop_driver(store_dir)
        try:
            if (store_dir / "store.sqlite3").exists():
                check_store(store_dir, out, eval_interval)
            log_text = (store_dir / "driver.log").read_text(errors="replace") if (store_dir / "driver.log").exists() else ""
            if "Traceback" in log_text:
                out.notes.append("the driver log has a traceback")
        finally:
            if own:
                shutil.rmtree(lab_dir, ignore_errors=True)
    return out


# -- the report ------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} MiB"


def _series(out: Outcome, index: int) -> tuple[float | None, float | None, float | None]:
    values = [s[index] for s in out.rss if s[index] is not None]
    if not values:
        return None, None, None
    return values[0], values[-1], max(values)


def rss_growth(out: Outcome, index: int) -> tuple[float, float] | None:
    """(MiB, seconds) from the first sample after a quarter of the run (screens visited, caches
    warm, workers started) to the last sample: what "flat" should keep near zero."""
    samples = [(s[0], s[index]) for s in out.rss if s[index] is not None]
    if len(samples) < 3:
        return None
    t_end = samples[-1][0]
    t0, v0 = next((t, v) for t, v in samples if t >= t_end / 4)
    return samples[-1][1] - v0, t_end - t0


def summary_rows(out: Outcome) -> list[tuple[str, str]]:
    lat = [s for _, s, _ in out.latencies]
    rows = [
        ("runs finished", f"{out.finished}/{out.runs}" + (f" (statuses: {out.statuses})" if set(out.statuses) - {"finished"} else "")),
        ("finished with every eval step once", f"{out.complete_histories}/{out.runs}"),
        ("lost", str(out.lost)),
        ("store integrity", out.integrity or "-"),
        ("wall time (launch to last run ended)", f"{out.wall_s:.0f} s" + (" (timed out)" if out.timed_out else "")),
        ("key presses", str(len(lat))),
    ]
    if lat:
        q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) >= 2 else [lat[0]] * 19
        worst_key, worst, worst_wait = max(out.latencies, key=lambda kv: kv[1])
        later = [s for i, (k, s, _) in enumerate(out.latencies) if k not in SCREEN_KEYS or
                 any(k2 == k for k2, _, _ in out.latencies[:i])]
        on_cpu = [s - w for _, s, w in out.latencies]
        rows += [
            ("key latency: median", _ms(statistics.median(lat))),
            ("key latency: 95th percentile", _ms(q[18])),
            ("key latency: worst", f"{_ms(worst)} ({worst_key}; {_ms(worst_wait)} of it waiting for a CPU)"),
            ("key latency: worst, each screen's first visit left out", _ms(max(later)) if later else "-"),
            ("key latency less waits for a CPU: median / worst", f"{_ms(statistics.median(on_cpu))} / {_ms(max(on_cpu))}"),
            ("key presses over 200 ms", str(sum(s > 0.2 for s in lat))),
        ]
    rows.append(("results reader: successes / errors", f"{out.reader_ok} / {len(out.reader_errors)}"))
    for label, index in (("lab (TUI) RSS", 1), ("driver RSS", 2), ("workers RSS (sum)", 3)):
        start, end, most = _series(out, index)
        rows.append((f"{label}: start / end / max", f"{_mib(start)} / {_mib(end)} / {_mib(most)}"))
    for label, index in (("lab (TUI) RSS growth after warm-up", 1), ("driver RSS growth after warm-up", 2)):
        growth = rss_growth(out, index)
        rows.append((label, "-" if growth is None else f"{growth[0]:+.1f} MiB over {growth[1]:.0f} s "
                     f"({growth[0] / max(growth[1], 1e-9) * 60:+.1f} MiB/min)"))
    rows += [
        ("metric points in the store", f"{out.metric_points:,}"),
        ("driver at the end", out.driver_exited),
    ]
    return rows


def per_key_rows(out: Outcome) -> list[tuple[str, int, str, str, str]]:
    """(key, presses, first press, median, worst)."""
    by: dict[str, list[float]] = {}
    for key, s, _ in out.latencies:
        by.setdefault(key, []).append(s)
    return [(key, len(v), _ms(v[0]), _ms(statistics.median(v)), _ms(max(v))) for key, v in sorted(by.items())]


def write_markdown(out: Outcome, path: Path, args: argparse.Namespace, load: tuple[str, str]) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Soak: tiny runs on a background driver with the lab open",
        "",
        f"Written by `benchmarks/soak.py` on {now}; {'PASS' if out.ok else 'FAIL'}.",
        "",
        f"- machine: `nproc` {os.cpu_count()}, Python {platform.python_version()}; load average (1/5/15 min) "
        f"at start {load[0]}, at end {load[1]} (other work was running)",
        f"- {out.runs} runs (suite `{SUITE}`: grid of skips.1 x seed), each n_layer 1, n_embd 16, block 16, batch 4, "
        f"{out.iters} steps, evaluated every {args.eval_interval}; background driver on CPU with {out.workers} workers, "
        f"groups of up to {out.group_size}",
        f"- the lab (`LabApp`, Textual pilot, {SIZE[0]}x{SIZE[1]}) launched the suite and stayed open; one key every "
        f"{args.key_interval:g} s cycling {' '.join(KEYS)}; latency = from posting the key event to the app until it was "
        "handled, the screen shown had processed what that queued (the pilot's `_wait_for_screen`, twice) and refreshed "
        "once more (`call_after_refresh`); not `pilot.press`, whose idle heuristic alone costs about 60 ms",
        "- a reader thread ran `dropres-lab results --format json` in a loop (one process per read, 1 s apart); an "
        "error is a non-zero exit, invalid JSON, or fewer finished results than an earlier read",
        "- waiting for a CPU: the event loop thread's run-queue delay during the key (/proc/thread-self/schedstat); "
        "the machine has 2 cores shared by the 2 workers, the reader's processes, the lab and other work",
        f"- RSS (VmRSS) sampled every {args.sample_every:g} s: this process (the lab), the driver, the sum of its workers; "
        "growth after warm-up is from the first sample after a quarter of the run to the last",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(out)]
    lines += ["", "Key latency by key (a screen key's first press mounts that screen):", "",
              "| key | presses | first press | median | worst |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {n} | {f} | {m} | {w} |" for k, n, f, m, w in per_key_rows(out)]
    lines += ["", "Memory over time (MiB):", "", "| t (s) | lab | driver | workers |", "|---:|---:|---:|---:|"]
    step = max(1, len(out.rss) // 12)
    picked = out.rss[::step] + ([out.rss[-1]] if out.rss and (len(out.rss) - 1) % step else [])
    for t, tui, drv, wrk in picked:
        lines.append(f"| {t:.0f} | {_mib(tui)[:-4]} | {_mib(drv)[:-4]} | {_mib(wrk)[:-4]} |")
    if out.reader_errors:
        lines += ["", "Reader errors (first 5):", ""] + [f"- {e}" for e in out.reader_errors[:5]]
    if out.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in out.notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=64, help="runs in the suite (default 64)")
    p.add_argument("--iters", type=int, default=5000, help="steps per run (default 5000; 64 runs of 200 end in seconds)")
    p.add_argument("--eval-interval", type=int, default=250, help="steps between evaluations (default 250)")
    p.add_argument("--workers", type=int, default=2, help="background driver workers (default 2)")
    p.add_argument("--group-size", type=int, default=8, help="most runs per batched group (default 8)")
    p.add_argument("--key-interval", type=float, default=0.25, help="seconds between key presses (default 0.25)")
    p.add_argument("--sample-every", type=float, default=3.0, help="seconds between RSS samples (default 3)")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds (default 900)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.md", help="markdown report")
    p.add_argument("--keep", type=Path, default=None, help="use (and keep) this folder instead of a temporary one")
    args = p.parse_args(argv)
    if args.runs < 1 or args.iters < 1 or args.eval_interval < 1:
        p.error("--runs, --iters and --eval-interval must be positive")

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    load_start = _loadavg()
    t0 = time.time()
    out = run_soak(args.runs, args.iters, args.eval_interval, args.workers, args.group_size, args.key_interval,
                   args.sample_every, args.timeout, args.keep,
                   log=lambda m: console.print(f"[dim]{time.time() - t0:6.1f}s[/] {m}"))
    table = Table(title=f"soak: {args.runs} runs x {args.iters} steps, {args.workers} workers", title_justify="left")
    table.add_column("measure")
    table.add_column("value")
    for k, v in summary_rows(out):
        table.add_row(k, v)
    console.print(table)
    for e in out.reader_errors[:5]:
        console.print(f"reader error: {e}", markup=False)
    for n in out.notes:
        console.print(f"note: {n}", markup=False)
    write_markdown(out, args.out, args, (load_start, _loadavg()))
    console.print(f"wrote {args.out}; {'PASS' if out.ok else 'FAIL'}")
    return 0 if out.ok else 1


if __name__ == "__main__":
    sys.exit(main())
