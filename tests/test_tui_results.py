"""Pilot tests of what the Results and Detail screens show as the store changes: column widths
that follow their content, a suite filter only the user changes, the first sort key, every
setting that differs in Compare, export choices readable without colour, one-point curves."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import RadioButton, Select, Static

from lab.core import events as ev
from lab.core.config import RunConfig
from lab.store import Store
from lab.tui.app import LabApp
from lab.tui.widgets.charts import POINT, CurveSparkline
from lab.tui.widgets.synced_table import SyncedTable

from test_tui_app import SIZE, synthetic, table_cell, wait_for  # noqa: F401  (synthetic: a fixture)

TINY = dict(n_layer=1, n_head=2, n_embd=16, max_iters=40, eval_interval=10)


def _ids(app: LabApp, *names: str) -> list[str]:
    by_name = {(live.row.suite, live.row.name): run_id for run_id, live in app.live.items()}
    return [by_name[tuple(n.split("/", 1))] for n in names]  # type: ignore[index]


def test_results_columns_grow_when_a_run_finishes(tmp_path: Path) -> None:
    """A queued run's cells are narrow; once it finishes, "finished", "+0.2000" and its wall
    time must be shown whole, not cut to the widths first drawn ("finish…", "+0…")."""
    with Store.open(tmp_path / "runs") as store:
        run_id = store.enqueue("w", "only", "only", RunConfig.from_dict(TINY), None).run_id

    async def go() -> None:
        app = LabApp(tmp_path / "runs", start_mode="results", poll_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(SyncedTable)
            await wait_for(pilot, lambda: table.row_keys, what="the queued run")
            with Store.open(tmp_path / "runs") as store:
                store.apply_many([ev.Started(run_id, 0, 40, 1000, "cpu", "float32", 1),
                                  ev.Evaluated(run_id, 40, 1.40, 1.60, 1e-3),
                                  ev.Finished(run_id, 40, 1.60, 1.58, 1.40, 1.59, 1234.5, 5000.0)])
            await wait_for(pilot, lambda: table_cell(table, table.row_keys[0], "status") == "finished",
                           what="the finished run")
            await pilot.pause()
            key = table.row_keys[0]
            for column in ("status", "gap", "wall", "step", "best val"):
                text = table_cell(table, key, column)
                assert text, column
                assert table.columns[column].get_render_width(table) >= len(text) + 2, (column, text)

    asyncio.run(go())


def test_results_columns_narrow_when_long_rows_are_filtered_away(tmp_path: Path) -> None:
    long_name = "a-run-with-a-rather-long-descriptive-name"
    with Store.open(tmp_path / "runs") as store:
        store.enqueue("w", long_name, long_name, RunConfig.from_dict(TINY), None)
        short = store.enqueue("w", "b", "b", RunConfig.from_dict(TINY), None).run_id
        store.apply(ev.Started(short, 0, 40, 1000, "cpu", "float32", 1))

    async def go() -> None:
        app = LabApp(tmp_path / "runs", start_mode="results")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(SyncedTable)
            await wait_for(pilot, lambda: len(table.row_keys) == 2, what="both runs")
            assert table.columns["run"].get_render_width(table) >= len(long_name)
            for status in ("running", "*", "running"):  # rows leaving, then a rebuild, then leaving
                app.screen.query_one("#status-filter", Select).value = status
                await pilot.pause()
            assert [table_cell(table, k, "run") for k in table.row_keys] == ["b"]
            assert table.columns["run"].get_render_width(table) == len("run") + 2

    asyncio.run(go())


def test_the_suite_filter_survives_cursor_moves_on_runs_and_new_suites(synthetic: Path) -> None:
    async def go() -> None:
        app = LabApp(synthetic, start_mode="results", poll_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            results = app.screen
            select = results.query_one("#suite-filter", Select)
            assert select.value == "paper-skip1"  # the newest suite, until the user picks one
            select.value = "quick"  # as the user picks it
            await pilot.pause()
            await pilot.press("f3")
            with Store.open(synthetic) as store:  # a suite launched meanwhile
                store.enqueue("newer", "x", "x", RunConfig.from_dict(TINY), None)
            await wait_for(pilot, lambda: any(l.row.suite == "newer" for l in app.live.values()),
                           what="the new suite")
            await pilot.press("down", "down", "down", "down", "up", "space", "enter")
            await pilot.pause()
            await pilot.press("escape", "down", "f4")
            await pilot.pause()
            assert app.screen is results and select.value == "quick"
            table = results.query_one(SyncedTable)
            assert {table_cell(table, k, "run") for k in table.row_keys} == {"skip1", "skip1+skip2"}
            await pilot.press("f3", "up", "f4")
            await pilot.pause()
            assert select.value == "quick"

            quick = _ids(app, "quick/skip1", "quick/skip1+skip2")  # deleted, then enqueued afresh
            with Store.open(synthetic) as store:
                store.delete(quick)
            await wait_for(pilot, lambda: not set(quick) & set(app.live), what="the deletion")
            await pilot.pause()
            assert select.value != "quick"  # no such suite for the moment
            with Store.open(synthetic) as store:
                store.enqueue("quick", "skip1", "skip1", RunConfig.from_dict(TINY), None)
            await wait_for(pilot, lambda: select.value == "quick", what="the choice to return")

    asyncio.run(go())


def test_the_first_sort_is_by_final_val_and_says_so(synthetic: Path) -> None:
    async def go() -> None:
        app = LabApp(synthetic, start_mode="results")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(SyncedTable)
            await pilot.press("s")
            await pilot.pause()
            assert screen.sort_header == "final val"
            assert "sorted by final val (ascending)" in str(screen.query_one("#results-note", Static).render())
            assert any("sorted by final val" in n.message for n in app._notifications)
            vals = [table_cell(table, k, "final val") for k in table.row_keys]
            filled = [v for v in vals if v]
            assert filled == sorted(filled) and vals == filled + [""] * (len(vals) - len(filled))

    asyncio.run(go())


def test_compare_shows_every_setting_that_differs_across_suites(synthetic: Path) -> None:
    """Three runs of two suites: the table names each differing setting (skips.1, skips.2,
    max_iters, n_layer, ...), the side panel only what all three share."""
    async def go() -> None:
        app = LabApp(synthetic, start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            app.state.marked.update(_ids(app, "quick/skip1+skip2", "paper-skip1/skips.1=0.025",
                                         "paper-skip1/skips.1=0.05"))
            await pilot.press("c")
            table = app.screen.query_one("#compare-table", SyncedTable)
            await wait_for(pilot, lambda: len(table.row_keys) == 3, what="the compare table")
            headers = [str(c.key.value) for c in table.ordered_columns]
            for key in ("n_layer", "skips.1", "skips.2", "max_iters", "eval_interval", "eval_iters"):
                assert key in headers, headers
            cells = {table_cell(table, k, "run"): k for k in table.row_keys}
            assert table_cell(table, cells["skip1+skip2"], "skips.2") == "0.99"
            assert table_cell(table, cells["skips.1=0.05"], "max_iters") == "50000"
            console = Console(file=io.StringIO(), width=60)
            console.print(app.screen.query_one("#detail-settings", Static).content)
            shared = console.file.getvalue()
            assert "3 runs" in shared and "n_head" in shared
            assert "max_iters" not in shared and "skips" not in shared and "n_layer" not in shared

    asyncio.run(go())


def test_the_chosen_export_format_is_marked_without_colour(synthetic: Path) -> None:
    def label_style(button: RadioButton) -> str:
        return str(button.get_component_styles("toggle--label").text_style)

    async def go() -> None:
        app = LabApp(synthetic, start_mode="results")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("e")
            await pilot.pause()
            csv_button, md_button = app.screen.query_one("#fmt-csv"), app.screen.query_one("#fmt-markdown")
            assert "underline" in label_style(csv_button) and "underline" not in label_style(md_button)
            await pilot.click("#fmt-markdown")
            await pilot.pause()
            assert "underline" in label_style(md_button) and "underline" not in label_style(csv_button)

    asyncio.run(go())


def test_a_curve_of_one_point_is_a_point_not_a_block() -> None:
    class One(App):
        def compose(self) -> ComposeResult:
            yield CurveSparkline([2.5], id="one")
            yield CurveSparkline([2.5, 2.0, 1.8], id="three")

    async def go() -> None:
        app = One()
        async with app.run_test(size=(40, 8)) as pilot:
            await pilot.pause()
            one = app.query_one("#one", CurveSparkline).render()
            assert isinstance(one, Text) and one.plain.strip() == POINT
            three = app.query_one("#three", CurveSparkline)
            assert not isinstance(three.render(), Text)  # two or more points: Textual's bars

    asyncio.run(go())


def test_detail_draws_a_first_evaluation_as_a_point(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs") as store:
        run_id = store.enqueue("w", "new", "new", RunConfig.from_dict(TINY), None).run_id
        store.apply_many([ev.Started(run_id, 0, 40, 1000, "cpu", "float32", 1),
                          ev.Evaluated(run_id, 0, 4.1, 4.2, 1e-3)])

    async def go() -> None:
        app = LabApp(tmp_path / "runs", start_mode="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            # the curves are read by a worker: wait for the point (a quarter block before)
            await wait_for(pilot, lambda: POINT in app.export_screenshot(), timeout=30, what="a point")

    asyncio.run(go())


# -- issue 14: intervals, verdicts and claims --------------------------------------------------


def _claims_lab(tmp_path: Path, monkeypatch) -> LabApp:
    from test_claims import EXPERIMENTS, make_claims_store

    monkeypatch.chdir(tmp_path)  # the header shows the store's path: "runs", as in every snapshot
    make_claims_store(tmp_path / "runs")
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS, encoding="utf-8")
    return LabApp(Path("runs"), start_mode="results", experiments_path=Path("experiments.toml"))


def test_results_merge_replicates_and_list_the_suites_claims(tmp_path: Path, monkeypatch) -> None:
    async def go() -> None:
        app = _claims_lab(tmp_path, monkeypatch)
        async with app.run_test(size=(200, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            screen.query_one("#suite-filter", Select).value = "c"
            await pilot.pause()
            assert {"n", "exact 95% CI", "vs best (exact val)", "set"} <= set(screen._headers)
            names = [r.name for r in screen.shown]
            assert "good" in names and "good#1" not in names  # replicates merged
            good = next(r for r in screen.shown if r.name == "good")
            assert good.n == 3 and good.stats["exact_val"].low is not None
            assert screen.query_one("#results-claims", Static).display
            shown = {f"{r.claim.better} < {r.claim.than}": r for r in screen.claims_shown["c"]}
            assert [r.verdict for r in shown.values()] == ["supported", "contradicted", "inconclusive",
                                                          "inconclusive", "supported"]
            assert shown["single < good"].reason == "single has 1 seed; add seeds = [...] to test the claim"
            screen.query_one("#suite-filter", Select).value = "d"  # a suite without claims: no panel
            await pilot.pause()
            assert not screen.query_one("#results-claims", Static).display

    asyncio.run(go())


def test_snapshot_results_with_intervals_and_verdicts(tmp_path: Path, monkeypatch, snap_compare) -> None:
    """Results of suite c: replicates merged with their 95 % intervals, each row's test against
    its comparable set's best, the --max-iters copy in a set of its own, and the claims."""
    app = _claims_lab(tmp_path, monkeypatch)

    async def pick_suite(pilot) -> None:
        app.screen.query_one("#suite-filter", Select).value = "c"
        await pilot.pause()

    assert snap_compare(app, terminal_size=(230, 36), run_before=pick_suite)
