"""The lab at 80x24, the smallest terminal it promises to be fully usable in (issue 11, item 10):
snapshots of Runs, Experiments, Help and the grid builder, and pilot checks that nothing a user
needs is off the right edge.

Snapshots: `pytest tests/test_tui_small_terminal.py --snapshot-update` rewrites
tests/__snapshots__/test_tui_small_terminal/; look at the SVGs before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input
from textual.widgets._footer import FooterKey

from lab.tui.app import LabApp
from lab.tui.widgets.forms_grid import GridBuilder
from lab.tui.widgets.runs_table import RunsTable, columns_for

from test_tui_app import make_synthetic_store
from test_tui_experiments import EXPERIMENTS, sync

SMALL = (80, 24)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(store, experiments file): the synthetic store of test_tui_app and the Experiments tests' file."""
    monkeypatch.chdir(tmp_path)
    make_synthetic_store(tmp_path / "runs").close()
    experiments = tmp_path / "experiments.toml"
    experiments.write_text(EXPERIMENTS)
    return tmp_path / "runs", experiments


def no_blink(app) -> None:
    for control in app.screen.query(Input):
        control.cursor_blink = False


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_runs_at_80x24(lab, snap_compare) -> None:
    """Runs: run, status, progress, step, train, val and ETA fit; the footer shows every screen
    key and Quit."""
    store, experiments = lab
    assert snap_compare(LabApp(store, experiments, start_mode="runs"), terminal_size=SMALL, press=["down"] * 4)


def test_snapshot_experiments_at_80x24(lab, snap_compare) -> None:
    """Experiments: the tree narrows to 40% so the form keeps its labels and values."""
    store, experiments = lab

    async def run_before(pilot) -> None:
        await pilot.pause()
        no_blink(pilot.app)

    assert snap_compare(LabApp(store, experiments, start_mode="experiments"), terminal_size=SMALL,
                        run_before=run_before)


def test_snapshot_help_at_80x24(lab, snap_compare) -> None:
    """Help: inside the screen, the sections in one column, scrolled with the keys."""
    store, experiments = lab
    assert snap_compare(LabApp(store, experiments, start_mode="runs"), terminal_size=SMALL, press=["f1"])


def test_snapshot_grid_builder_at_80x24(lab, snap_compare) -> None:
    """The grid builder with a preview of three runs: the dialog and its buttons inside the screen."""
    store, experiments = lab

    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(pilot.app.screen, GridBuilder)
        pilot.app.screen.query_one("#grid-values", Input).value = "0.0, 0.1, 0.2"
        await pilot.pause()
        no_blink(pilot.app)

    assert snap_compare(LabApp(store, experiments, start_mode="experiments"), terminal_size=SMALL,
                        run_before=run_before)


# -- nothing off the right edge -----------------------------------------------------------------


def test_runs_columns_fit_the_width_and_keep_the_important_ones() -> None:
    assert [c.key for c in columns_for(118)] == ["run", "status", "progress", "step", "train", "val", "curve",
                                                  "rate", "eta", "device"]
    for width in (78, 80, 90, 100, 118):
        cols = columns_for(width)
        assert sum(c.width + 2 for c in cols) <= width
        assert {"run", "status", "step", "train", "val"} <= {c.key for c in cols}
    assert "eta" in {c.key for c in columns_for(78)}


@pytest.mark.parametrize("mode", ["experiments", "runs", "results", "detail"])
@sync
async def test_every_screen_key_and_quit_are_in_the_footer_at_80_columns(lab, mode: str) -> None:
    store, experiments = lab
    app = LabApp(store, experiments, start_mode=mode)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.pause()
        visible = {key.key for key in app.screen.query(FooterKey) if key.region.right <= SMALL[0]}
        screen_keys = {"f2": "experiments", "f3": "runs", "f4": "results", "f5": "detail"}
        # the shown screen's own key is left out: it would do nothing
        assert {"f1", "q"} | {k for k, m in screen_keys.items() if m != mode} <= visible


@sync
async def test_runs_table_regains_its_columns_when_the_terminal_grows(lab) -> None:
    store, experiments = lab
    app = LabApp(store, experiments, start_mode="runs")
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        table = app.screen.query_one(RunsTable)
        assert table.virtual_size.width <= table.size.width
        assert "device" not in [str(k.value) for k in table.columns]
        await pilot.resize_terminal(140, 36)
        await pilot.pause()
        await pilot.pause()
        assert "device" in [str(k.value) for k in table.columns]
        assert table.row_count == 7


@sync
async def test_notifications_leave_the_status_line_and_the_footer_visible(lab) -> None:
    from textual.widgets._toast import Toast

    store, experiments = lab
    app = LabApp(store, experiments, start_mode="experiments")
    async with app.run_test(size=SMALL, notifications=True) as pilot:
        await pilot.pause()
        app.notify("a notification long enough to wrap onto a second line at eighty columns", timeout=30)
        await pilot.pause()
        await pilot.pause()
        toasts = list(app.screen.query(Toast))
        assert toasts
        status_top = app.screen.query_one("#exp-bar").region.y
        assert all(toast.region.bottom <= status_top for toast in toasts)
