"""Local worker processes: the default executor.

Each worker is a long-lived process that performs one task at a time (trains a group, or
times one for the benchmark) and sends every event back over its own queue; it never touches
the store or the UI. Workers die with the process that started them (parent-death signal plus
a watchdog), ignore the terminal's Ctrl-C (the driver decides how to stop them), and stop
gracefully when their stop flag is set.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from .executor import Executor, Task, TaskDone, WorkerDied, WorkerReady
from .scheduler import WorkerSpec

_CTX = mp.get_context("spawn")  # CUDA-safe, and no inherited locks or threads from the driver


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the driver exits, even if it is SIGKILLed (no orphan trainers)."""
    try:  # Linux: the kernel sends SIGKILL when the parent dies
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not Linux
        pass

    def watchdog() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watchdog, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def worker_main(slot: int, spec: WorkerSpec, parent_pid: int, tasks, events, stop_flag, threads,
                quiet: bool = False) -> None:
    """Body of a worker process: perform each task it is handed until told to quit (None).

    `threads` is shared with the executor, which raises it while other workers sit idle (see
    LocalExecutor._lend_threads); a task starts with the value of the moment, and the stop
    check (every training step) applies changes. `quiet`: write nothing to the inherited
    terminal (the process that started it draws on it: the TUI).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if quiet:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    _die_with_parent(parent_pid)
    import torch

    from ..core import train  # noqa: F401  loaded before the first task, so a task's time is its own

    current = [spec.threads]
    torch.set_num_threads(spec.threads)

    def adopt_threads() -> None:
        wanted = threads.value
        if wanted != current[0] and wanted > 0:
            torch.set_num_threads(wanted)
            current[0] = wanted

    def should_stop() -> bool:
        adopt_threads()
        return stop_flag.is_set()

    events.put((slot, "", WorkerReady()))
    while True:
        task: Task | None = tasks.get()
        if task is None:
            # Every event is flushed to the driver, then the process ends without the
            # interpreter's tear-down of torch (seconds on a busy machine, at the end of every
            # launch); every checkpoint was durable before its run's last event.
            events.close()
            events.join_thread()
            os._exit(0)

        def emit(event, task_id=task.task_id) -> None:
            events.put((slot, task_id, event))

        adopt_threads()
        task.perform(emit, should_stop)
        events.put((slot, task.task_id, TaskDone(task.task_id)))


def _stdio_captured() -> bool:
    """Whether sys.stderr is not a real file (the TUI captures it): then worker processes
    must not write to the terminal the TUI draws on."""
    try:
        return sys.stderr is None or sys.stderr.fileno() < 0
    except (AttributeError, OSError, ValueError):
        return True


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with /dev/null as its stderr. It passes
    sys.stderr's descriptor to the tracker, and a captured stderr (fileno -1) would make
    every spawn fail ("bad value(s) in fds_to_keep")."""
    from multiprocessing import resource_tracker

    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved


@dataclass
class _Worker:
    spec: WorkerSpec
    process: mp.Process
    tasks: object
    events: object  # this worker's own event queue (see LocalExecutor._spawn)
    stop_flag: object
    threads: object  # shared int: torch threads this worker should use now
    task: Task | None = None
    reported_dead: bool = False


@dataclass
class LocalExecutor(Executor):
    """Worker processes on this machine, one per WorkerSpec."""

    specs: list[WorkerSpec]
    workers: list[_Worker] = field(default_factory=list)
    quiet: bool = False  # set by start(): this process's stdio is captured (the TUI's)

    def start(self) -> None:
        if self.workers:  # started already (a front-end starts it to describe it before driving)
            return
        self.quiet = _stdio_captured()
        if self.quiet:
            _start_resource_tracker()
        self.workers = []
        for i, spec in enumerate(self.specs):  # one at a time: a failed spawn leaves the others to end
            self.workers.append(self._spawn(i, spec))

    def _spawn(self, slot: int, spec: WorkerSpec) -> _Worker:
        tasks = _CTX.SimpleQueue()
        # One event queue per worker: a multiprocessing Queue's writers share a lock, and a
        # worker SIGKILLed while its feeder thread held it would silence every other worker.
        events = _CTX.Queue()
        stop_flag = _CTX.Event()
        threads = _CTX.RawValue("i", spec.threads)
        proc = _CTX.Process(target=worker_main, name=f"dropres-worker-{slot}", daemon=True,
                            args=(slot, spec, os.getpid(), tasks, events, stop_flag, threads, self.quiet))
        proc.start()
        return _Worker(spec, proc, tasks, events, stop_flag, threads)

    def _lend_threads(self) -> None:
        """Give idle CPU workers' threads to the busy ones, and take them back on new work.

        A sweep's last groups rarely end together (5 runs on 2 workers split 3 + 2), and
        without this a core idles through the tail. Lent threads return as soon as the idle
        worker is handed a group: the driver submits right after it polls.
        """
        cpu = [w for w in self.workers if w.spec.device == "cpu"]
        busy = [w for w in cpu if w.task is not None and w.process.is_alive()]
        total = sum(w.spec.threads for w in cpu)
        for i, w in enumerate(busy):
            w.threads.value = total // len(busy) + (1 if i < total % len(busy) else 0)
        for w in cpu:
            if w not in busy:
                w.threads.value = w.spec.threads

    def idle_slots(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w.task is None and w.process.is_alive()]

    def describe(self) -> str:
        from ..formatting import counted

        first = self.specs[0]
        return (f"local: {counted(len(self.specs), 'worker')} ({first.device}, "
                f"{counted(first.threads, 'thread')} each)")

    def device_of(self, slot: int) -> str:
        return self.workers[slot].spec.device

    def submit(self, slot: int, task: Task) -> None:
        worker = self.workers[slot]
        worker.stop_flag.clear()
        worker.task = task
        worker.tasks.put(task)
        self._lend_threads()

    def poll(self, timeout: float) -> list[tuple[int, str, object]]:
        """Events that arrived within `timeout` seconds, plus WorkerDied for lost workers."""
        out: list[tuple[int, str, object]] = []
        try:  # wait until any worker's queue has something (each message is one atomic pipe write)
            mp_connection.wait([w.events._reader for w in self.workers], timeout)  # type: ignore[attr-defined]
        except OSError:
            pass
        for w in self.workers:  # a dead worker is replaced by _dead_workers, so all are current
            while len(out) < 2000:
                try:
                    out.append(w.events.get_nowait())
                except (queue.Empty, EOFError, OSError):
                    break
        for slot, _, event in out:
            if isinstance(event, TaskDone):
                self.workers[slot].task = None
        out.extend(self._dead_workers())
        self._lend_threads()
        return out

    def _dead_workers(self) -> list[tuple[int, str, object]]:
        dead = []
        for slot, w in enumerate(self.workers):
            if w.process.is_alive() or w.reported_dead:
                continue
            w.reported_dead = True
            code = w.process.exitcode
            reason = (f"worker killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
                      else f"worker exited with code {code}")
            task, w.task = w.task, None
            dead.append((slot, task.task_id if task else "", WorkerDied(slot, task, reason)))
            # Replace it so the remaining work still has somewhere to run.
            self.workers[slot] = self._spawn(slot, w.spec)
        return dead

    def busy(self) -> bool:
        return any(w.task is not None for w in self.workers)

    def stop(self, slot: int | None = None) -> None:
        targets = self.workers if slot is None else [self.workers[slot]]
        for w in targets:
            w.stop_flag.set()

    def kill(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                w.process.kill()
        for w in self.workers:
            w.process.join(timeout=5)

    def shutdown(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                w.tasks.put(None)
        deadline = time.monotonic() + 10
        for w in self.workers:
            w.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
        for w in self.workers:
            w.events.close()
            w.events.join_thread()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process.pid]
