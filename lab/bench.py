"""Measure this machine's training speed for a suite and predict the suite's wall time.

A paper suite trains for hours or days, and how long depends on the machine, the device,
the worker count and how runs are grouped. `dropres-lab bench` and the TUI's launch dialog
answer "how long will this take here?" in under a minute, before anything is launched:

1. **Plan** (`plan_suite`): the workers and groups exactly as a launch forms them, with the
   scheduler's own functions (`plan_execution`, `plan_groups`, and `spread_groups`, the rule
   the driver splits large groups with when workers are idle).
2. **Measure** (`measure_groups`): every distinct group (shape and size) is built with the
   real `GroupTrainer` and timed for a few training steps, an evaluation forward over a few
   chunks of windows (the trainer's own evaluation code) and a checkpoint
   (`lab.workers.measure`). The measuring tasks go to the launch's own executor, so they run
   on the same workers, with the same torch threads each, as the launch will: a worker's
   speed depends on what the other workers do to the shared cores and memory bandwidth, so
   measuring one process alone would flatter it. Any `Executor` can be measured this way.
3. **Predict** (`group_seconds`, `simulate_schedule`): each group's time is its training
   steps, its evaluations (at step 0, every eval_interval and at the end), the exact
   validation pass and its setup; the driver's dispatch is then replayed (a worker takes the
   next group when it goes idle) and the last group's end, plus the workers' start-up, is the
   predicted wall time.

Predictions are from scratch (every run from step 0, nothing in a store is consulted) and
assume an otherwise idle machine. Nothing here imports torch at module level: the TUI imports
this module, and torch is loaded only once something is measured.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .core.config import RunConfig
from .core.precision import shape_text
from .experiments import RunSpec
from .formatting import counted, fmt_duration
from .workers.executor import Executor, TaskDone, WorkerDied, WorkerReady
from .workers.measure import (
    EVAL_BUDGET_SHARE,
    STEPS_BUDGET_S,
    GroupCost,
    MeasureFailed,
    Measured,
    MeasureTask,
    exact_windows,
    measure_group,
)
from .workers.scheduler import Q, WorkerSpec, default_group_size, plan_execution, plan_groups, spread_groups
from .workers.settings import DriverSettings

if TYPE_CHECKING:
    from .core.precision import DtypeChoice

#: Settings that change what a group costs per step (everything in `group_key` except the
#: schedule): groups that agree on these and on their size are measured once.
SCHEDULE_KEYS = ("max_iters", "lr", "min_lr", "warmup_iters", "eval_interval", "eval_iters", "weight_decay",
                 "beta1", "beta2", "data_seed")


class BenchError(Exception):
    """Measuring failed (a process died, the trainer raised): one line for the user."""


class BenchCancelled(Exception):
    """The caller's cancel event was set: measuring stopped and its processes were ended."""


# -- plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """A run of the suite as the scheduler sees it before it is queued (from step 0)."""

    spec: RunSpec
    checkpoint_step: int | None = None

    @property
    def config(self) -> RunConfig:
        return self.spec.config

    @property
    def group_text(self) -> str:
        return self.spec.config.group_text()


@dataclass(frozen=True)
class Plan:
    """How a launch would train the runs: its workers, group cap and groups."""

    device: str  # resolved: "cpu", "cuda" or "cuda:N"
    workers: list[WorkerSpec]
    group_size: int
    runs: list[PlannedRun]
    groups: list[list[PlannedRun]]  # every group the driver forms, in dispatch order

    @property
    def device_text(self) -> str:
        """"CPU" or the GPUs the workers use, for one-line summaries."""
        devices = sorted({w.device for w in self.workers})
        return "CPU" if devices == ["cpu"] else ", ".join(devices)


def shape_key(configs: Sequence[RunConfig]) -> tuple:
    """What decides a group's cost per step: its settings but the schedule, and its size."""
    d = dict(configs[0].group_key())
    for key in SCHEDULE_KEYS:
        d.pop(key, None)
    return tuple(sorted(d.items())), len(configs)


def rough_seconds(configs: Sequence[RunConfig]) -> float:
    """A stand-in for a group's cost before anything is measured, in arbitrary units: the
    plan's groups do not depend on it, and it orders what to measure first."""
    cfg = configs[0]
    windows = cfg.max_iters * cfg.batch_size + evaluations(cfg) * 2 * cfg.eval_iters * cfg.batch_size / 3
    return len(configs) * cfg.n_layer * cfg.n_embd ** 2 * cfg.block_size * windows


def plan_suite(specs: Sequence[RunSpec], device: str, workers: int | None, group_size: int | None,
               cuda_devices: int, slots: Sequence[WorkerSpec] | None = None) -> Plan:
    """The plan a launch of `specs` makes: `plan_execution`'s workers and group cap, and the
    groups the driver forms from them (split over idle workers by `spread_groups`). `slots`:
    a cluster's slots instead of this machine's workers (`RayExecutor.worker_specs`)."""
    runs = [PlannedRun(s) for s in specs]
    cap, _, worker_specs = plan_execution(device, workers, group_size, runs, cuda_devices)
    if slots is not None:
        worker_specs = list(slots)
        cap = group_size or default_group_size(worker_specs[0].device if worker_specs else "cpu")
    schedule = simulate_schedule(runs, len(worker_specs), cap, lambda g: rough_seconds([r.config for r in g]))
    devices = {w.device for w in worker_specs}
    resolved = devices.pop() if len(devices) == 1 else "cuda"
    return Plan(resolved, worker_specs, cap, runs, [slot.group for slot in schedule])


# -- predict --------------------------------------------------------------------------------------


def evaluations(cfg: RunConfig) -> int:
    """Evaluations a run makes from step 0: at every multiple of eval_interval below
    max_iters (step 0 included) and once more at max_iters (`GroupTrainer.train`)."""
    in_loop = (cfg.max_iters - 1) // cfg.eval_interval + 1 if cfg.max_iters > 0 else 0
    return in_loop + 1


@dataclass(frozen=True)
class GroupTime:
    """A group's predicted time, by part (seconds)."""

    train_s: float
    eval_s: float  # every evaluation together
    per_eval_s: float  # one evaluation (train and val batches)
    exact_s: float
    checkpoint_s: float
    setup_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.exact_s + self.checkpoint_s + self.setup_s


def group_time(cfg: RunConfig, cost: GroupCost) -> GroupTime:
    """max_iters steps, every evaluation (eval_iters batches of each split), the exact
    validation pass, a checkpoint at every evaluation after step 0 and at the end, setup."""
    n_evals = evaluations(cfg)
    per_eval = 2 * cfg.eval_iters * cfg.batch_size * cost.window_s
    return GroupTime(
        train_s=cfg.max_iters * cost.step_s,
        eval_s=n_evals * per_eval,
        per_eval_s=per_eval,
        exact_s=cost.exact_windows * cost.window_s,
        checkpoint_s=(n_evals - 1) * cost.checkpoint_s,
        setup_s=cost.setup_s,
    )


@dataclass(frozen=True)
class Slot:
    """One group in the replayed schedule: which worker trains it, from when to when."""

    group: list
    worker: int
    start_s: float
    end_s: float


def simulate_schedule(runs: Sequence[Q], n_workers: int, group_size: int,
                      seconds: Callable[[list[Q]], float]) -> list[Slot]:
    """Replay the driver's dispatch of `runs` on `n_workers` workers with known group times.

    At the start every worker is idle: the queue is grouped (`plan_groups`) and, with more
    idle workers than groups, the largest groups are split (`spread_groups`), as
    `Driver._dispatch` does. From then on a worker takes the next group when it goes idle;
    workers are seen finishing one at a time (lower worker number first on a tie), as the
    driver hears them, so a group is never split after the start.
    """
    waiting = list(runs)
    slots: list[Slot] = []
    ends: list[tuple[float, int]] = []
    idle = list(range(n_workers))
    now = 0.0
    while waiting:
        groups = spread_groups(plan_groups(waiting, group_size), len(idle))
        for worker, group in zip(idle, groups):
            end = now + seconds(group)
            slots.append(Slot(group, worker, now, end))
            heapq.heappush(ends, (end, worker))
            taken = {id(r) for r in group}
            waiting = [r for r in waiting if id(r) not in taken]
        if not waiting or not ends:
            break
        now, worker = heapq.heappop(ends)
        idle = [worker]
    return slots


def makespan(schedule: Sequence[Slot]) -> float:
    """When the last group ends."""
    return max((s.end_s for s in schedule), default=0.0)


@dataclass
class Prediction:
    """A measured plan: what each group costs, the replayed schedule, the wall time."""

    plan: Plan
    costs: dict[tuple, GroupCost]
    schedule: list[Slot]
    startup_s: float  # a worker's start (spawn, torch import, corpus), before its first group
    measure_s: float  # how long measuring took
    threads: int = 1
    dtype_choices: list["DtypeChoice"] = field(default_factory=list)  # how dtype "auto" was decided, per shape

    def cost_of(self, group: Sequence[PlannedRun]) -> GroupCost:
        return self.costs[shape_key([r.config for r in group])]

    def time_of(self, group: Sequence[PlannedRun]) -> GroupTime:
        return group_time(group[0].config, self.cost_of(group))

    @property
    def wall_s(self) -> float:
        return self.startup_s + makespan(self.schedule)

    def summary(self) -> str:
        """"5 runs in 2 groups on 2 workers (CPU, 1 thread each): predicted wall time 4 min"."""
        return f"{self.plan_text()}: predicted wall time {fmt_duration(self.wall_s, 'long')}"

    def plan_text(self) -> str:
        return plan_text(self.plan, len(self.schedule))


def plan_text(plan: Plan, n_groups: int | None = None) -> str:
    """"5 runs in 2 groups on 2 workers (CPU, 1 thread each)"."""
    n_runs, n_groups = len(plan.runs), len(plan.groups) if n_groups is None else n_groups
    n_workers, threads = len(plan.workers), plan.workers[0].threads if plan.workers else 1
    return (f"{counted(n_runs, 'run')} in {counted(n_groups, 'group')} on {counted(n_workers, 'worker')} "
            f"({plan.device_text}, {counted(threads, 'thread')} each)")


# -- measure --------------------------------------------------------------------------------------


def measure_groups(groups: dict[tuple, list[RunConfig]], executor: Executor, *,
                   steps_budget_s: float = STEPS_BUDGET_S, on_measured: Callable[[int, int], None] | None = None,
                   cancel: threading.Event | None = None,
                   dtype_choices: dict[tuple[str, str], "DtypeChoice"] | None = None) -> tuple[dict[tuple, GroupCost], float]:
    """Measure each group shape on the executor's workers, side by side, as a launch runs them.

    The executor is started here and ended before this returns, whatever happens. Shapes go
    to whichever worker is free, the most expensive first. With fewer shapes than workers,
    shapes are measured more than once, side by side, and the results averaged; a worker with
    nothing left to measure keeps training (`MeasureTask`) until all are done. Setting
    `cancel` kills the workers at once (BenchCancelled). Returns (cost per shape key, a
    worker's start-up seconds: spawn, imports, corpus). `dtype_choices` ((shape text, device)
    -> choice, from `choose_dtypes`) tells the workers what dtype "auto" resolved to.
    """
    order = sorted(groups, key=lambda k: -rough_seconds(groups[k]))
    eval_budget_s = steps_budget_s * EVAL_BUDGET_SHARE
    measured: dict[tuple, list[GroupCost]] = {}
    shape_of: dict[str, tuple] = {}  # task id -> shape key
    ready: dict[int, float] = {}
    todo: list[tuple] = []  # shape keys not handed out yet
    ids = itertools.count()
    finished = False
    with tempfile.TemporaryDirectory(prefix="dropres-bench-") as scratch:

        def submit(slot: int) -> None:
            key, task_id = todo.pop(0), f"m{next(ids)}"
            cfg, device = groups[key][0], executor.device_of(slot)
            task = MeasureTask(task_id, [c.to_dict() for c in groups[key]], device,
                               steps_budget_s, eval_budget_s, str(Path(scratch) / task_id),
                               (dtype_choices or {}).get((shape_text(cfg), device)) if cfg.dtype == "auto" else None)
            shape_of[task.task_id] = key
            executor.submit(slot, task)

        t_spawn = time.perf_counter()
        try:
            executor.start()
            slots = executor.idle_slots()
            todo += (order + [order[i % len(order)] for i in range(len(order), len(slots))]) if order else []
            outstanding = len(todo)
            for slot in slots[:len(todo)]:
                submit(slot)
            moving_on: set[int] = set()  # workers stopped to take the next shape once idle
            while outstanding:
                if cancel is not None and cancel.is_set():
                    raise BenchCancelled()
                for slot, task_id, event in executor.poll(0.2):
                    if isinstance(event, WorkerReady):
                        ready.setdefault(slot, time.perf_counter() - t_spawn)
                    elif isinstance(event, WorkerDied):
                        raise BenchError(f"a measuring process exited unexpectedly ({event.reason})")
                    elif isinstance(event, MeasureFailed):
                        raise BenchError(f"measuring failed: {event.reason}")
                    elif isinstance(event, Measured):
                        measured.setdefault(shape_of[task_id], []).append(event.cost)
                        outstanding -= 1
                        if on_measured is not None:
                            on_measured(len(groups) - len([k for k in groups if k not in measured]), len(groups))
                        if len(todo) > len(moving_on):  # a shape is left for it: stop keeping busy
                            executor.stop(slot)
                            moving_on.add(slot)
                    elif isinstance(event, TaskDone) and slot in moving_on:
                        moving_on.discard(slot)
                        submit(slot)
            finished = True
        finally:
            if finished:
                executor.stop()  # the workers still keeping busy
            else:
                executor.kill()
            executor.shutdown()
    costs = {key: GroupCost.mean(found) for key, found in measured.items()}
    startup_s = max(ready.values(), default=0.0) + max((c.once_s for c in costs.values()), default=0.0)
    return costs, startup_s


def choose_dtypes(configs: Sequence[RunConfig], workers: Sequence[WorkerSpec]) -> dict[tuple[str, str], "DtypeChoice"]:
    """Resolve dtype "auto" for every model shape on every worker's device, here, before any
    worker starts (`choice_before_workers`): (shape text, device) -> choice."""
    from .core.precision import choices_before_workers

    return choices_before_workers(configs, (w.device for w in workers))


def _cost_for(key: tuple, costs: dict[tuple, GroupCost]) -> GroupCost:
    """A measured cost, or one scaled from the same shape at the nearest measured size (only
    for a group the measured plan did not contain: per-step costs grow with the size)."""
    if key in costs:
        return costs[key]
    shape, n = key
    near = [(abs(m - n), m, c) for (s, m), c in costs.items() if s == shape]
    if not near:
        raise BenchError("no measurement for a group shape of the plan")
    _, m, c = min(near, key=lambda x: x[:2])
    scale = n / m
    return GroupCost(**{**c.__dict__, "step_s": c.step_s * scale, "window_s": c.window_s * scale,
                        "checkpoint_s": c.checkpoint_s * scale, "checkpoint_durable_s": c.checkpoint_durable_s * scale,
                        "flop_per_step": c.flop_per_step * scale})


def bench_suite(specs: Sequence[RunSpec], device: str = "auto", workers: int | None = None,
                group_size: int | None = None, *, cuda_devices: int | None = None,
                steps_budget_s: float = STEPS_BUDGET_S,
                progress: Callable[[Plan, int, int], None] | None = None,
                cancel: threading.Event | None = None, settings: DriverSettings | None = None) -> Prediction:
    """Plan `specs` as a launch would, measure every group shape they make, predict the wall time.

    `progress(plan, measured, total)` is called once the plan is known and after each shape;
    setting `cancel` stops measuring (BenchCancelled). The device must have been checked
    (`check_device`); corpora problems raise DataError before anything is measured. With
    `settings` choosing Ray, the cluster's slots replace this machine's workers and the groups
    are measured on the cluster's nodes.
    """
    from .launch import check_corpora
    from .workers.scheduler import cuda_device_count
    from .workers.startup import executor_for

    if not specs:
        raise BenchError("no runs to measure")
    check_corpora(list(specs))
    cuda = cuda_device_count() if cuda_devices is None else cuda_devices
    started = time.perf_counter()
    executor = None
    if settings is not None and settings.executor != "local":
        executor = executor_for([], settings)
        executor.start()
    plan = plan_suite(specs, device, workers, group_size, cuda,
                      None if executor is None else executor.worker_specs())  # type: ignore[attr-defined]
    shapes: dict[tuple, list[RunConfig]] = {}
    for group in plan.groups:
        shapes.setdefault(shape_key([r.config for r in group]), [r.config for r in group])
    if progress is not None:
        progress(plan, 0, len(shapes))
    choices = choose_dtypes([c for configs in shapes.values() for c in configs], plan.workers)
    costs, startup_s = measure_groups(
        shapes, executor or executor_for(plan.workers), steps_budget_s=steps_budget_s, cancel=cancel,
        dtype_choices=None if executor is not None else choices,  # on a cluster each node decides for itself
        on_measured=None if progress is None else (lambda done, total: progress(plan, done, total)))

    def seconds(group: list[PlannedRun]) -> float:
        return group_time(group[0].config, _cost_for(shape_key([r.config for r in group]), costs)).total_s

    schedule = simulate_schedule(plan.runs, len(plan.workers), plan.group_size, seconds)
    for slot in schedule:
        key = shape_key([r.config for r in slot.group])
        costs.setdefault(key, _cost_for(key, costs))
    return Prediction(plan, costs, schedule, startup_s, time.perf_counter() - started,
                      plan.workers[0].threads if plan.workers else 1, list(dict.fromkeys(choices.values())))


__all__ = [
    "BenchCancelled", "BenchError", "GroupCost", "GroupTime", "Plan", "PlannedRun", "Prediction", "Slot",
    "bench_suite", "choose_dtypes", "evaluations", "exact_windows", "group_time", "makespan", "measure_group",
    "measure_groups", "plan_suite", "plan_text", "rough_seconds", "shape_key", "simulate_schedule",
]
