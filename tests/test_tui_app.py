"""The interactive lab (`lab.tui`): snapshots of each screen on a store filled with synthetic
events, pilot tests that launch, cancel and leave real runs to a background driver, and the
polling/coalescing machinery on its own.

Snapshots: `pytest tests/test_tui_app.py --snapshot-update` rewrites tests/__snapshots__/;
look at the SVGs before committing them. The Runs screenshot in assets/ is rewritten with
DROPRES_UPDATE_ASSETS=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lab.core import events as ev
from lab.core.config import RunConfig
from lab.experiments import load_experiments
from lab.store import DriverLock, Store
from lab.tui.app import LabApp
from lab.tui.poller import HISTORY, Pending, Series, StorePoller, Update
from lab.tui.screens.quit import QuitScreen
from lab.tui.widgets.runs_table import RunsTable
from lab.tui.widgets.synced_table import SyncedTable
from lab.workers.settings import DriverSettings

from conftest import TINY_DEFAULTS, write_corpus

ROOT = Path(__file__).resolve().parents[1]
SIZE = (120, 36)

# -- a store filled with synthetic events (deterministic: a fake clock, no training) -----------

#: (suite, name, skips, final status, steps done, max_iters, published reference)
SYNTHETIC = [
    ("quick", "skip1", {1: 0.025}, "finished", 500, 500, None),
    ("quick", "skip1+skip2", {1: 0.025, 2: 0.99}, "stopped", 300, 500, None),
    ("paper-skip1", "skips.1=0.025", {1: 0.025}, "finished", 50000, 50000, 1.5560),
    ("paper-skip1", "skips.1=0.05", {1: 0.05}, "finished", 50000, 50000, 1.5695),
    ("paper-skip1", "skips.1=0.1", {1: 0.1}, "running", 31250, 50000, 1.6058),
    ("paper-skip1", "skips.1=0.2", {1: 0.2}, "running", 27500, 50000, 1.6961),
    ("paper-skip1", "skips.1=0.5", {1: 0.5}, "queued", 0, 50000, 2.8716),
]


def synthetic_loss(step: int, floor: float, overfit: float) -> tuple[float, float]:
    """(train, val) of a plausible curve: fast drop, slow approach to a floor, a small wiggle."""
    decay = 2.7 * math.exp(-step / 2500) + 0.25 * math.exp(-step / 15000)
    wiggle = 0.012 * math.sin(step / 900 + floor * 7)
    val = floor + decay + overfit * (step / 50000) ** 2 + wiggle
    return val - 0.02 - 0.16 * min(1.0, step / 30000), val


def make_synthetic_store(store_dir: Path) -> Store:
    """Fill a store with SYNTHETIC through the same events a worker sends."""
    clock = [1_700_000_000.0]
    real_time = time.time
    time.time = lambda: clock[0]  # the store stamps rows and logs with time.time()
    try:
        store = Store.open(store_dir)
        for suite, name, skips, status, done, max_iters, ref in SYNTHETIC:
            quick = suite == "quick"
            cfg = RunConfig.from_dict(dict(
                data="tinyshakespeare", n_layer=2 if quick else 4, skips=skips, max_iters=max_iters,
                eval_interval=100 if quick else 250, eval_iters=20 if quick else 200))
            clock[0] += 1
            rid = store.enqueue(suite, name, name, cfg, ref).run_id
            if status == "queued":
                continue
            floor = (ref or 1.9) - 0.01
            overfit = 0.05 if skips[1] < 0.05 else 0.0
            device, rate = ("cpu", 9800.0) if quick else ("cuda:0", 41000.0 + 2000 * skips[1])
            clock[0] += 5
            store.apply(ev.Started(rid, 0, max_iters, 804096 if not quick else 410368, device, "float32",
                                   2 if quick else 4))
            events: list = []
            for step in range(0, done + 1, 10 if quick else 50):
                clock[0] += 0.05
                train, val = synthetic_loss(step * (100 if quick else 1), floor, overfit)
                events.append(ev.StepLogged(rid, step, train + 0.03 * math.sin(step), 1e-3, rate))
                if step % cfg.eval_interval == 0:
                    events.append(ev.Evaluated(rid, step, train, val, 1e-3))
            store.apply_many(events)
            clock[0] += 30
            if status == "finished":
                train, val = synthetic_loss(done * (100 if quick else 1), floor, overfit)
                store.apply(ev.Finished(rid, done, val, min(val, floor + 0.02), train, val - 0.004,
                                        612.5 if not quick else 48.2, rate))
            elif status == "stopped":
                store.apply(ev.Stopped(rid, done))
        return store
    finally:
        time.time = real_time


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store at ./runs (the lab shows paths relative to the working folder) with SYNTHETIC."""
    monkeypatch.chdir(tmp_path)
    make_synthetic_store(tmp_path / "runs").close()
    return tmp_path / "runs"


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshot_runs_in_progress(synthetic: Path, snap_compare) -> None:
    """Runs: statuses, progress bars, recent val sparklines, tok/s and ETA from the store; the
    highlighted running run's val and train Sparklines below."""
    app = LabApp(synthetic, start_mode="runs")
    assert snap_compare(app, terminal_size=SIZE, press=["down"] * 4)


def test_snapshot_results_table(synthetic: Path, snap_compare) -> None:
    """Results: the paper-skip1 suite ranked by best val, with references and deltas."""
    app = LabApp(synthetic, start_mode="results")
    assert snap_compare(app, terminal_size=SIZE)


def test_snapshot_run_detail(synthetic: Path, snap_compare) -> None:
    """Detail: loss curves, lr schedule, settings and log of one finished run."""
    app = LabApp(synthetic, start_mode="runs")
    assert snap_compare(app, terminal_size=SIZE, press=["down", "down", "enter"])


def test_snapshot_compare_overlay(synthetic: Path, snap_compare) -> None:
    """Compare: four paper-skip1 runs marked with space, overlaid with c."""
    app = LabApp(synthetic, start_mode="runs")
    assert snap_compare(app, terminal_size=SIZE, press=["down", "down"] + ["space"] * 4 + ["c"])


def test_snapshot_help(synthetic: Path, snap_compare) -> None:
    app = LabApp(synthetic, start_mode="runs")
    assert snap_compare(app, terminal_size=SIZE, press=["f1"])


def test_the_app_saves_a_screenshot_of_the_runs_screen(synthetic: Path, tmp_path: Path) -> None:
    """The app writes its own screenshot; with DROPRES_UPDATE_ASSETS=1 it becomes assets/runs-screen.svg."""
    async def go() -> None:
        app = LabApp(synthetic, start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("down", "down", "down", "down")
            await pilot.pause()
            app.save_screenshot("runs-screen.svg", path=str(tmp_path))

    lock = DriverLock(synthetic).acquire()  # as if a background driver were training them
    try:
        with Store.open(synthetic) as store:
            store.set_driver_info(os.getpid(), accepting=True, kind="background")
        asyncio.run(go())
    finally:
        lock.release()
    svg = (tmp_path / "runs-screen.svg").read_text()
    assert svg.startswith("<svg") and "skips.1=0.025" in svg and "running" in svg
    if os.environ.get("DROPRES_UPDATE_ASSETS"):
        (ROOT / "assets").mkdir(exist_ok=True)
        (ROOT / "assets" / "runs-screen.svg").write_text(svg)


def test_every_key_action_is_in_the_command_palette(synthetic: Path) -> None:
    async def go() -> dict[str, list[str]]:
        app = LabApp(synthetic, start_mode="runs")
        titles = {}
        async with app.run_test(size=SIZE) as pilot:
            for key, mode in (("f3", "runs"), ("f4", "results"), ("f5", "detail")):
                await pilot.press(key)
                await pilot.pause()
                assert app.current_mode == mode
                titles[mode] = [c.title for c in app.get_system_commands(app.screen)]
        return titles

    titles = asyncio.run(go())
    everywhere = {"Help", "Runs", "Results", "Detail", "Quit", "Stop all runs"}
    assert everywhere | {"Mark", "Compare", "Cancel", "Resume", "Restart"} <= set(titles["runs"])
    assert everywhere | {"Mark", "Compare", "Sort", "Reverse", "Export"} <= set(titles["results"])
    assert everywhere | {"Back"} <= set(titles["detail"])


def test_results_filter_and_sort(synthetic: Path) -> None:
    from textual.widgets import Select

    async def go() -> None:
        app = LabApp(synthetic, start_mode="results")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(SyncedTable)
            names = lambda: [table_cell(table, k, "run") for k in table.row_keys]  # noqa: E731
            assert names()[0] == "skips.1=0.05"  # ranked by best val
            screen.query_one("#status-filter", Select).value = "running"
            await pilot.pause()
            assert names() == ["skips.1=0.1", "skips.1=0.2"]
            screen.query_one("#status-filter", Select).value = "*"
            await pilot.press("s")  # the losses first (final val), then the other columns
            await pilot.pause()
            assert screen.sort_header == "final val"
            for _ in range(len(screen._headers)):
                if screen.sort_header == "run":
                    break
                await pilot.press("s")
            await pilot.pause()
            assert screen.sort_header == "run" and names() == sorted(names())
            await pilot.press("S")
            await pilot.pause()
            assert names() == sorted(names(), reverse=True)
            await pilot.click(SyncedTable, offset=(4, 0))  # the "#" header
            await pilot.pause()
            assert screen.sort_header == "#"

    asyncio.run(go())


# -- polling and coalescing -------------------------------------------------------------------------


def test_series_keeps_a_bounded_history_that_spans_the_whole_run() -> None:
    s = Series(cap=64)
    for step in range(0, 500_000, 10):
        s.add(step, 1.0 / (step + 1))
    assert len(s.values) <= 64 and s.steps[0] == 0 and s.steps[-1] >= 500_000 - 500_000 // 64 * 2
    assert s.steps == sorted(s.steps)
    s.add(100, 0.0)  # an old step (already seen) is ignored
    assert s.last_step == 499_990


def test_pending_coalesces_polls_into_one_message_with_the_newest_state(synthetic: Path) -> None:
    poller = StorePoller(synthetic)
    try:
        first = poller.poll()
        assert len(first.changed) == len(SYNTHETIC) and first.driver_changed
        assert not poller.poll()  # nothing committed since: nothing read, nothing reported
        pending = Pending()
        assert pending.offer(first) is True  # post a message
        with Store.open(synthetic) as store:
            rid = store.find("paper-skip1", "skips.1=0.1")[0].run_id
            for step in (31300, 31350, 31400):
                store.apply(ev.StepLogged(rid, step, 1.5, 1e-3, 40000.0))
                assert pending.offer(poller.poll()) is False  # one message is already on its way
        batch = pending.take()
        assert batch.changed[rid].row.step == 31400  # the newest state replaced the older ones
        assert not pending.take()
        assert pending.offer(Update()) is False  # an empty poll posts nothing
    finally:
        poller.close()


def test_poller_reads_only_changed_runs_and_restarts_curves(synthetic: Path) -> None:
    poller = StorePoller(synthetic)
    try:
        live = poller.poll().changed
        rid = next(i for i, l in live.items() if l.row.name == "skips.1=0.1")
        assert 0 < len(live[rid].val) <= HISTORY and live[rid].eta_s == pytest.approx(
            (50000 - 31250) * 8 * 64 / 41200)
        with Store.open(synthetic) as store:
            store.apply(ev.Evaluated(rid, 31500, 1.4, 1.45, 1e-3))
            update = poller.poll()
            assert list(update.changed) == [rid] and update.changed[rid].val[-1] == 1.45
            row = store.get(rid)
            store.enqueue(row.suite, row.name, row.base_name, row.config, row.reference, fresh=True)
        restarted = poller.poll().changed[rid]
        assert restarted.row.status == "queued" and restarted.val == () and restarted.train == ()
    finally:
        poller.close()


def test_twenty_busy_runs_coalesce_and_the_app_stays_responsive(tmp_path: Path, monkeypatch) -> None:
    """20 runs, each logging 8 times a second: the UI applies at most one batch per poll,
    rows are updated in place, histories stay bounded and a key press is answered at once."""
    monkeypatch.chdir(tmp_path)
    with Store.open(tmp_path / "runs") as store:
        ids = [store.enqueue("busy", f"r{i}", f"r{i}", RunConfig(max_iters=100_000, seed=i), None).run_id
               for i in range(20)]
        store.apply_many([ev.Started(r, 0, 100_000, 1000, "cpu", "float32", 20) for r in ids])
    stop = threading.Event()

    def writer() -> None:  # the driver's side: a batch of events for every run, 8 times a second
        with Store.open(tmp_path / "runs") as store:
            step = 0
            while not stop.is_set():
                step += 10
                batch = []
                for i, r in enumerate(ids):
                    batch.append(ev.StepLogged(r, step, 3.0 - step * 1e-4, 1e-3, 5000.0 + i))
                    batch.append(ev.Evaluated(r, step, 2.9 - step * 1e-4, 3.0 - step * 1e-4, 1e-3))
                store.apply_many(batch)
                time.sleep(0.125)

    async def go() -> dict:
        app = LabApp(tmp_path / "runs", start_mode="runs", poll_interval=0.25)
        applied = []
        original = app._apply
        app._apply = lambda update: (applied.append(len(update.changed)), original(update))[1]
        async with app.run_test(size=SIZE) as pilot:
            thread = threading.Thread(target=writer)
            thread.start()
            try:
                started = time.monotonic()
                await pilot.pause(3.0)
                t0 = time.monotonic()
                await pilot.press("down")
                press_s = time.monotonic() - t0
                elapsed = time.monotonic() - started
            finally:
                stop.set()
                thread.join()
            table = app.screen.query_one(RunsTable)
            return dict(applied=applied, elapsed=elapsed, press_s=press_s, rows=table.row_count,
                        cursor=table.cursor_row, longest=max(len(l.val) for l in app.live.values()),
                        steps=[l.row.step for l in app.live.values()])

    got = asyncio.run(go())
    assert got["rows"] == 20 and got["cursor"] == 1
    assert max(got["steps"]) > 100  # the view followed the writer
    # at most one batch per poll interval (plus the first full read), each with many runs
    assert len(got["applied"]) <= got["elapsed"] / 0.25 + 3
    assert got["press_s"] < 1.0
    assert got["longest"] <= HISTORY


def test_a_busy_store_never_freezes_the_lab(synthetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the store's write lock: the lab keeps answering keys and draws
    Detail while a cancel waits for the lock in a worker, then reports it; and no store read
    or write of any action runs on the UI thread."""
    from textual.widgets import Log

    from lab.tui.screens.detail import DetailScreen

    on_ui_thread: list[str] = []

    def watched(method):
        def run(self, *args, **kwargs):
            if threading.current_thread() is threading.main_thread():
                on_ui_thread.append(method.__name__)
            return method(self, *args, **kwargs)
        return run

    started_drivers: list[Path] = []  # resume and restart start a driver: pretend to, train nothing
    monkeypatch.setattr("lab.tui.app.start_background_driver", lambda store_dir, settings: started_drivers.append(store_dir))

    async def go() -> float:
        app = LabApp(synthetic, start_mode="runs")
        monkeypatch.setattr(Store, "_read", watched(Store._read))
        monkeypatch.setattr(Store, "_write", watched(Store._write))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("down", "down", "down", "down")  # paper-skip1/skips.1=0.1, running
            blocker = sqlite3.connect(synthetic / "store.sqlite3", isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # the store's write lock, as a busy writer holds it
            try:
                await pilot.press("x")  # no driver: the lab ends the run itself, once it gets the lock
                await pilot.pause(0.3)
                started = time.monotonic()
                await pilot.press("enter")
                await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen)
                               and app.screen.query_one(Log).line_count > 0, timeout=10, what="Detail")
                took = time.monotonic() - started
                assert not any("cancelled" in n.message for n in app._notifications)  # still waiting
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await wait_for(pilot, lambda: any("cancelled (no driver was running it)" in n.message
                                              for n in app._notifications), what="the cancel")
            await pilot.press("escape", "space", "space", "c")  # back to Runs, mark two, compare
            await wait_for(pilot, lambda: app.screen.has_class("-compare"), what="the comparison")
            await pilot.press("escape", "up", "up", "r")  # the cancelled run, resumed
            await wait_for(pilot, lambda: any("queued to resume" in n.message for n in app._notifications),
                           what="the resume")
            await pilot.press("R")
            await pilot.pause()
            await pilot.press("enter")  # "Restart from step 0"
            await wait_for(pilot, lambda: any("train again from step 0" in n.message for n in app._notifications),
                           what="the restart")
        return took

    took = asyncio.run(go())
    assert took < 3.0  # not the store's busy timeout (BUSY_TIMEOUT_S, 15 s)
    assert on_ui_thread == []
    assert started_drivers == [synthetic, synthetic]


# -- pilot tests with real runs -------------------------------------------------------------------

TINY = """
default_suite = "tiny"
""" + TINY_DEFAULTS + """
[suites.tiny]
runs = [ {{ name = "a" }} ]

[suites.long]
max_iters = 200000
eval_interval = 100
runs = [ {{ name = "forever" }} ]

[suites.medium]
max_iters = 2500
eval_interval = 500
runs = [ {{ name = "m" }} ]
"""

SETTINGS = DriverSettings(device="cpu", workers=2, linger_s=1.0)  # one torch thread each: robust on busy cores


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder with a tiny corpus and experiments file; any driver left behind is killed."""
    monkeypatch.chdir(tmp_path)
    corpus = write_corpus(tmp_path / "corpus.txt")
    (tmp_path / "experiments.toml").write_text(TINY.format(corpus=corpus), encoding="utf-8")
    yield tmp_path
    kill_driver(tmp_path / "runs")


def kill_driver(store_dir: Path) -> None:
    """End a background driver and its workers (its own process group), gently first."""
    if not DriverLock.is_held(store_dir):
        return
    pid, _ = DriverLock(store_dir).holder()
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and DriverLock.is_held(store_dir):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def specs(lab_dir: Path, suite: str):
    return load_experiments(lab_dir / "experiments.toml").select([suite])


def launch(app: LabApp, lab_dir: Path, suite: str) -> None:
    """Launch the way the Experiments screen does: post its LaunchRequested message."""
    from lab.tui.screens.experiments import ExperimentsScreen

    app.post_message(ExperimentsScreen.LaunchRequested(specs(lab_dir, suite), False))


async def wait_for(pilot, predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(app: LabApp, name: str) -> str | None:
    return next((l.row.status for l in app.live.values() if l.row.name == name), None)


def table_cell(table: SyncedTable, key: str, column: str) -> str:
    return str(table.get_cell(key, column))


def test_launch_from_the_app_finishes_in_runs_and_appears_in_results(lab: Path) -> None:
    async def go() -> None:
        app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            launch(app, lab, "tiny")
            await wait_for(pilot, lambda: status_of(app, "a") == "finished", what="the run to finish")
            await pilot.pause(0.3)
            rid = next(iter(app.live))
            runs = app.screen.query_one(RunsTable)
            assert table_cell(runs, rid, "status") == "finished"
            assert table_cell(runs, rid, "step") == "60/60"
            assert table_cell(runs, rid, "val")  # the final val loss is shown
            await pilot.press("f4")
            await pilot.pause()
            results = app.screen.query_one(SyncedTable)
            assert results.row_keys == [rid]
            assert table_cell(results, rid, "status") == "finished"
            assert table_cell(results, rid, "best val") == f"{app.live[rid].row.best_val:.4f}"

    asyncio.run(go())
    assert "background driver pid" in (lab / "runs" / "driver.log").read_text()  # the lab started one


def test_cancel_a_running_run(lab: Path) -> None:
    async def go() -> None:
        app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            launch(app, lab, "long")

            def training() -> bool:
                live = next(iter(app.live.values()), None)
                return live is not None and live.row.status == "running" and live.row.step > 0

            await wait_for(pilot, training, what="the run to train")
            rid = next(iter(app.live))
            await pilot.press("x")  # cancel the highlighted (only) run
            await wait_for(pilot, lambda: app.live[rid].row.status == "stopped", what="the run to stop")
            await pilot.pause(0.3)
            assert table_cell(app.screen.query_one(RunsTable), rid, "status") == "stopped"
            assert 0 < app.live[rid].row.step < 200000
        with Store.open(lab / "runs") as store:
            assert store.get(rid).status == "stopped" and store.latest_checkpoint(rid) is not None

    asyncio.run(go())


def test_quit_and_stop_them_closes_the_lab_and_the_driver_stops_the_runs_checkpointed(lab: Path) -> None:
    async def go() -> str:
        app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs",
                     poll_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            launch(app, lab, "long")
            await wait_for(pilot, lambda: status_of(app, "forever") == "running", what="the run to start")
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, QuitScreen)
            await pilot.click("#stop")
            await wait_for(pilot, lambda: not app.is_running, what="the lab to close")
        assert app.return_value and app.return_value.startswith("stop requested")
        return next(iter(app.live))

    rid = asyncio.run(go())
    with Store.open(lab / "runs") as store:
        deadline = time.time() + 60
        while store.get(rid).status != "stopped" and time.time() < deadline:
            time.sleep(0.2)
        assert store.get(rid).status == "stopped" and store.latest_checkpoint(rid) is not None


def test_quit_and_leave_running_then_reopen_shows_it_finished(lab: Path) -> None:
    async def first() -> str:
        app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs",
                     poll_interval=0.05)  # see "running" at once: the run lasts a few seconds
        async with app.run_test(size=SIZE) as pilot:
            launch(app, lab, "medium")
            await wait_for(pilot, lambda: status_of(app, "m") == "running", what="the run to start")
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, QuitScreen)
            await pilot.click("#leave")
            await pilot.pause()
        assert app.return_value and "continue in the background" in app.return_value
        return next(iter(app.live))

    rid = asyncio.run(first())
    with Store.open(lab / "runs") as store:
        assert store.get(rid).status in ("running", "queued")  # the lab closed; training goes on
        deadline = time.time() + 240  # 2,500 steps: seconds alone, minutes on a loaded 2-core machine
        while store.get(rid).status != "finished" and time.time() < deadline:
            time.sleep(0.2)
        assert store.get(rid).status == "finished"

    async def reopen() -> None:
        app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert table_cell(app.screen.query_one(RunsTable), rid, "status") == "finished"
            await pilot.press("q")  # nothing in flight: quits without asking
            await pilot.pause()
        assert app.return_value is None

    asyncio.run(reopen())


def test_a_headless_run_holding_the_store_refuses_a_launch(lab: Path) -> None:
    lock = DriverLock(lab / "runs").acquire()
    try:
        with Store.open(lab / "runs") as store:
            store.set_driver_info(os.getpid(), accepting=False, kind="headless")  # what `run --headless` writes

        async def go() -> list[str]:
            app = LabApp(lab / "runs", lab / "experiments.toml", driver_settings=SETTINGS, start_mode="runs")
            async with app.run_test(size=SIZE) as pilot:
                await pilot.pause(0.3)
                assert f"headless run pid {os.getpid()} (takes no new work)" in str(app.sub_title)
                launch(app, lab, "tiny")
                await wait_for(pilot, lambda: bool(app._notifications), what="a notification")
                return [n.message for n in app._notifications]

        messages = asyncio.run(go())
        assert any("a headless run" in m and "holds the store" in m for m in messages)
        with Store.open(lab / "runs") as store:
            assert store.runs() == []  # nothing was enqueued
    finally:
        lock.release()


def test_the_subtitle_names_the_drivers_kind_and_a_dead_drivers_runs_show_interrupted(synthetic: Path) -> None:
    """A background driver winding down is not taken for a headless run; once the driver is
    known dead (its lock free, its record left behind, as after SIGKILL) its running runs show
    as stopped and resumable at once, while the store, which only a driver writes, is untouched."""
    with Store.open(synthetic) as store:
        running = [r.run_id for r in store.runs() if r.status == "running"]
    assert len(running) == 2
    lock = DriverLock(synthetic).acquire()

    async def go() -> None:
        app = LabApp(synthetic, start_mode="runs", poll_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(RunsTable)
            await wait_for(pilot, lambda: "background driver pid 4242" in str(app.sub_title), what="the driver")
            assert [table_cell(table, rid, "status") for rid in running] == ["running", "running"]
            with Store.open(synthetic) as store:
                store.set_driver_info(4242, accepting=False, kind="background")  # asked to stop
            await wait_for(pilot, lambda: "stopping" in str(app.sub_title), what="the driver stopping")
            assert "background driver pid 4242 stopping (takes no new work)" in str(app.sub_title)
            assert not app.headless_holds_store
            lock.release()  # the driver is killed: its record stays, its lock goes
            await wait_for(pilot, lambda: "no driver" in str(app.sub_title), what="the driver's death")
            await pilot.pause(0.2)
            assert [table_cell(table, rid, "status") for rid in running] == ["stopped", "stopped"]
            assert all("interrupted" in (app.live[rid].row.error or "") for rid in running)

    try:
        with Store.open(synthetic) as store:
            store.set_driver_info(4242, accepting=True, kind="background")
        asyncio.run(go())
    finally:
        lock.release()
    with Store.open(synthetic) as store:
        assert [store.get(rid).status for rid in running] == ["running", "running"]  # the lab wrote nothing


def test_the_subtitle_names_what_the_drivers_cluster_has_once_the_driver_has_said(tmp_path: Path, monkeypatch) -> None:
    """As the headless header does: "ray: 2 nodes, 0 GPUs, 2 CPUs", read from the driver's record
    in the store; until the driver has said, where this lab's own launches would train."""
    monkeypatch.chdir(tmp_path)
    synthetic = tmp_path / "runs"  # an empty store: only the driver's record matters here
    Store.open(synthetic).close()
    lock = DriverLock(synthetic).acquire()
    cluster = "ray: 2 nodes, 0 GPUs, 2 CPUs; 2 cpu groups at a time"

    async def go() -> None:
        app = LabApp(synthetic, start_mode="runs", poll_interval=0.05,
                     driver_settings=DriverSettings(executor="ray", address="auto"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "background driver pid 4242 · launches train on ray at auto"
                           in str(app.sub_title), what="the driver, not yet described")
            with Store.open(synthetic) as store:
                store.set_driver_executor(4242, cluster)  # what the driver writes once its executor started
            await wait_for(pilot, lambda: cluster in str(app.sub_title), what="the cluster named")
            assert str(app.sub_title).endswith(f"background driver pid 4242 · {cluster}")

    try:
        with Store.open(synthetic) as store:
            store.set_driver_info(4242, accepting=True, kind="background")
        asyncio.run(go())
    finally:
        lock.release()


def test_export_writes_the_shown_table(synthetic: Path) -> None:
    async def go() -> None:
        app = LabApp(synthetic, start_mode="results")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("e")
            await pilot.pause()
            await pilot.click("#fmt-markdown")
            await pilot.pause()
            await pilot.click("#export-ok")
            await pilot.pause()
            assert any("wrote 5 rows to" in n.message for n in app._notifications)

    asyncio.run(go())
    text = (synthetic / "results-paper-skip1.md").read_text()
    assert text.startswith("### paper-skip1") and "skips.1=0.025" in text


def test_the_bare_command_needs_a_terminal_and_keeps_help_working() -> None:
    from typer.testing import CliRunner

    from lab.cli import app

    runner = CliRunner()
    got = runner.invoke(app, [])  # stdin is not a terminal here
    assert got.exit_code == 2 and "needs a terminal" in got.output
    got = runner.invoke(app, ["--store", "elsewhere", "results"])
    assert got.exit_code == 2 and "put them after the command" in got.output
    got = runner.invoke(app, ["--help"])
    assert got.exit_code == 0 and "--store" in got.output and "interactive lab" in got.output


def test_switching_screens_does_not_accumulate_footer_watchers(synthetic: Path) -> None:
    """Textual 8.2.8's Footer leaked a watcher per key on every recompose (issue #6666)."""
    from lab.tui.widgets.footer import LabFooter

    async def go() -> list[int]:
        app = LabApp(synthetic, start_mode="runs")
        counts = []
        async with app.run_test(size=SIZE) as pilot:
            for i in range(24):
                await pilot.press("f4" if i % 2 else "f3")
                await pilot.pause()
                footer = app.screen.query_one(LabFooter)
                counts.append(sum(len(w) for w in getattr(footer, "__watchers", {}).values()))
        return counts

    counts = asyncio.run(go())
    assert max(counts[8:]) <= max(counts[:8]), counts
