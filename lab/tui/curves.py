"""Detail's data: the whole loss curves and the log of the runs on screen, read off the UI thread.

The poller keeps only short histories of every run (for sparklines); Detail draws every point
of a few runs. `CurveReader` keeps those curves and extends them incrementally (`since_step`),
so a live run costs one small query per split and redraw. It runs in a worker thread and opens
its own connection for each read: never the app's, whose writes may wait for the store for
up to `BUSY_TIMEOUT_S`, and a WAL reader never waits for a writer. Each read returns an
immutable `DetailData` that the screen draws on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lab.store import RunRow, Store

#: The splits Detail draws for one run: the per-batch loss and both evaluation estimates.
SPLITS = ("train_step", "train", "val")

LogEntry = tuple[float, "int | None", str]  # (unix time, step, message), as `Store.log` gives


@dataclass(frozen=True)
class Curve:
    """A run's losses of one split, every point read so far."""

    steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class DetailData:
    """What one read found: the runs it was for (as they were), their curves and one run's log."""

    rows: tuple[RunRow, ...]
    curves: dict[tuple[str, str], Curve]  # (run id, split) -> curve
    log: tuple[LogEntry, ...] | None  # the run's log when one run is shown, else None

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(row.run_id for row in self.rows)

    def curve(self, run_id: str, split: str) -> Curve:
        return self.curves.get((run_id, split), Curve())


class _Points:
    """A curve being extended: appended to by the reader only."""

    __slots__ = ("steps", "values")

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else -1


class CurveReader:
    """Reads Detail's curves for one store; use from one thread at a time."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self._points: dict[tuple[str, str], _Points] = {}

    def read(self, rows: Sequence[RunRow]) -> DetailData:
        """Curves of `rows` (every split for one run, val for several) and one run's log.

        Curves of runs no longer asked for are forgotten; a run whose step went back (restarted,
        or resumed from an earlier checkpoint) is read again from its start.
        """
        splits = SPLITS if len(rows) == 1 else ("val",)
        wanted = {(row.run_id, split) for row in rows for split in splits}
        for key in set(self._points) - wanted:
            del self._points[key]
        with Store.open(self.store_dir) as store:
            for row in rows:
                for split in splits:
                    points = self._points.get((row.run_id, split))
                    if points is None or row.step < points.last_step:
                        points = self._points[(row.run_id, split)] = _Points()
                    since = points.last_step if points.last_step >= 0 else None
                    for step, _, loss, _ in store.metrics(row.run_id, split, since_step=since):
                        points.steps.append(step)
                        points.values.append(loss)
            log = tuple(store.log(rows[0].run_id)) if len(rows) == 1 else None
        curves = {key: Curve(tuple(p.steps), tuple(p.values)) for key, p in self._points.items()}
        return DetailData(tuple(rows), curves, log)
