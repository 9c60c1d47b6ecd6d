"""Runs: every queued, running and finished run in the store, live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ..widgets.footer import LabFooter
from .run_list import RunListActions
from ..widgets.run_panel import RunPanel
from ..widgets.runs_table import RunsTable

if TYPE_CHECKING:
    from ..app import LabApp


class RunsScreen(RunListActions, Screen):
    """The table of runs, with the highlighted run's curves below it."""

    BINDINGS = [
        Binding("d", "open_detail", "Detail", show=False),
        Binding("space", "toggle_mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("R", "restart_run", "Restart"),
    ]

    AUTO_FOCUS = "#runs-table"

    app: "LabApp"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="runs-summary", classes="summary")
        yield RunsTable(id="runs-table")
        yield RunPanel(id="run-panel")
        yield LabFooter(compact=True, show_command_palette=False)

    # -- keeping up with the store -----------------------------------------------------------

    def on_screen_resume(self) -> None:
        self.refresh_live(None)

    def refresh_live(self, changed: Iterable[str] | None) -> None:
        """Bring the view up to date with `app.live` (changed: the run ids that changed)."""
        table = self.query_one(RunsTable)
        runs = list(self.app.live.values())
        table.show(runs, self.app.marked)
        self._summary(runs)
        current = table.current_key
        if changed is None or current in set(changed) or current is None:
            self._show_panel()

    def _summary(self, runs: list) -> None:
        counts: dict[str, int] = {}
        for live in runs:
            counts[live.row.status] = counts.get(live.row.status, 0) + 1
        order = ("running", "queued", "finished", "stopped", "failed", "diverged")
        parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
        marked = len(self.app.marked)
        text = " · ".join(parts) or "no runs in the store yet"
        if not self.app.driver_alive:
            if counts.get("running"):
                text += "   (no driver: runs shown running were interrupted; r resumes one)"
            elif counts.get("queued"):
                text += "   (no driver is running: r on a queued run starts one)"
        if marked:
            text += f"   ({marked} marked: c compares them)"
        self.query_one("#runs-summary", Static).update(text)

    def _show_panel(self) -> None:
        key = self.query_one(RunsTable).current_key
        self.query_one(RunPanel).show(self.app.live.get(key) if key else None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_panel()

    # -- what the app asks of a list screen ----------------------------------------------------

    def current_run_ids(self) -> list[str]:
        key = self.query_one(RunsTable).current_key
        return [key] if key else []

    def redraw_marks(self) -> None:
        self.refresh_live([])

    # -- actions -------------------------------------------------------------------------------

    def action_cancel_run(self) -> None:
        for run_id in self.current_run_ids():
            self.app.cancel_run(run_id)

    def action_resume_run(self) -> None:
        for run_id in self.current_run_ids():
            self.app.resume_run(run_id)

    def action_restart_run(self) -> None:
        for run_id in self.current_run_ids():
            self.app.restart_run(run_id)
