"""Run detail and compare: loss curves (textual-plotext), lr schedule, settings and log.

One run: its train and val evaluation curves (and the per-batch training loss, dim) against
iterations, its learning-rate schedule with the current step marked, every setting, and its
lifecycle log from the store. Several runs (marked with space in Runs or Results, then `c`):
their val curves overlaid, as the paper's figures do, their schedules, and a results table of
just those runs.

Curves are read from the store by a worker thread (`lab.tui.curves.CurveReader`: incrementally,
cached only for the runs on screen), which posts them back as a `Loaded` message; the screen
never reads the store on the UI thread. A live run is redrawn at most once a second.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Log, Static
from textual.worker import get_current_worker

from lab.formatting import fmt_duration, fmt_loss, status_style
from lab.results import columns, common_settings, fmt_setting, result_rows
from lab.store import RunRow, StoreError

from ..curves import SPLITS, CurveReader, DetailData, LogEntry
from ..state import LabState
from ..widgets.footer import LabFooter
from ..widgets.charts import LossChart, LrChart
from ..widgets.synced_table import ColumnSpec, SyncedTable, cell

REDRAW_S = 1.0  # a live run's charts are redrawn at most this often


class DetailScreen(Screen):
    """Shows `state.detail_ids`: one run in detail, or several overlaid."""

    BINDINGS = [Binding("escape", "back", "Back")]

    class BackRequested(Message):
        """Escape: back to the screen Detail was opened from (the app knows which)."""

    class Loaded(Message):
        """The loading worker's read: curves and log of the runs it was asked for."""

        def __init__(self, data: DetailData) -> None:
            super().__init__()
            self.data = data

    def __init__(self, state: LabState) -> None:
        super().__init__()
        self.state = state
        self.run_ids: list[str] = []
        self._reader = CurveReader(state.store_dir)
        self._reading = threading.Lock()  # one read at a time, posted in the order read
        self._log_count: int | None = None
        self._drawn_at = 0.0
        self._redraw_timer = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="detail-main"):
            yield LossChart(id="loss-chart")
            with Vertical(id="detail-side"):
                with VerticalScroll(id="detail-settings-box"):
                    yield Static(id="detail-settings")
                yield LrChart(id="lr-chart")
        yield Log(id="detail-log", highlight=False)
        yield SyncedTable(id="compare-table", cursor_type="none")
        yield LabFooter(compact=True, show_command_palette=False)

    # -- what to show --------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        ids = [i for i in self.state.detail_ids if i in self.state.live]
        if ids != self.run_ids:
            self.run_ids = ids
            self._log_count = None
        self._redraw()

    def refresh_live(self, changed: Iterable[str] | None) -> None:
        if changed is not None and not set(changed) & set(self.run_ids):
            return
        wait = REDRAW_S - (time.monotonic() - self._drawn_at)
        if wait <= 0:
            self._redraw()
        elif self._redraw_timer is None:
            self._redraw_timer = self.set_timer(wait, self._redraw)

    def current_run_ids(self) -> list[str]:
        return list(self.run_ids)

    def _rows(self) -> list[RunRow]:
        return [self.state.live[i].row for i in self.run_ids if i in self.state.live]

    def _redraw(self) -> None:
        self._redraw_timer = None
        self._drawn_at = time.monotonic()
        rows = self._rows()
        if not rows:
            self.set_class(False, "-compare")
            self.query_one(LossChart).show_curves("no run selected: highlight one in Runs or Results, press enter", [])
            self.query_one(LrChart).show_schedules([])
            self.query_one("#detail-settings", Static).update("")
            self.query_one(Log).clear()
            return
        self._load(rows)

    @work(thread=True, exclusive=True, group="detail-read", exit_on_error=False)
    def _load(self, rows: list[RunRow]) -> None:
        """Read the curves off the UI thread; a newer request supersedes this one's result."""
        with self._reading:
            try:
                data = self._reader.read(rows)
            except StoreError as exc:
                self.notify(str(exc), severity="error", timeout=8)
                return
            if not get_current_worker().is_cancelled:
                self.post_message(self.Loaded(data))

    def on_detail_screen_loaded(self, message: "DetailScreen.Loaded") -> None:
        data = message.data
        if list(data.run_ids) != [row.run_id for row in self._rows()]:
            return  # read for runs no longer shown
        rows = list(data.rows)
        self.set_class(len(rows) > 1, "-compare")
        if len(rows) == 1:
            self._show_one(rows[0], data)
        else:
            self._show_many(rows, data)

    # -- one run ---------------------------------------------------------------------------------

    def _show_one(self, row: RunRow, data: DetailData) -> None:
        batch, train, val = (data.curve(row.run_id, s) for s in SPLITS)
        self.query_one(LossChart).show_curves(
            f"{row.suite}/{row.name}: loss",
            [("train (batch)", batch.steps, batch.values), ("train", train.steps, train.values),
             ("val", val.steps, val.values)],
            xmax=row.max_iters, colors=("gray", "orange", "cyan"))
        self.query_one(LrChart).show_schedules([(row.name, row.config)], at_step=row.step)
        self.query_one("#detail-settings", Static).update(self._settings(row))
        self._show_log(data.log or ())

    def _settings(self, row: RunRow) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("status", Text(row.status, style=status_style(row.status)))
        grid.add_row("step", f"{row.step}/{row.max_iters}")
        for label, value in (("best val", row.best_val), ("final val", row.final_val),
                             ("final train", row.final_train), ("exact val", row.exact_val),
                             ("reference", row.reference)):
            if value is not None:
                grid.add_row(label, fmt_loss(value))
        if row.error:
            grid.add_row("note", Text(row.error, style="yellow"))
        if row.device:
            grid.add_row("device", f"{row.device} ({row.dtype}), group of {row.group_size}")
        if row.n_params:
            grid.add_row("params", f"{row.n_params:,}")
        for key, value in row.config.to_dict().items():
            if key == "skips":
                value = ", ".join(f"{d}={fmt_setting(r)}" for d, r in row.config.skips)
            grid.add_row(key, fmt_setting(value) if not isinstance(value, str) else value)
        grid.add_row("run id", row.run_id)
        return grid

    def _show_log(self, entries: tuple[LogEntry, ...]) -> None:
        log = self.query_one(Log)
        if self._log_count == len(entries):
            return
        self._log_count = len(entries)
        log.clear()
        if not entries:
            log.write_line("(nothing logged yet: the run has not started)")
            return
        t0 = entries[0][0]
        log.write_lines(
            f"+{fmt_duration(at - t0, 'clock')}  {'step ' + str(step) if step is not None else '':<11} {message}"
            for at, step, message in entries)

    # -- several runs --------------------------------------------------------------------------

    def _show_many(self, rows: list[RunRow], data: DetailData) -> None:
        multi_suite = len({r.suite for r in rows}) > 1
        label = (lambda r: f"{r.suite}/{r.name}") if multi_suite else (lambda r: r.name)
        curves = []
        for row in rows:
            val = data.curve(row.run_id, "val")
            curves.append((label(row), val.steps, val.values))
        self.query_one(LossChart).show_curves(f"val loss of {len(rows)} runs (y axis fitted after 10% of training)",
                                              curves, xmax=max(r.max_iters for r in rows), zoom=True)
        self.query_one(LrChart).show_schedules([(label(r), r.config) for r in rows])
        self.query_one("#detail-settings", Static).update(self._common(rows))
        ranked = result_rows(rows)
        cols = columns(ranked, with_suite=multi_suite)
        table = self.query_one("#compare-table", SyncedTable)
        table.set_columns([ColumnSpec(c.header, c.header, None, c.justify) for c in cols])
        table.sync([(" ".join(r.run_ids), [cell(c.cell(r), c.justify) for c in cols]) for r in ranked])

    @staticmethod
    def _common(rows: list[RunRow]) -> Table:
        """The settings every compared run shares, skip depths one by one (what differs, every
        setting of it, is a column of the table below)."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("comparing", f"{len(rows)} runs")
        for key, value in common_settings([r.config.to_dict() for r in rows]).items():
            grid.add_row(key, value if isinstance(value, str) else fmt_setting(value))
        return grid

    def action_back(self) -> None:
        self.post_message(self.BackRequested())
