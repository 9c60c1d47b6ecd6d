"""Reading the store for the interactive lab: what changed since the last look, and only
what the views show.

The TUI is a client of the store (DESIGN.md section 3): it never talks to workers; it polls
the store a few times a second, in a worker thread. `StorePoller` does one poll at a time on
its own SQLite connection (so a read never waits behind the app's writes, which its workers
make on another connection) and returns only what changed. A store may hold 100,000 runs, so
no poll reads or formats every run:

* `Store.data_version()` first: when no other connection has committed since the last poll,
  nothing else is read;
* otherwise the light state of the runs updated since the last poll (id, status, updated time,
  step; `Store.run_states`, on an index) tells which runs changed; the first poll reads the
  light state of every run. From it the poller keeps every run's status (what the counts, the
  launch checks and the quit question need) and counts them per status;
* whole rows are read only for the runs a view holds (`ViewRequests`): the Runs table's window
  (a page of the store, filtered, counted and paged in SQL), the Results screen's best rows per
  suite (`Store.best_runs`; read again after a change at most once per a few times the read
  took, more rarely while Results is not shown, at once when it is shown or asked for more
  rows), the marked runs and Detail's. Of
  those, only rows that changed are read again, and only for rows in the Runs window are new
  evaluation metrics fetched (`since_step`), so a poll costs a few small queries, not a reread
  of every curve. A run no view holds any more is `dropped` (it is still in the store);
* the driver's record and lock are checked about once a second, before the runs (a driver
  killed with SIGKILL drops its lock without writing anything). Once a driver that recorded
  itself no longer holds the lock it is known dead, and the runs it left "running" are shown
  as the next driver will record them: stopped, interrupted, resumable (`as_interrupted`).
  The lab does not write that itself: the store changes only through a driver. (A clean
  exit ends its runs and removes its record first, so nothing is shown interrupted then.)

Each run's loss history is a `Series`: at most `HISTORY` points that always span the whole
run (when full, every other point is dropped and the stride doubles), so memory stays flat
over runs of any length while a sparkline still shows the whole curve.

Coalescing (toolong's rule: a newer per-run update replaces a pending one) happens in
`Pending`: the polling thread merges each poll into it and posts one message only when none is
outstanding; the UI takes everything pending at once. However many polls happen while the UI
is busy, it receives one batch holding the newest state of each changed run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from textual.message import Message

from lab.store import DriverInfo, RunRow, Store, as_interrupted

from .experiments_file import ExperimentsFile

#: Points kept per curve (val and train evaluations) for sparklines.
HISTORY = 128
#: Seconds between driver-lock checks.
DRIVER_CHECK_S = 1.0


class Series:
    """A bounded, evenly thinned history of (step, loss) that always spans the whole run."""

    __slots__ = ("cap", "stride", "steps", "values", "_count", "last_step")

    def __init__(self, cap: int = HISTORY) -> None:
        self.cap = cap
        self.stride = 1
        self.steps: list[int] = []
        self.values: list[float] = []
        self._count = 0  # points offered so far
        self.last_step = -1  # newest step offered (the `since_step` of the next query)

    def add(self, step: int, value: float) -> None:
        if step <= self.last_step:
            return
        self.last_step = step
        if self._count % self.stride == 0:
            self.steps.append(step)
            self.values.append(value)
            if len(self.values) > self.cap:
                self.steps = self.steps[::2]
                self.values = self.values[::2]
                self.stride *= 2
        self._count += 1

    def snapshot(self) -> tuple[float, ...]:
        return tuple(self.values)


@dataclass(frozen=True)
class LiveRun:
    """One run as the views show it: its store row and bounded val/train loss histories."""

    row: RunRow
    val: tuple[float, ...] = ()
    train: tuple[float, ...] = ()

    @property
    def run_id(self) -> str:
        return self.row.run_id

    @property
    def label(self) -> str:
        return f"{self.row.suite}/{self.row.name}"

    @property
    def tokens_per_s(self) -> float | None:
        """Live rate while running, the run's overall rate once it has ended."""
        if self.row.status == "running":
            return self.row.tokens_per_s_live
        return self.row.tokens_per_s or self.row.tokens_per_s_live

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the stored rate (from the store only, never from the clock)."""
        r = self.row
        rate = r.tokens_per_s_live
        if r.status != "running" or not rate or rate <= 0:
            return None
        return (r.max_iters - r.step) * r.config.batch_size * r.config.block_size / rate


#: Runs the Runs table holds at once: a window of the store, paged in SQL as the cursor moves.
WINDOW = 200
#: Result rows per suite the Results screen shows at first; `m` shows as many more.
RESULTS_PAGE = 100
#: Seconds of updated times read again at each poll: a write stamped just before another
#: writer's commit becomes visible after it, and must not be missed.
SLACK_S = 2.0
#: A writer may stamp its rows before it waits (up to the store's busy timeout) for the write
#: lock, so rarely rows become visible older than the slack: every this many seconds of a
#: changing store, every run's light state is read again (0.1 s at 100,000 runs).
FULL_READ_S = 30.0
#: Results are read again after a change at most once per this many times the last read took,
#: while Results is shown and while it is not (so it is current when shown; a 100,000-run
#: store ranks in a fraction of a second, and the poller does not spend its time on it).
RESULTS_THROTTLE = 4.0
RESULTS_THROTTLE_HIDDEN = 20.0


@dataclass(frozen=True)
class WindowRequest:
    """Which runs the Runs table asks for: those matching `text` (`lab.store.view_filter`),
    `limit` of them from `offset`, in store order."""

    text: str = ""
    offset: int = 0
    limit: int = WINDOW


@dataclass(frozen=True)
class WindowPage:
    """The runs of a window as read: the request (its offset kept inside the matches), the
    ids in order and how many runs match the filter in all."""

    request: WindowRequest
    run_ids: tuple[str, ...]
    total: int


@dataclass(frozen=True)
class ResultsPage:
    """What the Results screen ranks: the best `limit` runs of each suite (every run of a
    suite with replicates, which are merged before ranking), suites in first-seen order; how
    many runs each suite has; and every run of the suites the claims need."""

    limit: int
    run_ids: tuple[str, ...]
    totals: dict[str, int]
    claim_ids: tuple[str, ...] = ()


class ViewRequests:
    """What the views hold, set on the UI thread and read by the polling thread; a change
    wakes the poller (`wake`), so a page turn is answered by the next poll at once."""

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._wake = wake
        self.window = WindowRequest()
        self.results_limit = RESULTS_PAGE
        self.results_active = True  # until the app says which screen is shown
        self.watched: frozenset[str] = frozenset()

    def snapshot(self) -> tuple[WindowRequest, bool, int, frozenset[str]]:
        with self._lock:
            return self.window, self.results_active, self.results_limit, self.watched

    def set_window(self, request: WindowRequest) -> None:
        self._set(window=request)

    def set_results(self, active: bool | None = None, limit: int | None = None) -> None:
        self._set(**({} if active is None else {"results_active": active}),
                  **({} if limit is None else {"results_limit": limit}))

    def watch(self, run_ids: Iterable[str]) -> None:
        """Keep these runs' rows current too (marked runs, Detail's), wherever the views are."""
        self._set(watched=frozenset(run_ids))

    def _set(self, **values: Any) -> None:
        with self._lock:
            if all(getattr(self, k) == v for k, v in values.items()):
                return
            for k, v in values.items():
                setattr(self, k, v)
        if self._wake is not None:
            self._wake()


@dataclass
class Update:
    """What changed between two polls."""

    changed: dict[str, LiveRun] = field(default_factory=dict)  # held runs, new or changed
    removed: set[str] = field(default_factory=set)  # runs that left the store
    dropped: set[str] = field(default_factory=set)  # runs still in the store that no view holds now
    statuses: dict[str, str] = field(default_factory=dict)  # run id -> status shown, of new or changed runs
    counts: dict[str, int] | None = None  # runs per status shown, when it changed
    suites: list[str] | None = None  # the store's suites in first-seen order, when they changed
    window: WindowPage | None = None
    results: ResultsPage | None = None
    driver: DriverInfo | None = None
    driver_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.dropped or self.statuses or self.driver_changed
                    or self.counts is not None or self.suites is not None or self.window is not None
                    or self.results is not None)

    def merge(self, newer: "Update") -> None:
        """Fold a newer update into this one: a newer state of a run replaces the older."""
        for run_id in newer.removed:
            self.changed.pop(run_id, None)
            self.statuses.pop(run_id, None)
            self.dropped.discard(run_id)
        self.removed |= newer.removed
        for run_id in newer.dropped:
            self.changed.pop(run_id, None)
        self.dropped |= newer.dropped
        for run_id, live in newer.changed.items():
            self.dropped.discard(run_id)
            self.changed[run_id] = live
        self.removed -= newer.statuses.keys() | newer.changed.keys()
        self.statuses.update(newer.statuses)
        for name in ("counts", "suites", "window", "results"):
            if getattr(newer, name) is not None:
                setattr(self, name, getattr(newer, name))
        if newer.driver_changed:
            self.driver, self.driver_changed = newer.driver, True


class StorePoller:
    """Polls one store for changes; use from one thread at a time."""

    def __init__(self, store_dir: Path, history: int = HISTORY, requests: ViewRequests | None = None,
                 experiments_path: Path | None = None) -> None:
        self.store = Store.open(store_dir)
        self.history = history
        self.requests = requests if requests is not None else ViewRequests()
        self._experiments = ExperimentsFile(experiments_path)
        self._version: int | None = None
        self._states: dict[str, tuple[str, float | None, int]] = {}  # every run: (status, updated, step)
        self._shown: dict[str, str] = {}  # every run: its status as shown
        self._newest: float | None = None  # the newest updated time seen
        self._full_at = 0.0  # when every run's state was last read
        self._suites: list[str] = []
        self._rows: dict[str, RunRow] = {}  # the held runs' rows
        self._val: dict[str, Series] = {}  # the Runs window's curves
        self._train: dict[str, Series] = {}
        self._window_request: WindowRequest | None = None
        self._window = WindowPage(WindowRequest(), (), 0)
        self._results: ResultsPage | None = None
        self._results_state: tuple[int | None, int] | None = None  # (data version, limit) last read
        self._results_at = self._results_took = 0.0  # when Results were last read, and how long it took
        self._results_shown = False  # whether Results was shown at the last poll
        self._driver: DriverInfo | None = None
        self._driver_known = False
        self._driver_checked = 0.0

    def close(self) -> None:
        self.store.close()

    def poll(self, force: bool = False) -> Update:
        """Read what changed since the last poll (everything the views hold on the first one)."""
        update = Update()
        now = time.monotonic()
        reshow = False  # the driver died or came back: its running runs are shown differently
        if force or not self._driver_known or now - self._driver_checked >= DRIVER_CHECK_S:
            self._driver_checked = now
            driver = self.store.driver_info()
            if not self._driver_known or driver != self._driver:
                reshow = self._driver_dead != _dead(driver)
                self._driver, self._driver_known = driver, True
                update.driver, update.driver_changed = driver, True
        window, results_active, results_limit, watched = self.requests.snapshot()
        version = self.store.data_version()
        first = self._version is None
        changed: dict[str, None] = {}  # run ids whose state changed, in store order
        if force or reshow or first or version != self._version:
            self._version = version
            changed = self._read_states(update, reshow)
        if changed or update.removed or force or window != self._window_request:
            self._read_window(update, window)
        read: dict[str, RunRow] = {}
        due = self._results_at + self._results_took * (RESULTS_THROTTLE if results_active else RESULTS_THROTTLE_HIDDEN)
        asked = (results_active and not self._results_shown) or results_limit != (self._results_state or (0, 0))[1]
        self._results_shown = results_active
        if force or (self._results_state != (self._version, results_limit) and (asked or now >= due)):
            read = self._read_results(update, results_limit)
        held = dict.fromkeys(self._window.run_ids)
        if self._results is not None:
            held.update(dict.fromkeys(self._results.run_ids + self._results.claim_ids))
        held.update(dict.fromkeys(watched))
        self._read_held(update, list(held), changed, read, reshow)
        return update

    @property
    def _driver_dead(self) -> bool:
        return _dead(self._driver)

    def _shown_status(self, status: str) -> str:
        return "stopped" if status == "running" and self._driver_dead else status

    # -- every run's light state ---------------------------------------------------------------

    def _read_states(self, update: Update, reshow: bool) -> dict[str, None]:
        """Bring every run's status up to date from the runs updated since the last poll (all
        of them the first time, every `FULL_READ_S`, and when runs left the store); the ids
        whose state changed."""
        full = self._newest is None or time.monotonic() - self._full_at >= FULL_READ_S
        if full:
            self._full_at = time.monotonic()
        states = self.store.run_states(None if full else self._newest - SLACK_S)
        changed = self._take_states(states)
        gone: set[str] = set()
        if full:
            gone = set(self._states) - {s[0] for s in states}
        elif self.store.count_runs() != len(self._states):  # runs were deleted: read every state
            states = self.store.run_states()
            changed |= self._take_states(states)
            gone = set(self._states) - {s[0] for s in states}
        joined = any(run_id not in self._shown for run_id in changed)
        for run_id in gone:
            del self._states[run_id]
            self._shown.pop(run_id, None)
            self._forget(run_id)
            update.removed.add(run_id)
        for run_id in (self._states if reshow else changed):
            shown = self._shown_status(self._states[run_id][0])
            if self._shown.get(run_id) != shown:
                self._shown[run_id] = update.statuses[run_id] = shown
        if update.statuses or gone:
            update.counts = dict(Counter(self._shown.values()))
        if joined or gone:
            suites = self.store.suites()
            if suites != self._suites:
                self._suites = update.suites = suites
        return changed

    def _take_states(self, states: list[tuple[str, str, float | None, int]]) -> dict[str, None]:
        changed: dict[str, None] = {}
        for run_id, status, updated, step in states:
            state = (status, updated, step)
            if self._states.get(run_id) != state:
                self._states[run_id] = state
                changed[run_id] = None
            if updated is not None and (self._newest is None or updated > self._newest):
                self._newest = updated
        if self._newest is None:
            self._newest = 0.0
        return changed

    # -- what the views show ----------------------------------------------------------------------

    def _read_window(self, update: Update, request: WindowRequest) -> None:
        """The Runs table's page: counted, filtered and cut in SQL, kept inside the matches."""
        self._window_request = request
        total = self.store.count_runs(request.text)
        offset = max(0, min(request.offset, total - request.limit))
        ids = tuple(self.store.page_ids(request.text, offset, request.limit)) if total else ()
        page = WindowPage(replace(request, offset=offset), ids, total)
        if page != self._window:
            self._window = update.window = page

    def _read_results(self, update: Update, limit: int) -> dict[str, RunRow]:
        """The rows Results ranks, as `dropres-lab results` reads them: the best `limit` of each
        suite in SQL; every run of a suite with replicates (merged before they are ranked) and of
        the suites the claims need. Returns the rows read, by id."""
        started = time.monotonic()
        replicated = self.store.replicated_suites()
        best, totals = self.store.best_runs(None, limit)
        by_suite: dict[str, list[RunRow]] = {s: [] for s in self._suites}
        for row in best:
            if row.suite not in replicated:
                by_suite.setdefault(row.suite, []).append(row)
        for suite in replicated:
            by_suite[suite] = self.store.runs(suite)
            totals[suite] = len(by_suite[suite])
        read = {r.run_id: r for rows in by_suite.values() for r in rows}
        claim_ids = []
        for suite in self._experiments.claim_suites([s for s, rows in by_suite.items() if rows]):
            rows = by_suite[suite] if suite in replicated else self.store.runs(suite)
            read.update((r.run_id, r) for r in rows)
            claim_ids += [r.run_id for r in rows]
        page = ResultsPage(limit, tuple(r.run_id for rows in by_suite.values() for r in rows), totals,
                           tuple(claim_ids))
        if page != self._results:
            self._results = update.results = page
        self._results_state = (self._version, limit)
        self._results_at = time.monotonic()
        self._results_took = self._results_at - started
        return read

    def _read_held(self, update: Update, held: list[str], changed: dict[str, None], read: dict[str, RunRow],
                   reshow: bool) -> None:
        """Keep the held runs' rows current (reading only those new to the views or changed)
        and drop the rest; curves only for the Runs window's runs."""
        wanted = set(held)
        for run_id in [i for i in self._rows if i not in wanted]:
            self._forget(run_id)
            update.dropped.add(run_id)
        window = set(self._window.run_ids)
        for run_id in [i for i in self._val if i not in window]:
            self._val.pop(run_id, None)
            self._train.pop(run_id, None)
        stale = [i for i in held if i not in read and i in self._states and (i not in self._rows or i in changed)]
        fresh = {**read, **(self.store.get_many(stale) if stale else {})}
        for run_id in held:
            old = self._rows.get(run_id)
            row = fresh.get(run_id, old)
            if row is None:
                continue
            curves = run_id in window and run_id not in self._val
            if old == row and not curves and not (reshow and row.status == "running"):
                continue
            self._rows[run_id] = row
            restarted = old is not None and (row.step < old.step or row.config_hash != old.config_hash)
            if run_id in window:
                if curves or restarted:
                    self._val[run_id] = Series(self.history)
                    self._train[run_id] = Series(self.history)
                self._fetch(run_id)
            shown = as_interrupted(row) if self._driver_dead else row
            val, train = self._val.get(run_id), self._train.get(run_id)
            update.changed[run_id] = LiveRun(shown, val.snapshot() if val else (), train.snapshot() if train else ())

    def _forget(self, run_id: str) -> None:
        self._rows.pop(run_id, None)
        self._val.pop(run_id, None)
        self._train.pop(run_id, None)

    def _fetch(self, run_id: str) -> None:
        for split, series in (("val", self._val[run_id]), ("train", self._train[run_id])):
            since = series.last_step if series.last_step >= 0 else None
            for step, _, loss, _ in self.store.metrics(run_id, split, since_step=since):
                series.add(step, loss)


def _dead(driver: DriverInfo | None) -> bool:
    """A driver that recorded itself and no longer holds the lock: killed, or crashed."""
    return driver is not None and not driver.alive


class Pending:
    """Coalesces updates between the polling thread and the UI (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._update = Update()
        self._posted = False

    def offer(self, update: Update) -> bool:
        """Merge an update; True when the caller should post a message (none outstanding)."""
        with self._lock:
            self._update.merge(update)
            if self._posted or not self._update:
                return False
            self._posted = True
            return True

    def take(self) -> Update:
        """Everything pending, at once; the next `offer` posts a new message."""
        with self._lock:
            update, self._update = self._update, Update()
            self._posted = False
            return update


class StoreUpdated(Message):
    """Posted by the polling worker when the store changed; the handler calls `Pending.take`."""
