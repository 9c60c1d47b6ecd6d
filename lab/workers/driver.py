"""The driver: the one process per store that turns queued runs into trained results.

It holds the store's lock (taken by the caller), groups queued runs with the scheduler,
hands groups to an executor's workers, writes every event the workers send into the store,
and acts on stop and cancel requests written to the store by other processes (the TUI), and
on an "exit" request while it lingers idle (a `run --headless` asking it to make way).
Training never happens here. Both `run --headless` (in the foreground) and the TUI's
detached background driver are this class.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Iterable

from ..core import events as ev
from ..core.config import RunConfig, TrainOptions
from ..core.precision import DtypeChoice, choice_before_workers
from ..store import QueuedRun, RunRow, Store
from .executor import Executor, GroupTask, TaskDone, WorkerDied, WorkerReady
from .scheduler import plan_groups, spread_groups

#: How often the driver flushes events into the store and looks for requests (seconds).
POLL_S = 0.25
#: How often the driver asks its executor what it trains on, and records it if it changed
#: (a cluster's nodes come and go) for the lab's status line (seconds).
DESCRIBE_EVERY_S = 5.0


class Driver:
    """Dispatch queued runs to workers and record what comes back.

    `scope`: the run ids this driver is responsible for (a headless invocation), or None for
    every queued run in the store (the TUI's background driver). `linger_s`: how long to wait
    for new queued work once everything is done before returning (0 for headless). `kind`:
    what the driver records itself as ("headless" or "background", `DRIVER_KINDS`).
    """

    def __init__(self, store: Store, executor: Executor, *, group_size: int, options: TrainOptions,
                 kind: str, scope: Iterable[str] | None = None, linger_s: float = 0.0,
                 on_event: Callable[[object], None] | None = None, devices: Iterable[str] = (),
                 dtype_choices: dict[tuple[str, str], DtypeChoice] | None = None):
        self.store = store
        self.executor = executor
        self.group_size = group_size
        self.options = options
        self.kind = kind
        self.scope = set(scope) if scope is not None else None
        self.linger_s = linger_s
        self.on_event = on_event or (lambda e: None)
        self.tasks: dict[str, GroupTask] = {}
        self.slot_of_task: dict[str, int] = {}
        self.dispatched: set[str] = set()
        self.ended: set[str] = set()
        self.stopping = False
        self.requeue_when_stopped: set[str] = set()  # group-mates of a run stopped on request
        self.retry: list[str] = []  # runs of a group that ran out of memory, to requeue
        self.nodes_lost: dict[str, int] = {}  # run id -> times its worker died under it (cluster executors)
        self._ids = itertools.count()
        self._idle_since: float | None = None
        self.exit_requested = False  # an "exit" request found it idle: it leaves without lingering
        self.devices = list(devices)  # the workers' devices, known before they start
        # (shape, device) -> dtype "auto" there; given when decided before the executor started
        self.dtype_choices: dict[tuple[str, str], DtypeChoice] = dict(dtype_choices or {})
        self._described = ""  # what the store says the executor trains on
        self._described_at = 0.0

    # -- control -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful stop: workers checkpoint and stop; queued runs stay resumable."""
        if not self.stopping:
            self.stopping = True
            self.executor.stop()
            self.store.set_driver_info(_pid(), accepting=False, kind=self.kind)
            waiting = [rid for rid in self.store.queued_ids()
                       if rid not in self.dispatched and (self.scope is None or rid in self.scope)]
            self.store.stop_runs(waiting, "stopped before it started")

    def kill(self) -> None:
        """Immediate stop: workers are killed; their runs resume from their last checkpoint."""
        self.executor.kill()
        running = [rid for t in self.tasks.values() for rid in t.run_ids if rid not in self.ended]
        self.store.stop_runs(running, "stopped immediately (second Ctrl-C); resumable from its last checkpoint")
        self.stopping = True

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        self.store.clear_requests()
        # A driver with a fixed scope (headless) trains only its own runs: it takes no new work.
        self.store.set_driver_info(_pid(), accepting=self.scope is None, kind=self.kind)
        # Started (after dtype "auto" was decided for the queue) by `DriverSession.start_workers`;
        # a driver built around a fresh executor (tests, benchmarks) starts it here.
        self.executor.start()
        try:
            while True:
                self._record_executor()
                self._handle_requests()
                if not (self.stopping or self.exit_requested):
                    self._dispatch()
                self._absorb(self.executor.poll(POLL_S))
                if self._finished():
                    break
        finally:
            try:
                self.executor.shutdown()
            finally:
                # Ended by an error (a view that cannot print, a store fault): what it was training
                # is interrupted, and the store says so now rather than when the next driver starts.
                self.store.mark_interrupted()
                self.store.clear_driver_info()

    def _record_executor(self) -> None:
        """Record what the executor trains on when it changed (checked every DESCRIBE_EVERY_S),
        so that the lab's status line says it as the headless header does."""
        now = time.monotonic()
        if self._described and now - self._described_at < DESCRIBE_EVERY_S:
            return
        self._described_at = now
        described = self.executor.describe()
        if described != self._described:
            self.store.set_driver_executor(_pid(), described)
            self._described = described

    def _queued(self) -> list[QueuedRun]:
        """The queue in the scheduler's light form (id, group, resume step): a poll or a
        dispatch reads three columns of the queued runs, never whole rows."""
        rows = self.store.queued_runs()
        if self.scope is not None:
            rows = [r for r in rows if r.run_id in self.scope]
        return rows

    def _finished(self) -> bool:
        if self.executor.busy():
            self._idle_since = None
            return False
        if self.stopping or self.exit_requested:  # work queued after an accepted exit waits for the next driver
            return True
        if not self._idle():
            return False
        now = time.monotonic()
        self._idle_since = self._idle_since or now
        return now - self._idle_since >= self.linger_s

    def _idle(self) -> bool:
        """No worker trains and nothing waits to be dispatched: lingering, or about to."""
        return not self.executor.busy() and all(r.run_id in self.dispatched for r in self._queued())

    def _dispatch(self) -> None:
        idle = self.executor.idle_slots()
        if not idle:
            return
        waiting = [r for r in self._queued() if r.run_id not in self.dispatched]
        if not waiting:
            return
        # Spread the work: with more idle workers than groups, the largest groups are split.
        groups = spread_groups(plan_groups(waiting, self.group_size), len(idle))[:len(idle)]
        rows = self.store.get_many([r.run_id for group in groups for r in group])  # whole rows: these groups only
        for slot, group in zip(idle, groups):
            members = [rows[r.run_id] for r in group if r.run_id in rows]  # a run deleted meanwhile is left out
            if members:
                self._submit(slot, members)

    def _submit(self, slot: int, group: list[RunRow]) -> None:
        task_id = f"g{next(self._ids)}"
        for run in group:  # files newer than the store's record would resume past metrics it never received
            self.store.discard_unrecorded_checkpoints(run.run_id)
        device = self.executor.device_of(slot)
        options = TrainOptions(**{**self.options.__dict__, "device": device,
                                  "dtype_choice": self._dtype_choice(group[0].config, device, self.executor.busy())})
        task = GroupTask(task_id, [r.run_id for r in group], [r.config.to_dict() for r in group],
                         [str(self.store.checkpoint_dir(r.run_id)) for r in group], options)
        self.tasks[task_id] = task
        self.slot_of_task[task_id] = slot
        self.dispatched.update(task.run_ids)
        self.ended.difference_update(task.run_ids)
        self.executor.submit(slot, task)

    def _dtype_choice(self, cfg: RunConfig, device: str, workers_busy: bool) -> DtypeChoice | None:
        """What dtype "auto" means for `cfg`'s shape on `device` (`choice_before_workers`).
        A shape first queued while workers train is measured under their load: the answer
        serves this driver but is not cached."""
        return choice_before_workers(self.dtype_choices, cfg, device, cache_result=not workers_busy)

    def _absorb(self, items: list[tuple[int, str, object]]) -> None:
        batch: list = []  # core events to write, in order
        shown: list = []  # what the view hears: the same, with memory retries as warnings
        for slot, task_id, event in items:
            if isinstance(event, (TaskDone, WorkerReady)):
                continue
            if isinstance(event, WorkerDied):
                if batch:
                    self.store.apply_many(batch)
                    batch = []
                self._worker_died(event)
                continue
            if self._retry_smaller(task_id, event):
                event = ev.Warned(event.run_id, event.step, f"{event.reason.split(';')[0]} in a group of "
                                  f"{len(self.tasks[task_id].run_ids)}; retrying in groups of at most {self.group_size}")
            batch.append(event)
            shown.append(event)
            if isinstance(event, ev.TERMINAL):
                self.ended.add(event.run_id)
                self.dispatched.discard(event.run_id)  # a client may queue it again later
        if batch:
            self.store.apply_many(batch)
        if self.retry:  # after the batch, so the requeue is not overwritten by its events
            self.store.requeue(self.retry)
            self.dispatched.difference_update(self.retry)
            self.ended.difference_update(self.retry)
            self.retry = []
        self._requeue_group_mates(batch)
        self._forget_ended_tasks(items)
        for event in shown:
            self.on_event(event)

    def _forget_ended_tasks(self, items: list[tuple[int, str, object]]) -> None:
        """Drop the tasks whose worker reported them done: what a poll looks through (stop
        requests, a kill) stays the groups in training, however many runs have finished."""
        for _, task_id, event in items:
            if isinstance(event, TaskDone):
                self.tasks.pop(task_id, None)
                self.slot_of_task.pop(task_id, None)

    def _retry_smaller(self, task_id: str, event: object) -> bool:
        """A group that ran out of memory is retried in smaller groups instead of failing.

        Only a run alone in its group fails for memory (with advice to lower --group-size)."""
        task = self.tasks.get(task_id)
        if not (isinstance(event, ev.Failed) and event.reason.startswith("out of memory")
                and task is not None and len(task.run_ids) > 1):
            return False
        self.group_size = min(self.group_size, max(1, len(task.run_ids) // 2))
        self.retry.append(event.run_id)
        return True

    def _requeue_group_mates(self, events: list) -> None:
        back = [e.run_id for e in events if isinstance(e, ev.Stopped) and e.run_id in self.requeue_when_stopped]
        if back and not self.stopping:
            self.store.requeue(back)
            self.requeue_when_stopped.difference_update(back)
            self.dispatched.difference_update(back)
            self.ended.difference_update(back)

    def _worker_died(self, died: WorkerDied) -> None:
        task = self.tasks.get(died.task.task_id) if died.task is not None else None
        if task is None:
            return
        lost = [rid for rid in task.run_ids if rid not in self.ended]
        if self.stopping:
            self.store.stop_runs(lost, f"{died.reason} while stopping; resumable from its last checkpoint")
        elif died.retry_elsewhere:
            self._retry_elsewhere(lost, died)
            return
        else:
            self.store.fail_runs(lost, f"{died.reason}; rerun to resume from its last checkpoint")
        self.ended.update(lost)

    def _retry_elsewhere(self, lost: list[str], died: WorkerDied) -> None:
        """A cluster lost the worker under these runs: each goes back to the queue once, to resume
        from its newest checkpoint on whichever node takes it; one that loses its worker twice fails."""
        again, twice = [], []
        for rid in lost:
            self.nodes_lost[rid] = self.nodes_lost.get(rid, 0) + 1
            (again if self.nodes_lost[rid] == 1 else twice).append(rid)
        if twice:
            self.store.fail_runs(twice, f"{died.reason}, the second time it lost its worker; rerun to resume "
                                        "from its last checkpoint")
            self.ended.update(twice)
        if again:
            notes = []
            for rid in again:
                row = self.store.get(rid)
                notes.append(ev.Warned(rid, row.step if row else 0, f"{died.reason}; retrying once on another "
                                       "node from its last checkpoint"))
            self.store.apply_many(notes)
            for note in notes:
                self.on_event(note)
            self.store.requeue(again)
            self.dispatched.difference_update(again)

    def _handle_requests(self) -> None:
        for req in self.store.pending_requests():
            if req.kind == "stop_all":
                self.request_stop()
            elif req.kind == "exit":
                # Only an idle driver makes way; one that has work keeps it (the asker reports it busy).
                if self._idle() and not self.stopping:
                    self.exit_requested = True
                    self.store.set_driver_info(_pid(), accepting=False, kind=self.kind)
            elif req.run_id is not None:
                self._stop_run(req.run_id, cancel=req.kind == "cancel")
            self.store.ack_request(req.id)

    def _stop_run(self, run_id: str, cancel: bool) -> None:
        """Stop one run. A queued run simply leaves the queue; a training run stops with its
        whole group (groups train in lock-step), and its group-mates are queued again to
        resume from the checkpoint written on the way out."""
        note = "cancelled" if cancel else "stopped on request"
        if run_id not in self.dispatched:
            self.store.stop_runs([run_id], note)
            return
        for task_id, task in self.tasks.items():
            if run_id in task.run_ids and run_id not in self.ended:
                self.executor.stop(self.slot_of_task[task_id])
                self.requeue_when_stopped.update(r for r in task.run_ids if r != run_id)


def _pid() -> int:
    import os

    return os.getpid()
