"""The executor interface: how the driver hands groups to workers and hears back.

The driver only ever talks to an `Executor`, so a distributed engine can be added later as
another implementation of this small interface; `LocalExecutor` (local.py) is the default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..core.config import TrainOptions


@dataclass(frozen=True)
class GroupTask:
    """One group to train: plain, picklable data only."""

    task_id: str
    run_ids: list[str]
    configs: list[dict]  # RunConfig.to_dict() of each run
    checkpoint_dirs: list[str]
    options: TrainOptions = field(default_factory=TrainOptions)


@dataclass(frozen=True)
class GroupDone:
    """A worker finished its group (every run in it has ended) and is idle again."""

    task_id: str


@dataclass(frozen=True)
class WorkerDied:
    """A worker process vanished (killed, crashed); its unfinished runs must be failed."""

    slot: int
    task: GroupTask | None
    reason: str


class Executor(ABC):
    """Runs GroupTasks somewhere and reports (slot, task_id, event) tuples."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def idle_slots(self) -> list[int]: ...

    @abstractmethod
    def device_of(self, slot: int) -> str: ...

    @abstractmethod
    def submit(self, slot: int, task: GroupTask) -> None: ...

    @abstractmethod
    def poll(self, timeout: float) -> list[tuple[int, str, object]]:
        """Core events, GroupDone and WorkerDied, waiting at most `timeout` seconds."""

    @abstractmethod
    def busy(self) -> bool: ...

    @abstractmethod
    def stop(self, slot: int | None = None) -> None:
        """Ask a worker (or all) to checkpoint and stop its group."""

    @abstractmethod
    def kill(self) -> None:
        """Stop every worker now, without checkpointing."""

    @abstractmethod
    def shutdown(self) -> None:
        """Let idle workers exit and release resources."""
