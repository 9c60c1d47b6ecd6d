"""The detached background driver the TUI starts (`dropres-lab driver`, hidden).

It trains every queued run in the store, takes new work while it runs, and exits a while
after the queue empties. It lives in its own session so closing the TUI or its terminal
leaves it training; SIGTERM or a stop request written to the store stops it gracefully, and
an exit request (from `run --headless`) ends it while it lingers with nothing to train.
What it shares with `run --headless` (lock, store, workers, tear-down) is `DriverSession`;
what is its own is here: it ignores hang-ups, logs instead of drawing, and lingers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ..core import events as ev
from ..formatting import counted
from .scheduler import check_device, cuda_device_count
from .settings import DriverSettings
from .startup import DriverSession, StopSignals

#: SIGTERM (`kill`, a system shutdown) and Ctrl-C both stop it gracefully, however often they come.
GRACEFUL = StopSignals((signal.SIGTERM, signal.SIGINT))


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def serve(store_dir: Path, settings: DriverSettings) -> int:
    """Run the background driver until the queue has been empty for `linger_s`. Exit code."""
    cuda = cuda_device_count()
    problem = settings.problem() or (None if settings.executor == "ray" else check_device(settings.device, cuda))
    if problem:
        log(f"error: {problem}")
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a terminal closing elsewhere must not end the training
    with DriverSession(store_dir, settings, cuda, kind="background") as session:  # StoreError (exit 2) if another driver holds it
        if session.interrupted:
            n = len(session.interrupted)
            log(f"{counted(n, 'run')} left running by a previous driver {'is' if n == 1 else 'are'} now stopped (resumable)")
        queued = session.store.queued_runs()
        plan = session.plan(queued)
        executor = session.start_workers(plan, session.store.group_leaders(queued))
        log(f"background driver pid {os.getpid()}: {executor.describe()}, groups of up to {plan.group_size}")
        driver = session.drive(plan, GRACEFUL, executor, on_event=_log_event)
        log("asked to make way for another driver while idle: background driver exiting" if driver.exit_requested
            else "queue empty: background driver exiting")
    return 0


def _log_event(event: object) -> None:
    if isinstance(event, (ev.Started, ev.Finished, ev.Diverged, ev.Failed, ev.Stopped, ev.Warned)):
        log(f"{type(event).__name__.lower()} {event}")
