"""Runs: the queued, running and finished runs in the store, live.

A store may hold 100,000 runs: the table shows a window of them (`RunsTable`), paged, filtered
(`/`) and counted in SQL by the poller, and the line above it says which part of how many it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Header, Input, Static

from ..poller import WindowRequest
from ..widgets.footer import LabFooter
from .run_list import RunListScreen
from ..widgets.run_panel import RunPanel
from ..widgets.runs_table import RunsTable


class RunRequest(Message):
    """Something to do to one run; the app checks it against the run's status and acts."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class RunFilter(Input):
    """The filter line: words of "suite/name", or statuses; escape clears it and goes back to the table."""

    BINDINGS = [Binding("escape", "clear_filter", "Clear the filter", show=False)]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.display = False
        self.screen.query_one(RunsTable).focus()


class RunsScreen(RunListScreen):
    """The table of runs, with the highlighted run's curves below it."""

    class CancelRequested(RunRequest):
        """x: stop the run, resumable (a request to its driver, or at once if none runs it)."""

    class ResumeRequested(RunRequest):
        """r: queue a stopped or interrupted run again from its checkpoint (or drive a queued one)."""

    class RestartRequested(RunRequest):
        """R: train the run again from step 0 (the app asks first)."""

    BINDINGS = [
        Binding("d", "open_detail", "Detail", show=False),
        Binding("space", "toggle_mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("R", "restart_run", "Restart"),
        Binding("slash", "filter", "Filter by name or status", show=False, key_display="/"),
    ]

    WRITES = frozenset({"cancel_run", "resume_run", "restart_run"})

    AUTO_FOCUS = "#runs-table"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="runs-summary", classes="summary")
        yield RunFilter(placeholder="filter: words of suite/name, or a status (escape clears)", id="runs-filter")
        yield RunsTable(id="runs-table")
        yield RunPanel(id="run-panel")
        yield LabFooter(compact=True, show_command_palette=False)

    # -- keeping up with the store -----------------------------------------------------------

    def on_screen_resume(self) -> None:
        self.refresh_live(None)

    def refresh_live(self, changed: Iterable[str] | None) -> None:
        """Bring the view up to date with the state (changed: the run ids that changed)."""
        table = self.query_one(RunsTable)
        window = self.state.window
        table.show(self.state.window_runs(), self.state.marked, window.request.offset, window.total)
        self._summary()
        current = table.current_key
        if changed is None or current in set(changed) or current is None:
            self._show_panel()

    def _summary(self) -> None:
        counts = self.state.counts
        order = ("running", "queued", "finished", "stopped", "failed", "diverged")
        parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
        marked = len(self.state.marked)
        text = " · ".join(parts) or "no runs in the store yet"
        window = self.state.window
        shown = len(window.run_ids)
        if window.request.text or shown < window.total:
            first = window.request.offset + 1 if shown else 0
            text += f"   showing {first:,}–{window.request.offset + shown:,} of {window.total:,}"
            if window.request.text:
                text += f" matching “{window.request.text}”"
        if not self.state.driver_alive:
            if counts.get("running"):
                text += "   (no driver: runs shown running were interrupted; r resumes one)"
            elif counts.get("queued"):
                text += "   (no driver is running: r on a queued run starts one)"
        if marked:
            text += f"   ({marked} marked: c compares them)"
        self.query_one("#runs-summary", Static).update(text)

    def _show_panel(self) -> None:
        key = self.query_one(RunsTable).current_key
        self.query_one(RunPanel).show(self.state.live.get(key) if key else None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_panel()

    # -- the window and the filter (read by the poller) --------------------------------------------

    def _ask(self, request: WindowRequest) -> None:
        self.state.requests.set_window(request)

    def on_runs_table_window_wanted(self, message: RunsTable.WindowWanted) -> None:
        self._ask(replace(self.state.requests.window, offset=message.offset))

    def action_filter(self) -> None:
        field = self.query_one(RunFilter)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._ask(WindowRequest(text=event.value.strip()))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value.strip())
        self.query_one(RunsTable).focus()

    # -- what the app asks of a list screen ----------------------------------------------------

    def current_run_ids(self) -> list[str]:
        key = self.query_one(RunsTable).current_key
        return [key] if key else []

    def redraw_marks(self) -> None:
        self.refresh_live([])

    # -- actions -------------------------------------------------------------------------------

    def action_cancel_run(self) -> None:
        for run_id in self.current_run_ids():
            self.post_message(self.CancelRequested(run_id))

    def action_resume_run(self) -> None:
        for run_id in self.current_run_ids():
            self.post_message(self.ResumeRequested(run_id))

    def action_restart_run(self) -> None:
        for run_id in self.current_run_ids():
            self.post_message(self.RestartRequested(run_id))
