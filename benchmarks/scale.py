"""Sweeps of 1,000 to 100,000 runs: every step of the sweep machinery, timed (issue 17).

For each size N it writes an experiments file whose one suite is a grid over four rates (and
seeds for 100,000), 2 blocks and a long first evaluation, then measures, in a temporary folder:

* validate      `dropres-lab validate` (wall seconds and peak memory of the process)
* enqueue       `run --headless --max-iters 1`: seconds until it prints "training N runs"
                (validation, corpus check, enqueue and planning: before the first run starts)
* stop          Ctrl-C sent 3 s after the first run started (its first evaluation, in groups of
                16): seconds until the process has exited
* plan          the driver's planning in-process: read the queue from the store (its light
                read: id, group, resume step) and group it
* dispatch      one dispatch of the driver in-process to two idle workers with every run queued:
                plan, then read whole rows of the two groups handed out
* stop marks    in-process: every queued run marked "stopped before it started" (`stop_runs`)
* poll          one idle poll of the driver in-process (requests, queue, finished?) with every
                run finished: must not grow with the finished runs
* results       `dropres-lab results` (Rich table), `--format json` and `--format csv`, with
                every run given a finished result in the store (wall seconds, peak memory)
* tui           the lab opened on the store under Textual's pilot: seconds to the first
                frame of Runs, then one key (down) on Runs and on Results
* lab           (`--only lab`) the lab on a store built directly through `Store.enqueue_many`
                and `Store.apply_many` (60 % finished, 16 running, the rest queued; no
                experiments file): the first frame of Runs (wall and CPU seconds), down and
                page-down on Runs, ctrl+end to the last run (a new window read in SQL), a
                filter ("running"), opening Results (the best 100 of the suite ranked) and
                `m` (100 more), each until the screen shows it

A step that runs past --limit seconds is killed and reported as "> LIMIT". Run it under
`nice -n -15` on a shared machine; the load average is printed beside the numbers.

    python benchmarks/scale.py --sizes 1000 10000 100000 --label after
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RATES = [round(0.05 * i, 2) for i in range(10)]


def experiments_text(n: int) -> str:
    """A suite of exactly n runs (n = 10^k, 3 <= k <= 5): 10 values per grid key, seeds for 10^5."""
    keys = ["skips.1", "attn_dropout", "mlp_dropout", "embd_dropout"]
    k = {1000: 3, 10000: 4, 100000: 4}[n]
    grid = ", ".join(f'"{key}" = {RATES}' for key in keys[:k])
    seeds = "seeds = [" + ", ".join(str(1337 + i) for i in range(10)) + "]\n" if n == 100000 else ""
    return f"""default_suite = "big"
[defaults]
n_layer = 2
n_embd = 32
n_head = 2
block_size = 32
batch_size = 8
eval_interval = 1000
eval_iters = 400
max_iters = 10
[suites.big]
{seeds}grid = {{ {grid} }}
"""


def lab(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab", *args]


#: GNU time reports the command's own peak memory. The child's ru_maxrss does not: it counts
#: this process's memory from before the exec (at 100,000 runs, this process holds 380 MB).
GNU_TIME = "/usr/bin/time"


def timed_process(cmd: list[str], limit: float) -> tuple[float | None, float | None, float | None]:
    """(wall seconds, peak RSS in MB, CPU seconds) of a command, or Nones past `limit`."""
    measured = os.path.exists(GNU_TIME)
    if measured:
        cmd = [GNU_TIME, "-f", "peak-kb %M", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + limit
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[2:])} exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
            peak = usage.ru_maxrss / 1024
            if measured:
                peak = float(proc.stderr.read().decode().rsplit("peak-kb ", 1)[1].split()[0]) / 1024
            return wall, peak, usage.ru_utime + usage.ru_stime
        if time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            return None, None, None
        time.sleep(0.02)


def cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far, its children aside."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def headless_and_stop(file: Path, store: Path, n: int, limit: float) -> tuple[str, str]:
    """(seconds until "training N runs", seconds from Ctrl-C inside the first evaluation to
    exit), each with CPU seconds: the lab's own until the first line, the whole process tree's
    (workers included) for the stop."""
    cmd = lab("run", "--headless", "-f", str(file), "--store", str(store), "--max-iters", "1")
    tree0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    enqueue_cpu = None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    enqueue = stop = None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = ""
    started_at = None
    try:
        while proc.poll() is None and time.perf_counter() - t0 < limit:
            try:
                buf += os.read(proc.stdout.fileno(), 1 << 16).decode(errors="replace")
            except BlockingIOError:
                pass
            if enqueue is None and "training " in buf:
                enqueue = time.perf_counter() - t0
                enqueue_cpu = cpu_of(proc.pid)
            if started_at is None and " started," in buf:
                started_at = time.perf_counter()
            if started_at is not None and time.perf_counter() - started_at > 3.0:
                s0 = time.perf_counter()
                os.killpg(proc.pid, signal.SIGINT)
                while proc.poll() is None and time.perf_counter() - s0 < limit:
                    try:  # keep reading: a full pipe would block its last lines, and its exit
                        os.read(proc.stdout.fileno(), 1 << 16)
                    except BlockingIOError:
                        time.sleep(0.02)
                if proc.poll() is not None:
                    stop = time.perf_counter() - s0
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    tree1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree_cpu = tree1.ru_utime + tree1.ru_stime - tree0.ru_utime - tree0.ru_stime
    first = fmt(enqueue, limit) + ("" if enqueue_cpu is None else f" (CPU {enqueue_cpu:.2f} s)")
    return first, fmt(stop, limit) + ("" if stop is None else f" (whole run's CPU, workers too: {tree_cpu:.1f} s)")


def fill_store(file: Path, store: Path) -> tuple[float, float]:
    """Enqueue every run of the file into `store` in-process; returns (wall, CPU) seconds."""
    from lab.experiments import load_experiments
    from lab.launch import check_corpora, enqueue_specs
    from lab.store import Store

    specs = load_experiments(file).runs
    t0, c0 = time.perf_counter(), time.process_time()
    shas = check_corpora(specs)
    with Store.open(store) as st:
        enqueue_specs(st, specs, shas)
    return time.perf_counter() - t0, time.process_time() - c0


def finish_all(store: Path) -> None:
    """Give every run a finished result, as a trainer would have recorded it (no training)."""
    rng = random.Random(0)
    with sqlite3.connect(store / "store.sqlite3") as c:
        ids = [r[0] for r in c.execute("SELECT run_id FROM runs")]
        c.executemany(
            """UPDATE runs SET status = 'finished', step = max_iters, final_val = ?, best_val = ?, final_train = ?,
                   exact_val = ?, wall_s = 12.5, tokens_per_s = 3000, ended_at = created_at WHERE run_id = ?""",
            [(v + 0.01, v, v - 0.1, v + 0.005, rid) for rid in ids for v in [2.0 + rng.random()]])


def plan_seconds(store: Path) -> tuple[float, float]:
    from lab.store import Store
    from lab.workers.scheduler import plan_groups

    with Store.open(store) as st:
        t0, c0 = time.perf_counter(), time.process_time()
        plan_groups(st.queued_runs(), 16)
        return time.perf_counter() - t0, time.process_time() - c0


def dispatch_seconds(store: Path) -> tuple[float, float]:
    """One dispatch of a driver to two idle workers, every run queued."""
    from lab.core.config import TrainOptions
    from lab.store import Store
    from lab.workers.driver import Driver

    class TwoIdle:  # an executor with two idle workers that takes what it is handed
        def idle_slots(self) -> list[int]:
            return [0, 1]

        def device_of(self, slot: int) -> str:
            return "cpu"

        def busy(self) -> bool:
            return False

        def submit(self, slot: int, task) -> None:
            pass

    with Store.open(store) as st:
        driver = Driver(st, TwoIdle(), group_size=16, options=TrainOptions(dtype_choice=None), kind="background")
        driver._dtype_choice = lambda *a, **k: None  # no dtype measurement: the planning is timed
        t0, c0 = time.perf_counter(), time.process_time()
        driver._dispatch()
        return time.perf_counter() - t0, time.process_time() - c0


def stop_seconds(store: Path) -> tuple[float, float]:
    """Mark every queued run stopped, as a graceful stop does."""
    from lab.store import Store

    with Store.open(store) as st:
        t0, c0 = time.perf_counter(), time.process_time()
        st.stop_runs(st.queued_ids(), "stopped before it started")
        return time.perf_counter() - t0, time.process_time() - c0


def poll_seconds(store: Path) -> float:
    """One idle poll of a background driver over a store whose runs are all finished."""
    from lab.core.config import TrainOptions
    from lab.store import Store
    from lab.workers.driver import Driver

    class Idle:  # an executor with every worker idle and nothing to report
        def busy(self) -> bool:
            return False

        def idle_slots(self) -> list[int]:
            return [0, 1]

    with Store.open(store) as st:
        driver = Driver(st, Idle(), group_size=16, options=TrainOptions(), kind="background", linger_s=60)
        t0 = time.perf_counter()
        for _ in range(10):
            driver._handle_requests()
            driver._dispatch()
            driver._finished()
        return (time.perf_counter() - t0) / 10


def tui_seconds(store: Path, file: Path, limit: float) -> tuple[float | None, float | None, float | None]:
    """(first frame of Runs, a key on Runs, a key on Results) under the pilot, in a subprocess."""
    code = f"""
import asyncio, sys, time
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.keys import timed_press
from lab.tui.app import LabApp
async def main():
    t0 = time.perf_counter()
    app = LabApp({str(store)!r}, {str(file)!r}, start_mode="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot._wait_for_screen()
        first = time.perf_counter() - t0
        await pilot.pause(0.5)
        runs_key = (await timed_press(pilot, "down"))[0]
        await timed_press(pilot, "f4")
        await pilot.pause(0.5)
        results_key = (await timed_press(pilot, "down"))[0]
        print(first, runs_key, results_key)
        await pilot.press("ctrl+q")
asyncio.run(main())
"""
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, None, None
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1000:])
    first, runs_key, results_key = (float(x) for x in proc.stdout.split()[-3:])
    return first, runs_key, results_key


def build_lab_store(store: Path, n: int) -> float:
    """A store of n runs of one suite, written as a driver would (no training): 60 % finished
    with a result, 16 running with an evaluation, the rest queued. Returns seconds taken."""
    from lab.core import events as ev
    from lab.core.config import RunConfig
    from lab.store import ENQUEUE_BATCH, NewRun, Store

    t0 = time.perf_counter()
    rng = random.Random(0)
    base = RunConfig.from_dict(dict(n_layer=2, n_embd=32, n_head=2, block_size=32, batch_size=8,
                                    max_iters=1000, eval_interval=100, eval_iters=20))
    with Store.open(store) as st:
        ids = [r.run_id for r in st.enqueue_many([NewRun("big", f"r{i}", f"r{i}", base.with_seed(i), None)
                                                  for i in range(n)])]
        done = ids[: n * 6 // 10]
        for start in range(0, len(done), ENQUEUE_BATCH):
            st.apply_many([ev.Finished(rid, 1000, v + 0.01, v, v - 0.1, v + 0.005, 12.5, 3000.0)
                           for rid in done[start:start + ENQUEUE_BATCH] for v in [2.0 + rng.random()]])
        running = ids[len(done):len(done) + 16]
        st.apply_many([ev.Started(rid, 0, 1000, 10000, "cpu", "float32", 16) for rid in running]
                      + [ev.Evaluated(rid, 100, 2.5, 2.6 + i / 100, 1e-3) for i, rid in enumerate(running)])
    return time.perf_counter() - t0


#: Run in a subprocess (a fresh interpreter, as `dropres-lab` starts): prints one JSON object.
LAB_PROBE = """
import asyncio, json, sys, time
sys.path.insert(0, ROOT)
from benchmarks.keys import timed_press
from lab.tui.app import LabApp
from lab.tui.screens.runs import RunFilter
from lab.tui.widgets.runs_table import RunsTable
from lab.tui.widgets.synced_table import SyncedTable


async def until(predicate, limit=120.0):
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > limit:
            raise TimeoutError
        await asyncio.sleep(0.002)


async def main():
    out = {}
    t0, c0 = time.perf_counter(), time.process_time()
    app = LabApp(STORE, "no-experiments.toml", start_mode="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot._wait_for_screen()
        out["first"], out["first_cpu"] = time.perf_counter() - t0, time.process_time() - c0
        table = app.screen.query_one(RunsTable)
        out["rows"], out["total"] = table.row_count, table.list_total
        await pilot.pause(0.5)
        out["down"] = (await timed_press(pilot, "down"))[0]
        out["pagedown"] = (await timed_press(pilot, "pagedown"))[0]
        t = time.perf_counter()
        await timed_press(pilot, "ctrl+end")
        await until(lambda: table.list_total and table.place == table.list_total - 1)
        out["end"] = time.perf_counter() - t
        t = time.perf_counter()
        app.screen.query_one(RunFilter).value = "running"
        await until(lambda: table.list_total == 16 and table.row_count == 16)
        out["filter"] = time.perf_counter() - t
        t = time.perf_counter()
        await timed_press(pilot, "f4")
        results = app.screen.query_one(SyncedTable)
        await until(lambda: results.row_count > 0)
        out["results"] = time.perf_counter() - t
        shown = results.row_count
        out["results_down"] = (await timed_press(pilot, "down"))[0]
        t = time.perf_counter()
        await timed_press(pilot, "m")
        await until(lambda: results.row_count > shown)
        out["more"] = time.perf_counter() - t
        out["cpu"] = time.process_time() - c0
        await pilot.press("ctrl+q")
    print(json.dumps(out))


asyncio.run(main())
"""


def lab_timings(store: Path, limit: float) -> dict[str, float] | None:
    """The lab's timings on `store` (see LAB_PROBE), or None past `limit` seconds."""
    import json

    code = LAB_PROBE.replace("ROOT", repr(str(ROOT))).replace("STORE", repr(str(store)))
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_lab(n: int, limit: float) -> dict[str, str]:
    """The `lab` rows for a store of n runs built directly (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="dropres-scale-lab-") as tmp:
        built = build_lab_store(Path(tmp) / "store", n)
        got = lab_timings(Path(tmp) / "store", limit)
    if got is None:
        return {"lab: first frame of Runs": fmt(None, limit)}
    return {
        "lab: store built (enqueue_many + apply_many)": f"{built:.1f} s",
        "lab: first frame of Runs": f"{got['first']:.2f} s (CPU {got['first_cpu']:.2f} s), {got['rows']} of {got['total']:,} rows held",
        "lab: down / page-down on Runs": f"{got['down'] * 1000:.0f} ms / {got['pagedown'] * 1000:.0f} ms",
        "lab: ctrl+end to the last run (new window)": f"{got['end'] * 1000:.0f} ms",
        "lab: filter \"running\" (16 of N)": f"{got['filter'] * 1000:.0f} ms",
        "lab: open Results (best 100 ranked)": f"{got['results'] * 1000:.0f} ms",
        "lab: down on Results / m (100 more)": f"{got['results_down'] * 1000:.0f} ms / {got['more'] * 1000:.0f} ms",
        "lab: CPU seconds of the whole session": f"{got['cpu']:.2f} s",
    }


def fmt(x: float | None, limit: float, unit: str = "s") -> str:
    if x is None:
        return f"> {limit:g} {unit}"
    return f"{x:.2f} {unit}" if unit == "s" else f"{x:.0f} {unit}"


def process_cell(measured: tuple[float | None, float | None, float | None], limit: float) -> str:
    wall, rss, cpu = measured
    return fmt(wall, limit) if wall is None else f"{wall:.2f} s (CPU {cpu:.2f} s), {rss:.0f} MB"


def measure(n: int, limit: float, skip: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dropres-scale-") as tmp:
        folder = Path(tmp)
        file = folder / "experiments.toml"
        file.write_text(experiments_text(n))
        if "validate" not in skip:
            out["validate"] = process_cell(timed_process(lab("validate", "-f", str(file)), limit), limit)
        if "headless" not in skip:
            enqueue, stop = headless_and_stop(file, folder / "headless", n, limit)
            out["run --headless: to first run"] = enqueue
            out["Ctrl-C in an evaluation"] = stop
        if "store" in skip:
            return out
        store = folder / "store"
        out["enqueue in-process"] = "{:.2f} s (CPU {:.2f} s)".format(*fill_store(file, store))
        out["plan the queue"] = "{:.2f} s (CPU {:.2f} s)".format(*plan_seconds(store))
        out["driver dispatch (all queued)"] = "{:.2f} s (CPU {:.2f} s)".format(*dispatch_seconds(store))
        out["stop marks the queue"] = "{:.2f} s (CPU {:.2f} s)".format(*stop_seconds(store))
        finish_all(store)
        out["driver idle poll"] = f"{poll_seconds(store) * 1000:.1f} ms"
        for label, args in (("results (table)", []), ("results --format json", ["--format", "json"]),
                            ("results --format csv", ["--format", "csv"])):
            out[label] = process_cell(timed_process(lab("results", "--store", str(store), *args), limit), limit)
        if "tui" not in skip:
            first, runs_key, results_key = tui_seconds(store, file, limit)
            out["TUI first frame"] = fmt(first, limit)
            out["TUI key on Runs"] = fmt(runs_key, limit)
            out["TUI key on Results"] = fmt(results_key, limit)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before a step is killed")
    parser.add_argument("--skip", nargs="*", default=[], help="steps to leave out: validate headless store (enqueue, plan, poll, results) tui")
    parser.add_argument("--only", choices=["lab"], help="lab: only the lab on a store built directly (fast to build)")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("DROPRES_DATA", str(ROOT / "tinyshakespeare.txt"))
    table: dict[int, dict[str, str]] = {}
    load0 = os.getloadavg()
    for n in args.sizes:
        table[n] = measure_lab(n, args.limit) if args.only == "lab" else measure(n, args.limit, set(args.skip))
        print(f"{n}: {table[n]}", flush=True)
    load1 = os.getloadavg()
    steps = list(dict.fromkeys(k for row in table.values() for k in row))
    print(f"\n{args.label} (load average {load0[0]:.1f} before, {load1[0]:.1f} after)\n")
    print("| step | " + " | ".join(f"{n:,} runs" for n in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    for step in steps:
        print(f"| {step} | " + " | ".join(table[n].get(step, "") for n in args.sizes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
