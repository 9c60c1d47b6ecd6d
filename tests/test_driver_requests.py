"""How the driver answers an "exit" request, and how it ends on an error, on a store and an
executor with no workers.

A lingering background driver asked to exit (by `run --headless`, which wants the store) leaves
at once; work queued just after it accepted stays queued for the next driver instead of
keeping it alive; a driver that has work ignores the request. (End to end, with real
processes: tests/test_headless.py.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from lab.core.config import TrainOptions
from lab.core.events import Started
from lab.store import INTERRUPTED_NOTE, Store
from lab.workers.driver import Driver
from lab.workers.executor import Executor

from conftest import tiny_config


class NoWorkers(Executor):
    """An executor whose one slot never takes a task: the driver lingers or waits beside it."""

    def __init__(self, busy: bool = False) -> None:
        self._busy = busy

    def start(self) -> None: ...
    def idle_slots(self) -> list[int]: return []
    def device_of(self, slot: int) -> str: return "cpu"
    def submit(self, slot: int, task) -> None: raise AssertionError("nothing is dispatched here")
    def poll(self, timeout: float) -> list:
        time.sleep(min(timeout, 0.05))
        return []
    def busy(self) -> bool: return self._busy
    def stop(self, slot: int | None = None) -> None: ...
    def kill(self) -> None: ...
    def shutdown(self) -> None: ...


def drive_in_thread(driver: Driver) -> threading.Thread:
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_idle_lingering_driver_exits_when_asked_and_leaves_later_work_queued(tmp_path: Path, corpus_file) -> None:
    with Store.open(tmp_path / "runs") as store:
        driver = Driver(store, NoWorkers(), group_size=4, options=TrainOptions(), kind="background", linger_s=600)
        thread = drive_in_thread(driver)
        wait_for(lambda: store.driver_info() is not None)
        store.request(None, "exit")
        wait_for(lambda: driver.exit_requested)
        late = store.enqueue("s", "late", "late", tiny_config(corpus_file), None).run_id  # a launch just after
        thread.join(timeout=5)
        assert not thread.is_alive()  # gone long before its 600 s linger
        assert store.get(late).status == "queued" and store.pending_requests() == []
        assert store.driver_info() is None  # a clean exit removes its record


def test_a_busy_driver_ignores_an_exit_request(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs") as store:
        executor = NoWorkers(busy=True)
        driver = Driver(store, executor, group_size=4, options=TrainOptions(), kind="background", linger_s=0)
        thread = drive_in_thread(driver)
        wait_for(lambda: store.driver_info() is not None)
        store.request(None, "exit")
        wait_for(lambda: store.pending_requests() == [])  # read, and not acted on
        time.sleep(0.3)
        assert thread.is_alive() and not driver.exit_requested and store.driver_info().accepting
        executor._busy = False  # its work done, it ends as it would have anyway
        thread.join(timeout=5)
        assert not thread.is_alive()


class DyingWorkers(NoWorkers):
    """An executor whose events cannot be read: the driver ends with an error mid-run."""

    def poll(self, timeout: float) -> list:
        raise BrokenPipeError("the terminal went away")


def test_a_driver_ended_by_an_error_leaves_its_runs_interrupted_not_running(tmp_path: Path, corpus_file) -> None:
    with Store.open(tmp_path / "runs") as store:
        rid = store.enqueue("s", "a", "a", tiny_config(corpus_file), None).run_id
        store.apply(Started(rid, 0, 20, 1000, "cpu", "float32", 1))  # in flight when the driver dies
        driver = Driver(store, DyingWorkers(busy=True), group_size=4, options=TrainOptions(), kind="headless")
        try:
            driver.run()
        except BrokenPipeError:
            pass
        else:
            raise AssertionError("the error reaches the caller")
        run = store.get(rid)
        assert run.status == "stopped" and run.error == INTERRUPTED_NOTE  # resumable, and the lab shows why
        assert store.driver_info() is None
