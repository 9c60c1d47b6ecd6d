"""Run detail and compare: loss curves (textual-plotext), lr schedule, settings and log.

One run: its train and val evaluation curves (and the per-batch training loss, dim) against
iterations, its learning-rate schedule with the current step marked, every setting, and its
lifecycle log from the store. Several runs (marked with space in Runs or Results, then `c`):
their val curves overlaid, as the paper's figures do, their schedules, and a results table of
just those runs.

Curves are read from the store here, incrementally (`since_step`), and cached only for the
runs on screen; a live run is redrawn at most once a second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Log, Static

from lab.formatting import fmt_duration, fmt_loss, status_style
from lab.results import columns, result_rows
from lab.results import fmt_setting
from lab.store import RunRow

from ..widgets.footer import LabFooter
from ..widgets.charts import LossChart, LrChart
from ..widgets.synced_table import ColumnSpec, SyncedTable, cell

if TYPE_CHECKING:
    from ..app import LabApp

REDRAW_S = 1.0  # a live run's charts are redrawn at most this often
SPLITS = ("train_step", "train", "val")


class Curve:
    """A run's losses of one split, read incrementally from the store."""

    __slots__ = ("steps", "values")

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else -1


class DetailScreen(Screen):
    """Shows `app.detail_ids`: one run in detail, or several overlaid."""

    BINDINGS = [Binding("escape", "back", "Back")]

    app: "LabApp"

    def __init__(self) -> None:
        super().__init__()
        self.run_ids: list[str] = []
        self._curves: dict[tuple[str, str], Curve] = {}
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
        ids = [i for i in self.app.detail_ids if i in self.app.live]
        if ids != self.run_ids:
            self.run_ids = ids
            self._curves.clear()
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
        return [self.app.live[i].row for i in self.run_ids if i in self.app.live]

    def _redraw(self) -> None:
        self._redraw_timer = None
        self._drawn_at = time.monotonic()
        rows = self._rows()
        self.set_class(len(rows) > 1, "-compare")
        if not rows:
            self.query_one(LossChart).show_curves("no run selected: highlight one in Runs or Results, press enter", [])
            self.query_one(LrChart).show_schedules([])
            self.query_one("#detail-settings", Static).update("")
            self.query_one(Log).clear()
            return
        if len(rows) == 1:
            self._show_one(rows[0])
        else:
            self._show_many(rows)

    def _curve(self, row: RunRow, split: str) -> Curve:
        key = (row.run_id, split)
        curve = self._curves.get(key)
        if curve is None or row.step < curve.last_step:  # new, or restarted/resumed earlier
            curve = self._curves[key] = Curve()
        since = curve.last_step if curve.last_step >= 0 else None
        for step, _, loss, _ in self.app.store.metrics(row.run_id, split, since_step=since):
            curve.steps.append(step)
            curve.values.append(loss)
        return curve

    # -- one run ---------------------------------------------------------------------------------

    def _show_one(self, row: RunRow) -> None:
        batch, train, val = (self._curve(row, s) for s in SPLITS)
        self.query_one(LossChart).show_curves(
            f"{row.suite}/{row.name}: loss",
            [("train (batch)", batch.steps, batch.values), ("train", train.steps, train.values),
             ("val", val.steps, val.values)],
            xmax=row.max_iters, colors=("gray", "orange", "cyan"))
        self.query_one(LrChart).show_schedules([(row.name, row.config)], at_step=row.step)
        self.query_one("#detail-settings", Static).update(self._settings(row))
        self._show_log(row)

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

    def _show_log(self, row: RunRow) -> None:
        log = self.query_one(Log)
        entries = self.app.store.log(row.run_id)
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

    def _show_many(self, rows: list[RunRow]) -> None:
        multi_suite = len({r.suite for r in rows}) > 1
        label = (lambda r: f"{r.suite}/{r.name}") if multi_suite else (lambda r: r.name)
        curves = []
        for row in rows:
            val = self._curve(row, "val")
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
        """The settings every compared run shares (what differs is in the table below)."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("comparing", f"{len(rows)} runs")
        dicts = [r.config.to_dict() for r in rows]
        for key, value in dicts[0].items():
            if all(d.get(key) == value for d in dicts[1:]):
                if key == "skips":
                    value = ", ".join(f"{d}={fmt_setting(r)}" for d, r in rows[0].config.skips)
                grid.add_row(key, value if isinstance(value, str) else fmt_setting(value))
        return grid

    def action_back(self) -> None:
        self.app.action_back()
