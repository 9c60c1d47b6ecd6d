"""Reading the store for the interactive lab: what changed since the last look.

The TUI is a client of the store (DESIGN.md section 3): it never talks to workers; it polls
the store a few times a second, in a worker thread. `StorePoller` does one poll at a time on
its own SQLite connection (so a read never waits behind the app's writes, which its workers
make on another connection) and returns only what changed:

* `Store.data_version()` first: when no other connection has committed since the last poll,
  nothing else is read;
* otherwise every run row is read and compared with the previous one; only rows that differ
  are reported, and only for those are new evaluation metrics fetched (`since_step`), so a
  poll costs one small query per changed run, not a reread of every curve;
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
from dataclasses import dataclass, field
from pathlib import Path

from textual.message import Message

from lab.store import DriverInfo, RunRow, Store, as_interrupted

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


@dataclass
class Update:
    """What changed between two polls."""

    changed: dict[str, LiveRun] = field(default_factory=dict)  # in store order
    removed: set[str] = field(default_factory=set)
    driver: DriverInfo | None = None
    driver_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.driver_changed)

    def merge(self, newer: "Update") -> None:
        """Fold a newer update into this one: a newer state of a run replaces the older."""
        for run_id in newer.removed:
            self.changed.pop(run_id, None)
        self.removed |= newer.removed
        for run_id, live in newer.changed.items():
            self.removed.discard(run_id)
            self.changed[run_id] = live
        if newer.driver_changed:
            self.driver, self.driver_changed = newer.driver, True


class StorePoller:
    """Polls one store for changes; use from one thread at a time."""

    def __init__(self, store_dir: Path, history: int = HISTORY) -> None:
        self.store = Store.open(store_dir)
        self.history = history
        self._version: int | None = None
        self._rows: dict[str, RunRow] = {}
        self._val: dict[str, Series] = {}
        self._train: dict[str, Series] = {}
        self._driver: DriverInfo | None = None
        self._driver_known = False
        self._driver_checked = 0.0

    def close(self) -> None:
        self.store.close()

    def poll(self, force: bool = False) -> Update:
        """Read what changed since the last poll (everything on the first one)."""
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
        version = self.store.data_version()
        if force or reshow or version != self._version or self._version is None:
            self._version = version
            self._read_runs(update, reshow)
        return update

    @property
    def _driver_dead(self) -> bool:
        return _dead(self._driver)

    def _read_runs(self, update: Update, reshow: bool = False) -> None:
        rows = self.store.runs()
        seen = set()
        for row in rows:
            seen.add(row.run_id)
            old = self._rows.get(row.run_id)
            if old == row and not (reshow and row.status == "running"):
                continue
            self._rows[row.run_id] = row
            restarted = old is not None and (row.step < old.step or row.config_hash != old.config_hash)
            if old is None or restarted:
                self._val[row.run_id] = Series(self.history)
                self._train[row.run_id] = Series(self.history)
            self._fetch(row.run_id)
            shown = as_interrupted(row) if self._driver_dead else row
            update.changed[row.run_id] = LiveRun(shown, self._val[row.run_id].snapshot(),
                                                 self._train[row.run_id].snapshot())
        for run_id in set(self._rows) - seen:
            del self._rows[run_id]
            self._val.pop(run_id, None)
            self._train.pop(run_id, None)
            update.removed.add(run_id)

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
