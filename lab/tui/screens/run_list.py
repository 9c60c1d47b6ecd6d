"""What the Runs and Results screens share: open, mark and compare the highlighted run(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import DataTable

from ..widgets.synced_table import SyncedTable

if TYPE_CHECKING:
    from ..app import LabApp


class RunListActions:
    """Actions over a screen's one run table; the screen says which runs a row is and how to redraw."""

    app: "LabApp"

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
            self.app.open_detail(ids)

    def action_toggle_mark(self) -> None:
        for run_id in self.current_run_ids():
            self.app.toggle_mark(run_id)
        self.redraw_marks()
        table = self.query_one(SyncedTable)  # type: ignore[attr-defined]
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)

    def action_compare(self) -> None:
        self.app.action_compare()
