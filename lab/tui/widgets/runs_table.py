"""The Runs screen's table: one row per run, updated in place as the store changes."""

from __future__ import annotations

from rich.text import Text

from lab.formatting import fmt_duration, fmt_loss, fmt_rate, sparkline, status_style

from ..poller import LiveRun
from .synced_table import ColumnSpec, SyncedTable, cell

MARK = "●"
BAR_WIDTH = 8
CURVE_WIDTH = 12
RUN_WIDTH = 28

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
    if room >= 3:
        return f"{suite[:room]}…/{name}"
    return "…" + name[-(width - 1):]


def compact(n: int) -> str:
    """Step counts up to 99999 as they are, larger ones in thousands ("500k")."""
    return str(n) if n < 100_000 else f"{n // 1000}k"


def short_loss(x: float | None) -> str:
    """A loss in six characters ("1.2345", "12.345")."""
    return fmt_loss(x)[:6].rstrip(".")


def run_cells(live: LiveRun, marked: bool) -> tuple:
    """The cells of one run's row (only store data: no clock, so views are reproducible)."""
    r = live.row
    finished = r.status == "finished"
    return (
        Text.assemble((MARK if marked else " ", "bold yellow"), " ",
                      run_label(r.suite, r.name, RUN_WIDTH - 2), no_wrap=True),
        status_text(r.status),
        progress_bar(r.step, r.max_iters, r.status),
        cell(f"{compact(r.step)}/{compact(r.max_iters)}", "right"),
        cell(short_loss(r.final_train if finished and r.final_train is not None else r.last_train_loss), "right"),
        cell(short_loss(r.final_val if finished and r.final_val is not None else r.last_val_loss), "right"),
        cell(sparkline(live.val, CURVE_WIDTH), style="cyan"),
        cell(fmt_rate(live.tokens_per_s), "right"),
        cell(fmt_duration(live.eta_s), "right"),
        cell(r.device or ""),
    )


class RunsTable(SyncedTable):
    """Every run in the store, in the order runs were first queued."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._made: dict[str, tuple[LiveRun, bool, tuple]] = {}  # run id -> (state, marked, cells)

    def on_mount(self) -> None:
        self.set_columns(COLUMNS)

    def show(self, runs: list[LiveRun], marked: set[str]) -> None:
        """Show `runs`; cells are formatted again only for runs whose state or mark changed
        (a `LiveRun` is replaced only when its run changed), so unchanged rows cost nothing."""
        self.set_columns(COLUMNS)
        rows, made = [], {}
        for live in runs:
            is_marked = live.run_id in marked
            old = self._made.get(live.run_id)
            cells = old[2] if old is not None and old[0] is live and old[1] == is_marked else run_cells(live, is_marked)
            made[live.run_id] = (live, is_marked, cells)
            rows.append((live.run_id, cells))
        self._made = made
        self.sync(rows)
