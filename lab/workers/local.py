"""Local worker processes: the default executor.

Each worker is a long-lived process that trains one group at a time with the shared core and
sends every event back over a queue; it never touches the store or the UI. Workers die with
the driver (parent-death signal plus a watchdog), ignore the terminal's Ctrl-C (the driver
decides how to stop them), and stop gracefully when their stop flag is set.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import RunConfig
from .executor import Executor, GroupDone, GroupTask, WorkerDied
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


def worker_main(slot: int, spec: WorkerSpec, parent_pid: int, tasks, events, stop_flag, threads) -> None:
    """Body of a worker process: train each group it is handed until told to quit (None).

    `threads` is shared with the executor, which raises it while other workers sit idle (see
    LocalExecutor._lend_threads); the training loop's stop check, made every step, applies it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    import torch

    from ..core.checkpoint import FileCheckpointSink
    from ..core.train import train_group

    current = [spec.threads]
    torch.set_num_threads(spec.threads)

    def should_stop() -> bool:
        wanted = threads.value
        if wanted != current[0] and wanted > 0:
            torch.set_num_threads(wanted)
            current[0] = wanted
        return stop_flag.is_set()

    while True:
        task: GroupTask | None = tasks.get()
        if task is None:
            return
        def emit(event, task_id=task.task_id) -> None:
            events.put((slot, task_id, event))

        train_group(
            [RunConfig.from_dict(c) for c in task.configs],
            task.run_ids,
            emit,
            task.options,
            FileCheckpointSink({rid: Path(d) for rid, d in zip(task.run_ids, task.checkpoint_dirs)}),
            should_stop=should_stop,
        )
        events.put((slot, task.task_id, GroupDone(task.task_id)))


@dataclass
class _Worker:
    spec: WorkerSpec
    process: mp.Process
    tasks: object
    events: object  # this worker's own event queue (see LocalExecutor._spawn)
    stop_flag: object
    threads: object  # shared int: torch threads this worker should use now
    task: GroupTask | None = None
    reported_dead: bool = False


@dataclass
class LocalExecutor(Executor):
    """Worker processes on this machine, one per WorkerSpec."""

    specs: list[WorkerSpec]
    workers: list[_Worker] = field(default_factory=list)

    def start(self) -> None:
        self.workers = [self._spawn(i, spec) for i, spec in enumerate(self.specs)]

    def _spawn(self, slot: int, spec: WorkerSpec) -> _Worker:
        tasks = _CTX.SimpleQueue()
        # One event queue per worker: a multiprocessing Queue's writers share a lock, and a
        # worker SIGKILLed while its feeder thread held it would silence every other worker.
        events = _CTX.Queue()
        stop_flag = _CTX.Event()
        threads = _CTX.RawValue("i", spec.threads)
        proc = _CTX.Process(target=worker_main, args=(slot, spec, os.getpid(), tasks, events, stop_flag, threads),
                            name=f"dropres-worker-{slot}", daemon=True)
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

    def device_of(self, slot: int) -> str:
        return self.workers[slot].spec.device

    def submit(self, slot: int, task: GroupTask) -> None:
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
            if isinstance(event, GroupDone):
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
