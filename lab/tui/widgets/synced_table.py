"""A DataTable that is brought up to date in place instead of being rebuilt.

Callers describe the whole table (columns, then rows as key + cells) every time; the table
works out what differs and touches only that: unchanged cells are left alone, changed cells
go through `update_cell`, new rows are appended, and only a change of columns or of row order
rebuilds the table (keeping the cursor on the same row). So a view can be written as "what the
table should show now" and still stay cheap when many runs update several times a second.

Columns without a fixed width fit their content at all times: a changed cell re-measures its
column (DataTable's `update_cell` keeps the first width unless asked), so "running" becoming
"finished" or a loss gaining digits is never cut to "finish…"; and when rows leave or the
table is rebuilt, the columns are fitted to the rows now shown (DataTable only ever widens a
column on its own, so one long name filtered away would keep its width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey


@dataclass(frozen=True)
class ColumnSpec:
    """A column: its key, header, fixed width (None to fit content) and justification."""

    key: str
    header: str
    width: int | None = None
    justify: str = "left"


def cell(text: str, justify: str = "left", style: str = "") -> Text:
    """A cell as Rich Text: never parsed as markup (run names may contain "["), justified."""
    return Text(text, style=style, justify=justify, no_wrap=True, overflow="ellipsis")


class SyncedTable(DataTable):
    """DataTable with `set_columns` and `sync` (see the module docstring).

    Enter selects the row (the screen opens the run's detail), so the footer says so.
    """

    BINDINGS = [Binding("enter", "select_cursor", "Detail", show=False)]

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        super().__init__(**kwargs)
        self._column_specs: tuple[ColumnSpec, ...] = ()
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}

    @property
    def row_keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self._order[self.cursor_row]

    def set_columns(self, specs: Sequence[ColumnSpec]) -> bool:
        """Use these columns; rebuilds (emptying the rows) only when they differ. True if rebuilt."""
        specs = tuple(specs)
        if specs == self._column_specs:
            return False
        self.clear(columns=True)
        self._order, self._cells = [], {}
        self._column_specs = specs
        for spec in specs:
            self.add_column(Text(spec.header, justify=spec.justify, no_wrap=True), width=spec.width, key=spec.key)
        return True

    def sync(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Show exactly `rows` (key, cells), in order, changing as little as possible."""
        keys = [k for k, _ in rows]
        n_old = len(self._order)
        if keys[:n_old] == self._order:
            for key, cells in rows[n_old:]:
                self._add(key, cells)
        elif len(keys) < n_old and [k for k in self._order if k in set(keys)] == keys:
            for key in set(self._order) - set(keys):
                self.remove_row(key)
                self._cells.pop(key, None)
            self._order = keys
            self._fit_columns()
        else:
            self._rebuild(rows)
            return
        specs = self._column_specs
        for key, cells in rows:
            cells = tuple(cells)
            old = self._cells.get(key)
            if old is cells or old == cells:
                continue
            for spec, before, after in zip(specs, old or (None,) * len(cells), cells):
                if before != after:  # a fitted column follows its content as it grows or shrinks
                    self.update_cell(key, spec.key, after, update_width=spec.width is None)
            self._cells[key] = cells

    def _add(self, key: str, cells: Sequence[Any]) -> None:
        self.add_row(*cells, key=key)
        self._order.append(key)
        self._cells[key] = tuple(cells)

    def _fit_columns(self) -> None:
        """Each column without a fixed width as wide as its header or widest cell now."""
        for i, spec in enumerate(self._column_specs):
            column = self.columns.get(ColumnKey(spec.key))
            if column is None or not column.auto_width:
                continue
            widths = [self._width(cells[i]) for cells in self._cells.values() if i < len(cells)]
            column.content_width = max([column.label.cell_len, *widths])
        self.refresh()

    @staticmethod
    def _width(value: Any) -> int:
        """A cell's width: cells are one-line Text (see `cell`), or plain values shown as text."""
        return value.cell_len if isinstance(value, Text) else cell_len(str(value))

    def _rebuild(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        current = self.current_key
        self.clear()
        self._order, self._cells = [], {}
        for key, cells in rows:
            self._add(key, cells)
        self._fit_columns()
        if current in self._order:
            self.move_cursor(row=self._order.index(current), animate=False)
