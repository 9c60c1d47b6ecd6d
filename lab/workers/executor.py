"""The executor interface: how the driver and the benchmark hand tasks to workers and hear back.

The driver and `lab.bench` only ever talk to an `Executor`, so a distributed engine can be
added later as another implementation of this small interface; `LocalExecutor` (local.py) is
the default. An executor never needs to know what a task does: a task is plain, picklable
data that performs itself on a worker (`Task.perform`), sending events as it goes. Two kinds
exist: `GroupTask` trains a group of runs (the driver's), `MeasureTask` (measure.py) times a
group for a wall-time prediction (the benchmark's). So an executor that runs one kind runs both.

Slots are ids an executor hands out, not a fixed list: a cluster gains slots when a node joins
and loses them when one leaves (`idle_slots` is asked afresh before every dispatch), and a
worker that vanishes is reported once as `WorkerDied`, saying whether its runs may be retried
elsewhere. `RayExecutor` (ray_cluster.py) is the second implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..core.config import RunConfig, TrainOptions


class Task(Protocol):
    """Work for one worker: picklable data with an id, that knows how to perform itself."""

    @property
    def task_id(self) -> str: ...

    def perform(self, emit: Callable[[object], None], should_stop: Callable[[], bool]) -> None:
        """Do the work in this (worker) process, sending events to `emit`; `should_stop()` turns
        True when the executor asks the worker to stop (`Executor.stop`). Exceptions are the
        task's own to report: the worker only hears that it returned."""


@dataclass(frozen=True)
class GroupTask:
    """One group to train: plain, picklable data only."""

    task_id: str
    run_ids: list[str]
    configs: list[dict]  # RunConfig.to_dict() of each run
    checkpoint_dirs: list[str]
    options: TrainOptions = field(default_factory=TrainOptions)

    def perform(self, emit: Callable[[object], None], should_stop: Callable[[], bool]) -> None:
        """Train the group to its end (or a stop); every run ends with one terminal event."""
        from ..core.checkpoint import FileCheckpointSink
        from ..core.train import train_group

        train_group(
            [RunConfig.from_dict(c) for c in self.configs],
            self.run_ids,
            emit,
            self.options,
            FileCheckpointSink({rid: Path(d) for rid, d in zip(self.run_ids, self.checkpoint_dirs)}),
            should_stop=should_stop,
        )


@dataclass(frozen=True)
class TaskDone:
    """A worker finished its task and is idle again."""

    task_id: str


@dataclass(frozen=True)
class WorkerReady:
    """A worker has started and loaded the trainer: it takes tasks now (`lab.bench` times this)."""


@dataclass(frozen=True)
class WorkerDied:
    """A worker vanished (process killed or crashed, its node gone); its unfinished runs end.

    `retry_elsewhere`: the executor has other machines for them, so the driver requeues them
    once from their newest checkpoint (Ray); otherwise they fail and a rerun resumes them
    (local workers). `node`: where it died, for the run log ("" on this machine)."""

    slot: int
    task: Task | None
    reason: str
    retry_elsewhere: bool = False
    node: str = ""


class ExecutorUnavailable(Exception):
    """The chosen executor cannot start (its package is missing, its cluster unreachable): one line."""


class Executor(ABC):
    """Runs Tasks on its workers (slots) and reports (slot, task_id, event) tuples."""

    @abstractmethod
    def start(self) -> None:
        """Start the workers (or join the cluster); a second call does nothing."""

    @abstractmethod
    def idle_slots(self) -> list[int]:
        """Slots that take a task now; the set may grow and shrink between calls."""

    def describe(self) -> str:
        """What the executor trains on, for the headless header and the driver's log
        ("local: 2 workers (cpu, 1 thread each)", "ray: 3 nodes, 8 GPUs, 96 CPUs")."""
        return type(self).__name__

    @abstractmethod
    def device_of(self, slot: int) -> str: ...

    @abstractmethod
    def submit(self, slot: int, task: Task) -> None:
        """Hand `task` to the idle worker in `slot`."""

    @abstractmethod
    def poll(self, timeout: float) -> list[tuple[int, str, object]]:
        """The tasks' events, TaskDone, WorkerReady and WorkerDied, waiting at most `timeout` seconds."""

    @abstractmethod
    def busy(self) -> bool: ...

    @abstractmethod
    def stop(self, slot: int | None = None) -> None:
        """Ask a worker (or all) to stop its task: `should_stop()` turns True there until its next task."""

    @abstractmethod
    def kill(self) -> None:
        """Stop every worker now, without checkpointing."""

    @abstractmethod
    def shutdown(self) -> None:
        """Let idle workers exit and release resources."""
