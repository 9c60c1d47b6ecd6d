"""The detached background driver the TUI starts (`dropres-lab driver`, hidden).

It trains every queued run in the store, takes new work while it runs, and exits a while
after the queue empties. It lives in its own session so closing the TUI or its terminal
leaves it training; SIGTERM or a stop request written to the store stops it gracefully.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from ..core.config import TrainOptions
from ..formatting import counted
from ..launch import DriverSettings
from ..store import DriverLock, Store
from .driver import Driver
from .local import LocalExecutor
from .scheduler import check_device, cuda_device_count, plan_execution


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def serve(store_dir: Path, settings: DriverSettings) -> int:
    """Run the background driver until the queue has been empty for `linger_s`. Exit code."""
    cuda = cuda_device_count()
    problem = check_device(settings.device, cuda)
    if problem:
        log(f"error: {problem}")
        return 2
    lock = DriverLock(store_dir)
    lock.acquire()  # StoreError (exit 2) if another driver holds it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with Store.open(store_dir) as store:
            interrupted = store.mark_interrupted()
            if interrupted:
                log(f"{counted(len(interrupted), 'run')} left running by a previous driver "
                    f"{'is' if len(interrupted) == 1 else 'are'} now stopped (resumable)")
            cap, n_groups, specs = plan_execution(settings.device, settings.workers, settings.group_size,
                                                  store.queued(), cuda)
            log(f"background driver pid {__import__('os').getpid()}: {counted(len(specs), 'worker')} on {specs[0].device}, "
                f"{counted(specs[0].threads, 'thread')} each, groups of up to {cap}")
            driver = Driver(store, LocalExecutor(specs), group_size=cap, options=TrainOptions(),
                            linger_s=settings.linger_s, on_event=_log_event)
            signal.signal(signal.SIGTERM, lambda *_: driver.request_stop())
            signal.signal(signal.SIGINT, lambda *_: driver.request_stop())
            driver.run()
            log("queue empty: background driver exiting")
    finally:
        lock.release()
    return 0


def _log_event(event: object) -> None:
    from ..core import events as ev

    if isinstance(event, (ev.Started, ev.Finished, ev.Diverged, ev.Failed, ev.Stopped, ev.Warned)):
        log(f"{type(event).__name__.lower()} {event}")
