"""A driver's start-up and tear-down: the one sequence `run --headless` and the background driver share.

A driver owns its store for as long as it runs. `DriverSession` takes the store's lock before
anything is written (`take_lock`: a headless run asks the lab's idle background driver to
make way; a busy driver is refused with the holder's kind, pid and runs), opens the store and
marks runs a dead driver left "running" as stopped; `plan` sizes the workers for the queued
runs; `drive` starts them through an executor and trains until the `Driver` is done, with the
front-end's stop signals installed. Everything ends in the reverse order whatever happens (an
error, Ctrl-C, SIGTERM): the workers (in `Driver.run`), the signal handlers, the store, and
the lock last, so no other driver can start while this one's workers may still write.

The front-ends keep only what differs: what they queue (headless enqueues its own runs and
trains only those; the background driver takes every queued run and new work while it
lingers), how they show progress (Rich or a log), and which signals stop them how.
"""

from __future__ import annotations

import signal
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence

from ..core.config import RunConfig, TrainOptions
from ..core.precision import DtypeChoice, choices_before_workers, needs_measuring, shape_text
from ..store import Store
from .driver import Driver
from .executor import Executor
from .handover import take_lock
from .scheduler import ExecutionPlan, Queued, WorkerSpec, plan_execution
from .settings import DriverSettings


def executor_for(workers: list[WorkerSpec], settings: DriverSettings | None = None) -> Executor:
    """The executor the settings choose: local processes, one per WorkerSpec (the default), or
    a Ray cluster whose nodes' resources decide the slots. The driver and `lab.bench` both get
    theirs here, so what a benchmark measures is what a launch runs. Ray is imported only
    when chosen."""
    if settings is not None and settings.executor == "ray":
        from .ray_cluster import RayExecutor

        return RayExecutor(settings.address, settings.device, settings.gpu_share)
    from .local import LocalExecutor

    return LocalExecutor(list(workers))


@dataclass(frozen=True)
class StopSignals:
    """Which signals stop a driver, and how.

    The first of `signals` asks for a graceful stop: workers checkpoint and exit, queued runs
    stay resumable. With `kill_on_repeat`, each further one stops at once (runs resume from
    their last checkpoint); without it, repeats are the same graceful request. `say` hears
    `graceful_note` or `immediate_note` (when not empty) as each signal arrives.
    `ignore_after`: once the driver has ended, the signals are ignored rather than handed back
    to their previous handlers, for a process whose whole job was this drive (`run
    --headless`): a late Ctrl-C, usually the second of a quick pair after a graceful stop that
    finished at once, has nothing left to stop and must not kill it or change its exit code.
    """

    signals: tuple[signal.Signals, ...]
    kill_on_repeat: bool = False
    ignore_after: bool = False
    say: Callable[[str], None] | None = None
    graceful_note: str = ""
    immediate_note: str = ""


class DriverSession:
    """This process as the one driver of a store, from taking its lock to releasing it.

    Use as a context manager: on entry the lock is taken (StoreError naming the holder if
    another driver has it), the store opened and interrupted runs marked (`interrupted`: their
    ids); on exit the store is closed and the lock released, in that order. `kind` is what the
    driver records itself as ("headless" or "background"); `say` hears what the session does
    while it waits for the lock.
    """

    def __init__(self, store_dir: Path, settings: DriverSettings, cuda_devices: int, *, kind: str,
                 say: Callable[[str], None] | None = None) -> None:
        self.store_dir = store_dir
        self.settings = settings
        self.cuda_devices = cuda_devices
        self.kind = kind
        self.say = say
        self.interrupted: list[str] = []
        self.dtype_choices: dict[tuple[str, str], DtypeChoice] = {}  # decided before the workers start
        self._early: tuple[ExecutionPlan, Executor] | None = None  # started by `early_workers`, not yet adopted
        self._store: Store | None = None
        self._exit = ExitStack()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("DriverSession.store is only open inside `with`")
        return self._store

    def __enter__(self) -> "DriverSession":
        with ExitStack() as stack:
            lock = take_lock(self.store_dir, self.kind, self.say)
            stack.callback(lock.release)  # runs last: the store closes first
            self._store = stack.enter_context(Store.open(self.store_dir))
            self.interrupted = self._store.mark_interrupted()
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._store = None
        self._exit.close()

    def plan(self, queued: Sequence[Queued]) -> ExecutionPlan:
        """The group cap and the workers for `queued`, as the settings ask (`plan_execution`)."""
        s = self.settings
        return plan_execution(s.device, s.workers, s.group_size, queued, self.cuda_devices)

    def executor(self, plan: ExecutionPlan) -> Executor:
        """The executor for `plan`, as the settings choose (`executor_for`); not started yet."""
        return executor_for(plan.workers, self.settings)

    @contextmanager
    def early_workers(self, configs: Sequence[RunConfig]) -> Iterator[None]:
        """Start local workers for the runs about to be queued (`configs`) at once, so their
        `import torch` (1.5 s each) overlaps the driver's corpus check, lock, store and enqueue.

        Only where nothing is left to measure (dtype "auto" cached, set, or not timed on the
        device: `needs_measuring`) and the workers are this machine's processes. `start_workers`
        adopts them when the plan for what was actually queued asks for the same workers (runs
        already finished can make it smaller); otherwise, and when nothing reaches
        `start_workers` (an error, every run already done), they are killed on the way out:
        they hold no task."""
        if self.settings.executor == "local":
            runs = [_Planned(c) for c in configs]
            plan = self.plan(runs)
            devices = {w.device for w in plan.workers}
            shapes = {(shape_text(c), c.dtype): c for c in configs}.values()  # a 10,000-run sweep has a few
            if runs and not any(needs_measuring(c, d) for c in shapes for d in devices):
                self._early = (plan, self.executor(plan))
        try:
            if self._early is not None:
                self._early[1].start()
            yield
        finally:
            early, self._early = self._early, None
            if early is not None:
                early[1].kill()

    def start_workers(self, plan: ExecutionPlan, queued: Sequence[HasConfig]) -> Executor:
        """`plan`'s executor, started once dtype "auto" is decided for every queued shape on its
        devices (`choices_before_workers`; `drive` hands the answers to the driver). `queued`:
        whole rows, at least one per group (`Store.group_leaders` of a light queue read).

        Deciding comes first because it may measure (only when the cache has no answer): a
        worker importing torch beside the measurement on 2 cores would slow it, and the wrong
        answer would be cached. A cached or explicit dtype costs no torch import here, so the
        workers' own imports start at once. Started before `drive` so a front-end can say
        what it trains on (a Ray cluster is joined here)."""
        choices_before_workers([r.config for r in queued], [w.device for w in plan.workers], self.dtype_choices)
        early, self._early = self._early, None
        if early is not None:
            if early[0].workers == plan.workers:
                return early[1]
            early[1].kill()  # started for more runs than were left to train; none holds a task
        executor = self.executor(plan)
        executor.start()
        return executor

    def drive(self, plan: ExecutionPlan, stop: StopSignals, executor: Executor, *, scope: Iterable[str] | None = None,
              on_event: Callable[[object], None] | None = None) -> Driver:
        """Train with `plan`'s workers until the driver is done, then end them; the driver,
        for what it ended with (`exit_requested`).

        `scope`: the run ids to train (headless), or None for every queued run and new work
        while the driver lingers (`settings.linger_s`). `on_event` hears every event the
        store records. `executor`: what `start_workers` returned, the one place that decides
        dtype "auto" before any worker starts. The previous handlers of `stop.signals` are
        restored on the way out (or the signals ignored: `stop.ignore_after`).
        """
        driver = Driver(self.store, executor, group_size=plan.group_size,
                        options=TrainOptions(), kind=self.kind, scope=scope, linger_s=self.settings.linger_s, on_event=on_event,
                        devices=[w.device for w in plan.workers], dtype_choices=self.dtype_choices)
        handler = _stop_handler(driver, stop)
        previous = {sig: signal.signal(sig, handler) for sig in stop.signals}
        try:
            driver.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_IGN if stop.ignore_after else handler)
        return driver


class HasConfig(Protocol):
    """A run whose settings are at hand: a whole store row, or one not queued yet."""

    @property
    def config(self) -> RunConfig: ...


class _Planned(NamedTuple):
    """A run as the scheduler sees it before it is queued (`early_workers`)."""

    config: RunConfig
    checkpoint_step: int | None = None

    @property
    def group_text(self) -> str:
        return self.config.group_text()


def _stop_handler(driver: Driver, stop: StopSignals) -> Callable[[int, FrameType | None], None]:
    received = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        at_once = stop.kill_on_repeat and received > 1
        note = stop.immediate_note if at_once else stop.graceful_note
        if note and stop.say is not None:
            stop.say(note)
        if at_once:
            driver.kill()
        else:
            driver.request_stop()

    return on_signal
