"""What the Runs and Results screens share: open, mark and compare the highlighted runs."""

from __future__ import annotations

from typing import Sequence

from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable

from ..read_only import WritesOffWhenReadOnly
from ..state import LabState
from ..widgets.synced_table import SyncedTable


class RunListScreen(WritesOffWhenReadOnly, Screen):
    """A screen of one run table with these actions; the screen says which runs a row is and how to redraw.

    Marks are view state and are kept in `state`; opening runs in Detail is the app's to wire,
    so it is asked for with `DetailRequested`.
    """

    class DetailRequested(Message):
        """Show these runs in Detail: one run in detail, several overlaid."""

        def __init__(self, run_ids: Sequence[str]) -> None:
            super().__init__()
            self.run_ids = list(run_ids)

    def __init__(self, state: LabState) -> None:
        super().__init__()
        self.state = state

    def current_run_ids(self) -> list[str]:
        """The run ids of the highlighted row (several for an aggregated row)."""
        raise NotImplementedError

    def redraw_marks(self) -> None:
        """Redraw the table after the set of marked runs changed."""
        raise NotImplementedError

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_detail()

    def action_open_detail(self) -> None:
        ids = self.current_run_ids()
        if ids:
            self.post_message(self.DetailRequested(ids))

    def action_toggle_mark(self) -> None:
        for run_id in self.current_run_ids():
            self.state.toggle_mark(run_id)
        self.redraw_marks()
        table = self.query_one(SyncedTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)

    def action_compare(self) -> None:
        """Overlay the val curves of the marked runs."""
        ids = self.state.marked_in_order()
        if len(ids) < 2:
            self.notify("mark two or more runs with space (in Runs or Results), then press c", severity="warning")
            return
        self.post_message(self.DetailRequested(ids))
