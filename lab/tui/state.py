"""What the lab's views show: one `LabState`, owned by the app and read by every screen.

The app folds the poller's updates into it (`apply`) and records which runs Detail shows;
the Runs and Results screens record marks in it. The store may hold 100,000 runs, so `live`
holds whole rows only of the runs the views show (the Runs window, the Results rows, marked
runs, Detail's: `requests` tells the poller which); every run's status, the counts per status
and the suites are kept for the rest. Screens are handed the state when they are
made and draw from it, so they need neither the app class nor the store: what they want done
(open runs in Detail, cancel a run, go back) they post as messages, which the app acts on
(DESIGN.md section 4). Only the UI thread touches it; store access happens in workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.store import DriverInfo

from .poller import LiveRun, ResultsPage, Update, ViewRequests, WindowPage, WindowRequest


@dataclass
class LabState:
    """The runs in the store as last polled, the driver, the marks and Detail's runs."""

    store_dir: Path
    live: dict[str, LiveRun] = field(default_factory=dict)  # run id -> run, of the runs the views hold
    statuses: dict[str, str] = field(default_factory=dict)  # every run id -> its status, in store order
    counts: dict[str, int] = field(default_factory=dict)  # runs per status
    suites: list[str] = field(default_factory=list)  # in first-seen order
    window: WindowPage = field(default_factory=lambda: WindowPage(WindowRequest(), (), 0))  # the Runs table's
    results: ResultsPage | None = None  # what Results ranks
    requests: ViewRequests = field(default_factory=ViewRequests)  # what the views ask the poller for
    marked: set[str] = field(default_factory=set)  # runs marked (space) for comparison
    driver: DriverInfo | None = None
    detail_ids: list[str] = field(default_factory=list)  # the runs Detail shows
    #: Counts changes of `live`, `driver` and `marked`: a screen shown again redraws only if
    #: this moved since it last drew (a redraw of 64 ranked results costs tens of ms).
    version: int = 0
    #: A view only: no launch, cancel, edit or save (`lab.tui.read_only`).
    read_only: bool = False

    @property
    def driver_alive(self) -> bool:
        return self.driver is not None and self.driver.alive

    @property
    def headless_holds_store(self) -> bool:
        """A headless run holds the store: its runs train in its terminal, and it takes no new
        work. (A record without a kind, from an older driver, counts when it takes no work.)"""
        d = self.driver
        return d is not None and d.alive and (d.kind == "headless" or (d.kind is None and not d.accepting))

    def apply(self, update: Update) -> None:
        """Fold in what the poller saw change; a run that left the store loses its mark."""
        if not update:
            return
        self.version += 1
        for run_id in update.removed:
            self.live.pop(run_id, None)
            self.statuses.pop(run_id, None)
            self.marked.discard(run_id)
        for run_id in update.dropped:
            self.live.pop(run_id, None)
        self.live.update(update.changed)
        self.statuses.update(update.statuses)
        if update.counts is not None:
            self.counts = update.counts
        if update.suites is not None:
            self.suites = update.suites
        if update.window is not None:
            self.window = update.window
        if update.results is not None:
            self.results = update.results
        if update.driver_changed:
            self.driver = update.driver
        if update.removed:
            self._watch()

    def window_runs(self) -> list[LiveRun]:
        """The Runs window's runs in order (those whose rows have arrived)."""
        return [self.live[i] for i in self.window.run_ids if i in self.live]

    def show_in_detail(self, run_ids: list[str]) -> None:
        self.detail_ids = [i for i in run_ids if i in self.live]
        self._watch()

    def toggle_mark(self, run_id: str) -> None:
        self.version += 1
        if run_id in self.marked:
            self.marked.discard(run_id)
        elif run_id in self.live:
            self.marked.add(run_id)
        self._watch()

    def _watch(self) -> None:
        """Marked runs and Detail's stay held wherever the tables page to."""
        self.requests.watch(self.marked | set(self.detail_ids))

    def marked_in_order(self) -> list[str]:
        """The marked runs in store order (the order Compare overlays them in)."""
        return [run_id for run_id in self.statuses if run_id in self.marked]
