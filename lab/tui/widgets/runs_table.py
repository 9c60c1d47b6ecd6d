"""The Runs screen's table: one row per run, updated in place as the store changes.

The table holds a window of the store's runs (`lab.tui.poller.WINDOW` of them, read in SQL),
not all of them: a 100,000-run store would take minutes to format. The cursor keys move
through the whole list: a move past either end of the window asks for the window around its
target (`WindowWanted`), and the cursor lands there once the poller has read it.
"""

from __future__ import annotations

from rich.text import Text
from textual.message import Message

from lab.formatting import fmt_duration, fmt_loss, fmt_rate, sparkline, status_style

from ..poller import WINDOW, LiveRun
from .synced_table import ColumnSpec, SyncedTable, cell

MARK = "●"
BAR_WIDTH = 8
CURVE_WIDTH = 12
RUN_WIDTH = 28
RUN_MIN_WIDTH = 18  # "pa…/skips.1=0.025": the suite is shortened first (`run_label`)
PADDING = 2  # a DataTable cell's padding, one column each side

COLUMNS = (
    ColumnSpec("run", "  run", RUN_WIDTH),
    ColumnSpec("status", "status", 8),
    ColumnSpec("progress", "progress", BAR_WIDTH),
    ColumnSpec("step", "step", 11, "right"),
    ColumnSpec("train", "train", 6, "right"),
    ColumnSpec("val", "val", 6, "right"),
    ColumnSpec("curve", "recent val", CURVE_WIDTH),
    ColumnSpec("rate", "tok/s", 7, "right"),
    ColumnSpec("eta", "ETA", 6, "right"),
    ColumnSpec("device", "device", 6),
)
#: What a narrow table gives up, first to last: the run column shrinks to RUN_MIN_WIDTH after
#: the device and the recent-val sparkline (the panel below draws the highlighted run's curves)
#: are dropped; status, run, step, train and val always stay.
DROP_FIRST = ("device", "curve")
DROP_LATER = ("rate", "progress", "eta")


def columns_for(width: int) -> tuple[ColumnSpec, ...]:
    """The columns that fit a table `width` cells wide (all of them from 118 up; at 80 the
    run, status, progress, step, train, val and ETA)."""
    def total(cols: list[ColumnSpec]) -> int:
        return sum((c.width or 0) + PADDING for c in cols)

    cols = list(COLUMNS)
    for key in DROP_FIRST:
        if total(cols) <= width:
            break
        cols = [c for c in cols if c.key != key]
    for key in (None,) + DROP_LATER:
        if key is not None:
            cols = [c for c in cols if c.key != key]
        room = width - total(cols) + RUN_WIDTH  # what the run column may take
        if room >= RUN_MIN_WIDTH:
            break
    run_width = max(RUN_MIN_WIDTH, min(RUN_WIDTH, room))
    return tuple(ColumnSpec(c.key, c.header, run_width) if c.key == "run" else c for c in cols)


def status_text(status: str) -> Text:
    return cell(status, style=status_style(status))


def progress_bar(step: int, max_iters: int, status: str, width: int = BAR_WIDTH) -> Text:
    """A bar of heavy lines (half cells with "╸"), coloured by status."""
    frac = 0.0 if max_iters <= 0 else min(1.0, max(0.0, step / max_iters))
    halves = int(frac * width * 2)
    full, half = divmod(halves, 2)
    bar = Text(no_wrap=True)
    bar.append("━" * full + ("╸" if half else ""), style=status_style(status) or "cyan")
    bar.append("━" * (width - full - half), style="grey30")
    return bar


def run_label(suite: str, name: str, width: int) -> str:
    """"suite/name" in `width` characters, shortening the suite first (the name tells runs apart)."""
    text = f"{suite}/{name}"
    if len(text) <= width:
        return text
    room = width - len(name) - 2  # "…/"
    if room >= 1:
        return f"{suite[:room]}…/{name}"
    return "…" + name[-(width - 1):]


def compact(n: int) -> str:
    """Step counts up to 99999 as they are, larger ones in thousands ("500k")."""
    return str(n) if n < 100_000 else f"{n // 1000}k"


def short_loss(x: float | None) -> str:
    """A loss in six characters ("1.2345", "12.345")."""
    return fmt_loss(x)[:6].rstrip(".")


def run_cells(live: LiveRun, marked: bool, run_width: int = RUN_WIDTH) -> dict[str, Text]:
    """The cells of one run's row by column key (only store data: no clock, so views are
    reproducible)."""
    r = live.row
    finished = r.status == "finished"
    return {
        "run": Text.assemble((MARK if marked else " ", "bold yellow"), " ",
                             run_label(r.suite, r.name, run_width - 2), no_wrap=True),
        "status": status_text(r.status),
        "progress": progress_bar(r.step, r.max_iters, r.status),
        "step": cell(f"{compact(r.step)}/{compact(r.max_iters)}", "right"),
        "train": cell(short_loss(r.final_train if finished and r.final_train is not None else r.last_train_loss),
                      "right"),
        "val": cell(short_loss(r.final_val if finished and r.final_val is not None else r.last_val_loss), "right"),
        "curve": cell(sparkline(live.val, CURVE_WIDTH), style="cyan"),
        "rate": cell(fmt_rate(live.tokens_per_s), "right"),
        "eta": cell(fmt_duration(live.eta_s), "right"),
        "device": cell(r.device or ""),
    }


class RunsTable(SyncedTable):
    """A window of the store's runs, in the order runs were first queued, in the columns that fit."""

    class WindowWanted(Message):
        """The cursor is to leave the window: show the runs from `offset` on."""

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.offset = offset

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._made: dict[str, tuple[LiveRun, bool, tuple]] = {}  # run id -> (state, marked, cells)
        self._shown: tuple[list[LiveRun], set[str]] = ([], set())
        self.window_start = 0  # the window's first run, counted in the whole (filtered) list
        self.list_total = 0  # runs in the whole (filtered) list
        self._target: int | None = None  # where the cursor goes once the window asked for arrives

    def _columns(self) -> tuple[ColumnSpec, ...]:
        width = self.size.width or self.app.size.width
        return columns_for(width - self.styles.scrollbar_size_vertical)

    def on_mount(self) -> None:
        self.set_columns(self._columns())

    def on_resize(self) -> None:
        if self._columns() != self._column_specs:
            self.show(*self._shown, offset=self.window_start, total=self.list_total)

    def show(self, runs: list[LiveRun], marked: set[str], offset: int = 0, total: int | None = None) -> None:
        """Show `runs`, the window from `offset` of `total`; cells are formatted again only for
        runs whose state or mark changed (a `LiveRun` is replaced only when its run changed) or
        when the columns did, so unchanged rows cost nothing."""
        self._shown = (runs, marked)
        self.window_start, self.list_total = offset, len(runs) if total is None else total
        if self.set_columns(self._columns()):
            self._made = {}
        specs = self._column_specs
        run_width = next(c.width for c in specs if c.key == "run") or RUN_WIDTH
        rows, made = [], {}
        for live in runs:
            is_marked = live.run_id in marked
            old = self._made.get(live.run_id)
            if old is not None and old[0] is live and old[1] == is_marked:
                cells = old[2]
            else:
                by_key = run_cells(live, is_marked, run_width)
                cells = tuple(by_key[c.key] for c in specs)
            made[live.run_id] = (live, is_marked, cells)
            rows.append((live.run_id, cells))
        self._made = made
        self.sync(rows)
        target, self._target = self._target, None
        if target is not None and 0 <= target - offset < self.row_count:
            self.move_cursor(row=target - offset, animate=False)

    # -- moving through the whole list, a window at a time -------------------------------------

    @property
    def place(self) -> int:
        """The cursor's place in the whole (filtered) list."""
        return self.window_start + self.cursor_row

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - (self.header_height if self.show_header else 0))

    def _go(self, target: int) -> bool:
        """Ask for the window around `target` when it lies outside this one; False when it is
        inside (the table moves its cursor itself)."""
        if not self.list_total:
            return False
        target = max(0, min(self.list_total - 1, target))
        if self.window_start <= target < self.window_start + self.row_count:
            return False
        self._target = target
        self.post_message(self.WindowWanted(max(0, target - WINDOW // 2)))
        return True

    def action_cursor_down(self) -> None:
        if self.cursor_row < self.row_count - 1 or not self._go(self.place + 1):
            super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.cursor_row > 0 or not self._go(self.place - 1):
            super().action_cursor_up()

    def action_page_down(self) -> None:
        if not self._go(self.place + self._page()):
            super().action_page_down()

    def action_page_up(self) -> None:
        if not self._go(self.place - self._page()):
            super().action_page_up()

    def action_scroll_top(self) -> None:
        if not self._go(0):
            super().action_scroll_top()

    def action_scroll_bottom(self) -> None:
        if not self._go(self.list_total - 1):
            super().action_scroll_bottom()
