"""Taking a store's driver lock, and what `run --headless` does when another driver holds it.

The lab's background driver lingers (`DriverSettings.linger_s`) after its queue empties, in
case new work comes. A headless run started in another terminal meanwhile must not be refused
for that: it asks the idle driver to exit (an "exit" request, which a driver honours only while
it has nothing to train) and waits a few seconds for the lock. A driver with work keeps it, and
the refusal says which driver it is (kind, pid) and what it trains, so the user knows what to
wait for or stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..store import DriverInfo, DriverLock, RunRow, Store, StoreError

#: How long a headless run waits for an idle background driver to exit (it reads requests
#: every quarter second, then ends its idle workers and releases the lock).
EXIT_WAIT_S = 15.0
#: Runs named in a refusal before "and N more".
SHOWN_RUNS = 3


@dataclass(frozen=True)
class Holder:
    """The driver that holds a store, as its record and the run statuses show it."""

    info: DriverInfo
    running: list[RunRow]
    queued: list[RunRow]

    @property
    def idle(self) -> bool:
        """A background driver lingering with nothing to train: it may be asked to exit."""
        return self.info.kind == "background" and not self.running and not self.queued


def take_lock(store_dir: Path, kind: str, say: Callable[[str], None] | None = None) -> DriverLock:
    """The store's driver lock, for a driver of `kind` ("headless" or "background").

    A headless driver finding an idle background driver asks it to exit and waits up to
    `EXIT_WAIT_S` for the lock (`say` hears that it does). Otherwise a held lock raises
    StoreError: one line naming the holder's kind, pid and the runs it trains.
    """
    lock = DriverLock(store_dir)
    try:
        return lock.acquire()
    except StoreError as refused:
        holder = read_holder(store_dir)
        if holder is None:  # no live driver's record (a leftover worker, a driver starting): the lock's own words
            raise refused from None
    if kind == "headless" and holder.idle:
        with Store.open(store_dir) as store:
            store.request(None, "exit")
        if say is not None:
            say(f"asked the lab's idle background driver (pid {holder.info.pid}) to exit; waiting for it")
        try:
            return lock.acquire(wait_s=EXIT_WAIT_S)
        except StoreError as refused:
            holder = read_holder(store_dir)  # it may have taken new work meanwhile
            if holder is None:
                raise refused from None
            if holder.idle:
                raise StoreError(f"store {store_dir} is held by the lab's background driver (pid {holder.info.pid}), "
                                 f"which did not exit within {EXIT_WAIT_S:g} s of being asked; "
                                 "try again, or use --store DIR") from None
    raise StoreError(busy_message(store_dir, holder)) from None


def read_holder(store_dir: Path) -> Holder | None:
    """The live driver holding the store and its runs, or None if no live driver's record says so."""
    try:
        with Store.open(store_dir) as store:
            info = store.driver_info()
            if info is None or not info.alive:
                return None
            runs = store.runs()
    except StoreError:
        return None
    return Holder(info, [r for r in runs if r.status == "running"], [r for r in runs if r.status == "queued"])


def busy_message(store_dir: Path, holder: Holder) -> str:
    """One line: who holds the store, what it trains, and what the user can do."""
    who, advice = {
        "background": ("the lab's background driver", "wait for it, or stop it in the lab (Stop all runs)"),
        "headless": ("a headless run", "wait for it, or stop it (Ctrl-C in its terminal)"),
    }.get(holder.info.kind or "", ("another driver", "wait for it, or stop it"))
    stopping = ", stopping" if holder.info.kind == "background" and not holder.info.accepting else ""
    work = f"training {run_list(holder.running)}" if holder.running else "training nothing yet"
    if holder.queued:
        work += f" with {len(holder.queued)} queued"
    return f"store {store_dir} is in use by {who} (pid {holder.info.pid}{stopping}), {work}; {advice}, or use --store DIR"


def run_list(rows: list[RunRow], shown: int = SHOWN_RUNS) -> str:
    """ "suite/run, suite/run, suite/run and 2 more" """
    names = [f"{r.suite}/{r.name}" for r in rows]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
