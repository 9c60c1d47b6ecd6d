"""Results: the comparative table of `lab.results`, with the same cells as `dropres-lab results`.

Replicated runs are shown merged (mean ± sd, the 95 % interval, the test against the best
comparable run), and the shown suite's claims (from the experiments file) are listed with
their verdicts below the table, as `dropres-lab results` prints them.

The rows are read as `dropres-lab results` reads them at scale: the best `RESULTS_PAGE` runs of
each suite, picked in SQL by the poller (every run of a suite with replicates, which are merged
first), with the statistics computed over those; the note says how many more there are, and
`m` shows more. A 100,000-run store is never ranked or drawn whole.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Header, Label, Select, Static

from lab.formatting import counted, status_style, verdict_style
from lab.results import ResultRow, best_rows, columns, result_rows, setting_value, to_csv, to_markdown
from lab.store import STATUSES

from ..experiments_file import ExperimentsFile
from ..poller import RESULTS_PAGE
from ..state import LabState

from ..widgets.footer import LabFooter
from .run_list import RunListScreen
from ..widgets.runs_table import MARK
from ..widgets.synced_table import ColumnSpec, SyncedTable, cell
from .export import ExportScreen, write_export

ALL = "*"

#: Column header -> the ResultRow value it sorts by (varied settings sort by their value).
SORT_FIELDS = {"#": "rank", "run": "name", "suite": "suite", "status": "status", "step": "step", "n": "n",
               "best val": "best_val", "Δ best": "delta_best", "final val": "final_val",
               "final train": "final_train", "gap": "gap", "exact val": "exact_val", "reference": "reference",
               "Δ ref": "delta_ref", "tok/s": "tokens_per_s", "wall": "wall_s"}


#: The columns `s` visits first, in this order: the losses (what a comparison is about), the
#: final val first (the loss the paper reports; the table is already ranked by best val).
SORT_FIRST = ("final val", "best val", "exact val", "final train", "gap", "Δ best", "reference", "Δ ref")


def sort_cycle(headers: list[str]) -> list[str]:
    """The columns `s` steps through: the losses, then every other column as shown, except "#"
    (the rank: sorting by it is the ranking the cycle returns to at its end)."""
    first = [h for h in SORT_FIRST if h in headers]
    return first + [h for h in headers if h not in first and h != "#"]


def sort_value(row: ResultRow, header: str) -> Any:
    if header in STAT_SORT:
        return STAT_SORT[header](row)
    field = SORT_FIELDS.get(header)
    return getattr(row, field) if field else setting_value(row.config, header)


#: The statistics columns (`lab.results.statistics_columns`) sort by a number, not their text.
STAT_SORT = {
    "set": lambda r: r.comparable or None,
    "exact 95% CI": lambda r: r.stats["exact_val"].low if r.stats else None,
    "vs best (exact val)": lambda r: 0.0 if r.verdict == "best" else (r.vs_best.diff if r.vs_best else None),
}


def sort_rows(rows: list[ResultRow], header: str | None, reverse: bool) -> list[ResultRow]:
    """Rows ordered by one column; rows without a value always come last."""
    if header is None:
        return list(reversed(rows)) if reverse else list(rows)
    have = [r for r in rows if sort_value(r, header) is not None]
    missing = [r for r in rows if sort_value(r, header) is None]
    try:
        have.sort(key=lambda r: sort_value(r, header), reverse=reverse)
    except TypeError:  # mixed types in one column: compare as text
        have.sort(key=lambda r: str(sort_value(r, header)), reverse=reverse)
    return have + missing


def row_key(row: ResultRow) -> str:
    return " ".join(row.run_ids)


class ResultsScreen(RunListScreen):
    """One suite's runs (or every suite's), ranked by best validation loss."""

    BINDINGS = [
        Binding("space", "toggle_mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse"),
        Binding("e", "export", "Export"),
        Binding("w", "write_report", "Write report"),
        Binding("d", "open_detail", "Detail", show=False),
        Binding("m", "more_rows", "More rows", show=False),
    ]

    WRITES = frozenset({"export"})  # writes a file next to the store

    AUTO_FOCUS = "#results-table"

    def __init__(self, state: LabState, experiments_path: Path | None = None) -> None:
        super().__init__(state)
        self.experiments_path = experiments_path
        self._experiments = ExperimentsFile(experiments_path)
        self.claims_shown: dict[str, list] = {}  # suite -> its ClaimResults, as listed under the table
        self.sort_header: str | None = None  # None: ranked by best val, as `results` prints
        self.reverse = False
        self.shown: list[ResultRow] = []
        self._suites: list[str] = []
        self._headers: list[str] = []
        self._drawn_version = -1  # `state.version` when the table was last filled
        #: The suite filter the user picked (ALL for every suite); None until they pick one.
        self.suite_choice: str | None = None
        self._first_suite: str | None = None  # shown until the user picks: the newest when first shown
        self._shown_suite: str = ALL  # what this screen last set the suite filter to

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="results-filters"):
            yield Label("suite", classes="filter-label")
            yield Select([("all suites", ALL)], id="suite-filter", allow_blank=False, value=ALL)
            yield Label("status", classes="filter-label")
            yield Select([("any status", ALL)] + [(s, s) for s in STATUSES], id="status-filter",
                         allow_blank=False, value=ALL)
            yield Static(id="results-note", classes="summary")
        yield SyncedTable(id="results-table")
        yield Static(id="results-claims")
        yield LabFooter(compact=True, show_command_palette=False)

    # -- data ----------------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        if self._drawn_version != self.state.version:  # else the table shows the state as it is
            self.refresh_live(None)

    def refresh_live(self, changed: Iterable[str] | None) -> None:
        self._drawn_version = self.state.version
        self._update_suites()
        self._fill()

    def _update_suites(self) -> None:
        """Offer the store's suites and show the one chosen: the user's pick (`suite_choice`),
        else the newest suite when first shown (the one most likely being worked on).

        The choice is the screen's own state, changed only by the user picking a suite. The
        widget's value is never read back to decide it: rebuilding the options resets the
        widget to its first option on the way, and a suite can leave the store for a moment
        (its runs deleted and enqueued afresh) and come back; either way the filter must not
        change by itself. While the chosen suite is absent the newest one is shown, and the
        choice returns with it; a suite launched later never takes its place.
        """
        suites = list(self.state.suites)
        if suites == self._suites:
            return
        self._suites = suites
        if self._first_suite not in suites:
            self._first_suite = suites[-1] if suites else None
        choice = self.suite_choice if self.suite_choice == ALL or self.suite_choice in suites else self._first_suite
        select = self.query_one("#suite-filter", Select)
        self._shown_suite = choice or ALL
        with self.prevent(Select.Changed):
            select.set_options([("all suites", ALL)] + [(s, s) for s in suites])
            select.value = self._shown_suite

    def selection(self) -> tuple[str | None, str | None]:
        suite = self.query_one("#suite-filter", Select).value
        status = self.query_one("#status-filter", Select).value
        return (None if suite in (ALL, Select.BLANK) else suite, None if status in (ALL, Select.BLANK) else status)

    def _fill(self) -> None:
        suite, status = self.selection()
        page, live = self.state.results, self.state.live
        every = [live[i].row for i in page.run_ids if i in live] if page is not None else []
        runs = [r for r in every if suite is None or r.suite == suite]
        experiments = self.experiments()
        from lab.claims import suite_tolerances

        replicated = {r.suite for r in runs if r.base_name and r.base_name != r.name}
        replicates = bool(replicated)
        ranked = result_rows(runs, replicates=replicates, tolerances=suite_tolerances(experiments))  # then filtered
        in_suite = Counter(r.suite for r in ranked)  # rows per suite, then how many the store has
        total = sum(n if s in replicated or page is None else page.totals.get(s, n) for s, n in in_suite.items())
        if replicates and page is not None:  # merged rows are cut after ranking, as `results` cuts them
            ranked, _ = best_rows(ranked, page.limit)
        rows = [r for r in ranked if status is None or r.status == status]
        rows = sort_rows(rows, self.sort_header, self.reverse)
        with_suite = len({r.suite for r in ranked}) > 1
        cols = columns(ranked, with_suite)
        self._headers = [c.header for c in cols]
        table = self.query_one(SyncedTable)
        arrow = " ▼" if self.reverse else " ▲"
        specs = [ColumnSpec("mark", " ", 1)] + [
            ColumnSpec(c.header, c.header + (arrow if c.header == self.sort_header else ""), None, c.justify)
            for c in cols
        ]
        table.set_columns(specs)
        marked = self.state.marked
        table.sync([
            (row_key(r), [cell(MARK if set(r.run_ids) & marked else " ", style="bold yellow")]
             + [self._cell(c.cell(r), c.justify, c.header, r) for c in cols])
            for r in rows
        ])
        self.shown = rows
        noun = ("row", "rows") if replicates else ("run", "runs")
        note = f"{len(rows)} of {counted(total, *noun)} · {self._order_text()}"
        if total > len(ranked):
            note += f" · the best {page.limit:,} of each suite: {total - len(ranked):,} more (m shows {RESULTS_PAGE} more)"
        self.query_one("#results-note", Static).update(note)
        claim_rows = [live[i].row for i in page.claim_ids if i in live] if page is not None else []
        self._fill_claims(experiments, claim_rows, [s for s in dict.fromkeys(r.suite for r in ranked)])

    def experiments(self) -> Any:
        """The experiments file (claims, tolerances), read again when it changes; None when
        there is none or it has problems (the Experiments screen shows those)."""
        return self._experiments.get()

    def _fill_claims(self, experiments: Any, runs: list, suites: list[str]) -> None:
        """The shown suites' claims and verdicts under the table (hidden when there are none)."""
        from lab.claims import claim_results, claims_table, referenced_suites

        results = {}
        if experiments is not None and any(getattr(experiments.suites.get(s), "claims", None) for s in suites):
            needed = set(referenced_suites(experiments, suites))  # not every suite's runs: only what the claims name
            results = claim_results(experiments, [r for r in runs if r.suite in needed], suites)
        self.claims_shown = results
        panel = self.query_one("#results-claims", Static)
        panel.display = bool(results)
        if results:
            from rich.console import Group

            panel.update(Group(*(claims_table(s, rs) for s, rs in results.items())))

    def _order_text(self) -> str:
        """How the rows are ordered, as the note under the filters and the sort keys say it."""
        if self.sort_header is None:
            return "ranked by best val" + (" (reversed)" if self.reverse else "")
        return f"sorted by {self.sort_header} ({'descending' if self.reverse else 'ascending'})"

    @staticmethod
    def _cell(text: str, justify: str, header: str, row: ResultRow) -> Text:
        style = status_style(row.status) if header == "status" else ""
        if header.startswith("vs best"):
            style = verdict_style(row.verdict)
        if row.rank == 1 and row.best_val is not None:  # as `dropres-lab results` prints it
            style = f"bold {style}".strip()
        return cell(text, justify, style)

    def on_select_changed(self, event: Select.Changed) -> None:
        value = event.select.value  # the widget's value now: an event can be older than the last reset
        if event.select.id == "suite-filter" and value != self._shown_suite:
            self.suite_choice = self._shown_suite = str(value)  # the user picked another suite
        self._fill()

    # -- the app's list-screen protocol ----------------------------------------------------------

    def _current(self) -> ResultRow | None:
        key = self.query_one(SyncedTable).current_key
        return next((r for r in self.shown if row_key(r) == key), None)

    def current_run_ids(self) -> list[str]:
        row = self._current()
        return list(row.run_ids) if row else []

    def redraw_marks(self) -> None:
        self._fill()

    # -- actions -------------------------------------------------------------------------------

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        header = str(event.column_key.value)
        if header == "mark":
            return
        if header == self.sort_header:
            self.reverse = not self.reverse
        else:
            self.sort_header, self.reverse = header, False
        self._fill()

    def action_sort_next(self) -> None:
        """Sort by the next column of `sort_cycle` (after the last one: back to the ranking),
        and say which, since a sort can leave the rows looking unchanged."""
        cycle = sort_cycle(self._headers)
        if self.sort_header not in cycle:
            self.sort_header = cycle[0] if cycle else None
        else:
            i = cycle.index(self.sort_header) + 1
            self.sort_header = cycle[i] if i < len(cycle) else None
        self.reverse = False
        self._fill()
        self.notify(self._order_text() + " · s: next column, S: reverse", timeout=3)

    def action_more_rows(self) -> None:
        """Rank and show `RESULTS_PAGE` more runs of each suite (read in SQL by the poller)."""
        page = self.state.results
        if page is None or all(page.totals.get(s, 0) <= page.limit for s in page.totals):
            self.notify("every run is shown", timeout=3)
            return
        self.state.requests.set_results(limit=page.limit + RESULTS_PAGE)

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._fill()

    def action_export(self) -> None:
        if not self.shown:
            self.notify("nothing to export: the table is empty", severity="warning")
            return
        suite, _ = self.selection()
        default = self.state.store_dir / f"results-{suite or 'all'}.csv"
        self.app.push_screen(ExportScreen(default), self._export)

    def _export(self, choice: tuple[Path, str] | None) -> None:
        if choice is None:
            return
        path, fmt = choice
        text = to_csv(self.shown) if fmt == "csv" else to_markdown(self.shown)
        message, severity = write_export(path, text, len(self.shown))
        self.notify(message, severity=severity, timeout=8)

    def action_write_report(self) -> None:
        """Write `dropres-lab report SUITE` for the suite shown (with every suite shown: the
        highlighted row's) into report/ of the working folder, as the command would, and say where."""
        suite, _ = self.selection()
        if suite is None:
            row = self._current()
            suite = row.suite if row is not None else None
        if suite is None:
            self.notify("no report to write: the table is empty", severity="warning")
            return
        self.notify(f"writing the report of {suite} ...", timeout=3)
        self._write_report(suite, Path("report").resolve())

    @work(thread=True, exclusive=True, group="report")
    def _write_report(self, suite: str, output: Path) -> None:
        """Off the UI thread: matplotlib and the store read take a second or more."""
        from lab.report import ReportError, write_report
        from lab.store import StoreError

        try:
            written = write_report(self.state.store_dir, [suite], output, "png", self.experiments_path)
            message, severity = written.summary(), "information"
        except (ReportError, StoreError) as exc:
            message, severity = f"no report: {exc}", "error"
        self.app.call_from_thread(self.notify, message, severity=severity, timeout=10)
