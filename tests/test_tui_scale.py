"""The lab on a store of thousands of runs (issue 17): the Runs table holds a window of the
store and says which part of how many it shows, pages through the whole list, filters in the
store, and follows a run's change; Results shows the best runs of the suite and more on `m`.

The store is written through the store's API (no training), so the test takes seconds.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest
from textual.widgets import Static

from lab.core import events as ev
from lab.core.config import RunConfig
from lab.store import NewRun, Store
from lab.tui.app import LabApp
from lab.tui.poller import RESULTS_PAGE, WINDOW
from lab.tui.widgets.runs_table import RunsTable
from lab.tui.widgets.synced_table import SyncedTable

from test_tui_app import SIZE, table_cell, wait_for

RUNS = 3000
FINISHED = 1500  # r1500 .. r2999 finished, the rest queued


def make_big_store(store_dir: Path) -> list[str]:
    """RUNS runs of one suite, the last FINISHED with a result; their ids in store order."""
    rng = random.Random(0)
    base = RunConfig.from_dict(dict(n_layer=1, n_head=2, n_embd=16, max_iters=40, eval_interval=10))
    with Store.open(store_dir) as store:
        ids = [r.run_id for r in store.enqueue_many(
            [NewRun("big", f"r{i}", f"r{i}", base.with_seed(i), None) for i in range(RUNS)])]
        store.apply_many([ev.Finished(rid, 40, v + 0.01, v, v - 0.1, v + 0.005, 1.0, 1000.0)
                          for rid in ids[RUNS - FINISHED:] for v in [2.0 + rng.random()]])
    return ids


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> tuple[Path, list[str]]:
    """One store for the module's tests (each works on a copy): its folder and run ids."""
    folder = tmp_path_factory.mktemp("big") / "runs"
    return folder, make_big_store(folder)


def copy_to(tmp_path: Path, big_store: tuple[Path, list[str]]) -> list[str]:
    shutil.copytree(big_store[0], tmp_path / "runs")
    return big_store[1]


def summary(app: LabApp) -> str:
    return str(app.screen.query_one("#runs-summary", Static).render())


def test_runs_shows_a_window_pages_filters_and_follows_a_change(tmp_path: Path, monkeypatch, big_store) -> None:
    monkeypatch.chdir(tmp_path)
    ids = copy_to(tmp_path, big_store)

    async def go() -> None:
        app = LabApp(Path("runs"), start_mode="runs", poll_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(RunsTable)
            name = lambda: table_cell(table, table.current_key, "run").strip()  # noqa: E731
            assert table.row_count == WINDOW and table.list_total == RUNS
            assert "1500 queued · 1500 finished" in summary(app)
            assert f"showing 1–{WINDOW} of 3,000" in summary(app)
            assert name() == "big/r0"

            await pilot.press("pagedown")  # inside the window: the table moves its cursor itself
            assert table.window_start == 0 and table.cursor_row > 0
            await pilot.press("ctrl+end")  # past the window: the last window is read, the cursor on the last run
            await wait_for(pilot, lambda: table.place == RUNS - 1, what="the last window")
            assert name() == f"big/r{RUNS - 1}" and table.window_start == RUNS - WINDOW
            assert f"showing {RUNS - WINDOW + 1:,}–3,000 of 3,000" in summary(app)
            await pilot.press("ctrl+home")
            await wait_for(pilot, lambda: table.place == 0, what="the first window")
            assert name() == "big/r0"

            await pilot.press("slash", *"r299")  # r299 and r2990 .. r2999, found by the store
            await wait_for(pilot, lambda: table.list_total == 11, what="the filter")
            assert table.row_count == 11 and "showing 1–11 of 11 matching “r299”" in summary(app)
            assert table_cell(table, table.row_keys[0], "run").strip() == "big/r299"
            await pilot.press("escape")  # clears it
            await wait_for(pilot, lambda: table.list_total == RUNS, what="the filter cleared")

            with Store.open(Path("runs")) as store:  # the driver's side: a queued run starts
                store.apply(ev.Started(ids[1], 0, 40, 1000, "cpu", "float32", 1))
            await wait_for(pilot, lambda: table_cell(table, ids[1], "status") == "running", what="the new status")
            assert "1 running · 1499 queued · 1500 finished" in summary(app)

    asyncio.run(go())


def test_results_ranks_the_best_of_a_suite_and_shows_more_on_m(tmp_path: Path, monkeypatch, big_store) -> None:
    monkeypatch.chdir(tmp_path)
    copy_to(tmp_path, big_store)

    async def go() -> None:
        app = LabApp(Path("runs"), start_mode="results", poll_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(SyncedTable)
            note = lambda: str(app.screen.query_one("#results-note", Static).render())  # noqa: E731
            assert table.row_count == RESULTS_PAGE
            assert note().startswith(f"{RESULTS_PAGE} of 3000 runs")
            assert f"{RUNS - RESULTS_PAGE:,} more (m shows {RESULTS_PAGE} more)" in note()
            best = [app.live[k].row.best_val for k in table.row_keys]
            assert best == sorted(best)  # the best of all 3,000, ranked
            with Store.open(Path("runs")) as store:
                assert best[0] == min(r.best_val for r in store.runs("big") if r.best_val is not None)
            await pilot.press("m")
            await wait_for(pilot, lambda: table.row_count == 2 * RESULTS_PAGE, what="more rows")
            assert f"{RUNS - 2 * RESULTS_PAGE:,} more" in note()

    asyncio.run(go())


def test_the_store_filters_counts_and_pages_in_store_order(tmp_path: Path) -> None:
    """A filter's words: statuses (either), pieces of "suite/name" (all, "_" and "%" literal)."""
    base = RunConfig.from_dict(dict(n_layer=1, n_head=2, n_embd=16, max_iters=40))
    with Store.open(tmp_path / "runs") as store:
        ids = [r.run_id for r in store.enqueue_many([NewRun(s, n, n, base, None) for s, n in
                                                     (("a", "x_1"), ("a", "x11"), ("b", "y%"), ("b", "x_2"))])]
        store.apply(ev.Started(ids[3], 0, 40, 1000, "cpu", "float32", 1))
        assert store.count_runs() == 4 and store.page_ids("", 1, 2) == ids[1:3]
        assert store.page_ids("x_") == [ids[0], ids[3]] and store.count_runs("X_") == 2
        assert store.page_ids("y%") == [ids[2]] and store.page_ids("b/ x") == [ids[3]]
        assert store.page_ids("running x") == [ids[3]] and store.count_runs("queued running") == 4
        states = store.run_states()
        assert [s[0] for s in states] == ids and states[3][1] == "running"
        assert [s[0] for s in store.run_states(since=states[3][2])] == [ids[3]]
