"""Measure this machine's training speed for a suite and predict the suite's wall time.

A paper suite trains for hours or days, and how long depends on the machine, the device,
the worker count and how runs are grouped. `dropres-lab bench` and the TUI's launch dialog
answer "how long will this take here?" in under a minute, before anything is launched:

1. **Plan** (`plan_suite`): the workers and groups exactly as a launch forms them, with the
   scheduler's own functions (`plan_execution`, `plan_groups`, and `spread_groups`, the rule
   the driver splits large groups with when workers are idle).
2. **Measure** (`measure_groups`, `measure_group`): every distinct group (shape and size) is
   built with the real `GroupTrainer` and timed for a few training steps, an evaluation
   forward over a few chunks of windows (the trainer's own evaluation code) and a checkpoint.
   The measuring runs in as many concurrent processes, with as many torch threads each, as
   the launch will start workers: a worker's speed depends on what the other workers do to
   the shared cores and memory bandwidth, so measuring one process alone would flatter it.
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
import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .core.config import RunConfig, TrainOptions
from .experiments import RunSpec
from .formatting import counted, fmt_duration
from .workers.scheduler import Q, WorkerSpec, plan_execution, plan_groups, spread_groups

if TYPE_CHECKING:
    from .core.data import Corpus

#: Seconds of timed training steps per group shape (at least MIN_TIMED_STEPS steps, so a slow
#: 16-block group takes a few seconds and a tiny one a hundred steps).
STEPS_BUDGET_S = 1.5
MIN_TIMED_STEPS = 3
MAX_TIMED_STEPS = 400
#: Evaluation: at least one chunk of windows (GroupTrainer.eval_windows), more while
#: under this many seconds, at most MAX_EVAL_CHUNKS.
MAX_EVAL_CHUNKS = 4
#: Evaluation timing budget as a fraction of the steps budget.
EVAL_BUDGET_SHARE = 2 / 3

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
               cuda_devices: int) -> Plan:
    """The plan a launch of `specs` makes: `plan_execution`'s workers and group cap, and the
    groups the driver forms from them (split over idle workers by `spread_groups`)."""
    runs = [PlannedRun(s) for s in specs]
    cap, _, worker_specs = plan_execution(device, workers, group_size, runs, cuda_devices)
    schedule = simulate_schedule(runs, len(worker_specs), cap, lambda g: rough_seconds([r.config for r in g]))
    devices = {w.device for w in worker_specs}
    resolved = devices.pop() if len(devices) == 1 else "cuda"
    return Plan(resolved, worker_specs, cap, runs, [slot.group for slot in schedule])


# -- predict --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupCost:
    """What one group of a given shape and size costs on this machine, under launch load."""

    step_s: float  # one optimiser step of the whole group
    window_s: float  # one evaluated window (no-grad forward of every configuration)
    setup_s: float  # GroupTrainer construction and setup (model, optimiser)
    checkpoint_s: float = 0.0  # writing every run's checkpoint once
    exact_windows: int = 0  # windows of the exact validation pass over the whole split
    once_s: float = 0.0  # a fresh worker's one-time costs: corpus load, first setup's lazy initialisation
    dtype: str = "float32"  # the precision in effect ("auto" resolved by the trainer)
    steps_timed: int = 0
    windows_timed: int = 0

    @staticmethod
    def mean(costs: Sequence["GroupCost"]) -> "GroupCost":
        """Several measurements of one shape (taken side by side): their mean."""
        if len(costs) == 1:
            return costs[0]

        def avg(name: str) -> float:
            return sum(getattr(c, name) for c in costs) / len(costs)

        return GroupCost(avg("step_s"), avg("window_s"), avg("setup_s"), avg("checkpoint_s"),
                         costs[0].exact_windows, avg("once_s"), costs[0].dtype,
                         sum(c.steps_timed for c in costs), sum(c.windows_timed for c in costs))


def evaluations(cfg: RunConfig) -> int:
    """Evaluations a run makes from step 0: at every multiple of eval_interval below
    max_iters (step 0 included) and once more at max_iters (`GroupTrainer.train`)."""
    in_loop = (cfg.max_iters - 1) // cfg.eval_interval + 1 if cfg.max_iters > 0 else 0
    return in_loop + 1


def exact_windows(val_tokens: int, block_size: int) -> int:
    """Windows `GroupTrainer.exact_val_loss` evaluates: every position of the split once."""
    targets = val_tokens - 1
    count = (targets - block_size) // block_size + 1
    return count + (1 if targets - count * block_size > 0 else 0)


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


def _synchronizer(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _measure(configs: Sequence[RunConfig], device: str, threads: int, corpus: "Corpus",
             steps_budget_s: float, eval_budget_s: float, checkpoint_dir: Path | None) -> tuple[GroupCost, Any]:
    """`measure_group`, also returning the trainer (a measuring worker keeps it busy after)."""
    import torch

    from .core.checkpoint import FileCheckpointSink
    from .core.data import random_starts
    from .core.train import GroupTrainer

    torch.set_num_threads(threads)
    sync = _synchronizer(device)
    n = len(configs)
    options = TrainOptions(device=device)
    ids = [f"bench-{i}" for i in range(n)]
    sink = None if checkpoint_dir is None else FileCheckpointSink({rid: checkpoint_dir / f"run{i}" for i, rid in enumerate(ids)})
    t0 = time.perf_counter()
    trainer = GroupTrainer(list(configs), ids, lambda event: None, options, sink)
    trainer.setup(corpus)
    sync()
    setup_s = time.perf_counter() - t0
    cfg = trainer.cfg

    # Training steps: one or two warm-up steps (allocation, first-call costs), then timed
    # steps in doubling chunks, synchronised only at a chunk's end as the loop would be.
    t = time.perf_counter()
    trainer.train_step(cfg.lr)
    sync()
    if time.perf_counter() - t < steps_budget_s / 4:
        trainer.train_step(cfg.lr)
        sync()
    steps, steps_s, chunk = 0, 0.0, 1
    while steps < MIN_TIMED_STEPS or (steps_s < steps_budget_s and steps < MAX_TIMED_STEPS):
        t = time.perf_counter()
        for _ in range(chunk):
            trainer.train_step(cfg.lr)
        sync()
        steps_s += time.perf_counter() - t
        steps += chunk
        chunk = min(chunk * 2, 32)

    # Evaluation: the trainer's own window pass, as estimate_loss and exact_val_loss run it,
    # one chunk of the trainer's eval_windows at a time after a small warm-up chunk.
    val, T, per_chunk = corpus.val, cfg.block_size, trainer.eval_windows
    gen = torch.Generator().manual_seed(0)
    windows, eval_s = 0, 0.0
    trainer.model.eval()
    with torch.no_grad():
        trainer._window_sums(val, random_starts(val, min(per_chunk, 8), T, gen))
        sync()
        while windows == 0 or (eval_s < eval_budget_s and windows < MAX_EVAL_CHUNKS * per_chunk):
            starts = random_starts(val, per_chunk, T, gen)
            t = time.perf_counter()
            trainer._window_sums(val, starts)
            sync()
            eval_s += time.perf_counter() - t
            windows += per_chunk
    trainer.model.train()

    checkpoint_s = 0.0
    if sink is not None:  # every evaluation after step 0 writes each run's checkpoint
        trainer.t0, trainer.start_step = time.perf_counter(), trainer.step  # set by train() in a run
        t = time.perf_counter()
        trainer.checkpoint()
        checkpoint_s = time.perf_counter() - t

    cost = GroupCost(
        step_s=steps_s / steps, window_s=eval_s / windows, setup_s=setup_s, checkpoint_s=checkpoint_s,
        exact_windows=exact_windows(len(val), T), dtype=str(getattr(trainer, "dtype", cfg.dtype)),
        steps_timed=steps, windows_timed=windows,
    )
    return cost, trainer


def measure_group(configs: Sequence[RunConfig], device: str, threads: int, corpus: "Corpus",
                  steps_budget_s: float = STEPS_BUDGET_S, eval_budget_s: float | None = None,
                  checkpoint_dir: Path | None = None) -> GroupCost:
    """Time one group of this shape and size here, in this process, with `threads` threads.

    Builds a real `GroupTrainer` (so every change to the model or the loop is measured),
    times warm-up then at least MIN_TIMED_STEPS `train_step`s for about `steps_budget_s`,
    the evaluation forward (`_window_sums`) over one to MAX_EVAL_CHUNKS chunks of windows,
    and, with `checkpoint_dir`, one checkpoint of every run.
    """
    budget = steps_budget_s * EVAL_BUDGET_SHARE if eval_budget_s is None else eval_budget_s
    return _measure(configs, device, threads, corpus, steps_budget_s, budget, checkpoint_dir)[0]


def _stdio_captured() -> bool:
    """Whether sys.stderr is not a real file (the TUI captures it): then measuring processes
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


def _measuring_worker(index: int, spec: WorkerSpec, parent_pid: int, tasks: Any, results: Any, stop: Any,
                      steps_budget_s: float, eval_budget_s: float, scratch: str, quiet: bool) -> None:
    """Body of a measuring process: measure the shapes it is handed; between the last one and
    the stop signal, keep training (a launch's worker would be busy, so the others measure
    under the same load). `quiet`: write nothing to the inherited terminal (under the TUI)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    if quiet:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    from .workers.local import _die_with_parent

    _die_with_parent(parent_pid)
    import torch

    from .core.data import get_corpus
    from .core.train import GroupTrainer  # imported at start, as a launch's worker imports it

    torch.set_num_threads(spec.threads)
    results.put(("ready", index, None))
    trainer = None
    corpora: dict[str, Any] = {}
    count = 0
    while True:
        task = tasks.get()
        if task is None:
            return
        if task[0] == "fill":
            while trainer is not None and not stop.is_set():
                trainer.train_step(trainer.cfg.lr)
            stop.wait()
            continue
        _, key, config_dicts = task
        try:
            configs = [RunConfig.from_dict(c) for c in config_dicts]
            trainer = None  # free the last group's memory first
            once_s = 0.0
            t = time.perf_counter()
            corpus = corpora.get(configs[0].data)
            if corpus is None:  # a worker loads each corpus once
                corpus = corpora[configs[0].data] = get_corpus(configs[0].data)
            if count == 0:  # a worker's first setup also pays lazy initialisation: once per worker
                GroupTrainer(configs, [""] * len(configs), lambda event: None, TrainOptions(device=spec.device),
                             None).setup(corpus)
            once_s = time.perf_counter() - t
            count += 1
            folder = Path(scratch) / f"w{index}-{count}"
            cost, trainer = _measure(configs, spec.device, spec.threads, corpus, steps_budget_s, eval_budget_s, folder)
            once_s = max(0.0, once_s - (cost.setup_s if count == 1 else 0.0))
            results.put(("cost", index, (key, GroupCost(**{**cost.__dict__, "once_s": once_s}))))
        except Exception as exc:  # reported as one line; the parent stops measuring
            results.put(("error", index, f"{type(exc).__name__}: {exc}"))
            return


def measure_groups(groups: dict[tuple, list[RunConfig]], workers: Sequence[WorkerSpec], *,
                   steps_budget_s: float = STEPS_BUDGET_S, on_measured: Callable[[int, int], None] | None = None,
                   cancel: threading.Event | None = None) -> tuple[dict[tuple, GroupCost], float]:
    """Measure each group shape in one of len(workers) concurrent processes, each with its
    worker's device and thread count, as a launch would run them side by side.

    Shapes go to whichever process is free, the most expensive first. With fewer shapes than
    processes, shapes are measured more than once, side by side, and the results averaged;
    a process with nothing left to measure keeps training until all are done. Returns
    (cost per shape key, a worker's start-up seconds: spawn, imports, corpus).
    """
    ctx = mp.get_context("spawn")  # as the launch's workers (and CUDA-safe)
    quiet = _stdio_captured()
    if quiet:
        _start_resource_tracker()
    order = sorted(groups, key=lambda k: -rough_seconds(groups[k]))
    tasks = (order + [order[i % len(order)] for i in range(len(order), len(workers))]) if order else []
    measured: dict[tuple, list[GroupCost]] = {}
    results = ctx.Queue()
    stop = ctx.Event()
    eval_budget_s = steps_budget_s * EVAL_BUDGET_SHARE
    procs: list[Any] = []
    queues: list[Any] = []
    ready: dict[int, float] = {}
    finished = False
    with tempfile.TemporaryDirectory(prefix="dropres-bench-") as scratch:
        t_spawn = time.perf_counter()
        try:
            for i, spec in enumerate(workers):
                q = ctx.SimpleQueue()
                p = ctx.Process(target=_measuring_worker, name=f"dropres-bench-{i}", daemon=True,
                                args=(i, spec, os.getpid(), q, results, stop, steps_budget_s, eval_budget_s, scratch, quiet))
                p.start()
                procs.append(p)
                queues.append(q)
            outstanding = len(tasks)
            for q in queues:
                if tasks:
                    key = tasks.pop(0)
                    q.put(("measure", key, [c.to_dict() for c in groups[key]]))
            while outstanding:
                if cancel is not None and cancel.is_set():
                    raise BenchCancelled()
                try:
                    kind, index, payload = results.get(timeout=0.2)
                except queue.Empty:
                    dead = [p for p in procs if not p.is_alive()]
                    if dead:
                        raise BenchError(f"a measuring process exited unexpectedly (exit code {dead[0].exitcode})") from None
                    continue
                if kind == "ready":
                    ready[index] = time.perf_counter() - t_spawn
                elif kind == "error":
                    raise BenchError(f"measuring failed: {payload}")
                elif kind == "cost":
                    key, cost = payload
                    measured.setdefault(key, []).append(cost)
                    outstanding -= 1
                    if on_measured is not None:
                        on_measured(len(groups) - len([k for k in groups if k not in measured]), len(groups))
                    if tasks:
                        key = tasks.pop(0)
                        queues[index].put(("measure", key, [c.to_dict() for c in groups[key]]))
                    else:
                        queues[index].put(("fill",))
            finished = True
        finally:
            stop.set()
            for p, q in zip(procs, queues):
                if finished and p.is_alive():
                    q.put(None)
            deadline = time.monotonic() + (5.0 if finished else 0.0)
            for p in procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            results.close()
            results.join_thread()
    costs = {key: GroupCost.mean(found) for key, found in measured.items()}
    startup_s = max(ready.values(), default=0.0) + max((c.once_s for c in costs.values()), default=0.0)
    return costs, startup_s


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
                        "checkpoint_s": c.checkpoint_s * scale})


def bench_suite(specs: Sequence[RunSpec], device: str = "auto", workers: int | None = None,
                group_size: int | None = None, *, cuda_devices: int | None = None,
                steps_budget_s: float = STEPS_BUDGET_S,
                progress: Callable[[Plan, int, int], None] | None = None,
                cancel: threading.Event | None = None) -> Prediction:
    """Plan `specs` as a launch would, measure every group shape they make, predict the wall time.

    `progress(plan, measured, total)` is called once the plan is known and after each shape;
    setting `cancel` stops measuring (BenchCancelled). The device must have been checked
    (`check_device`); corpora problems raise DataError before anything is measured.
    """
    from .launch import check_corpora
    from .workers.scheduler import cuda_device_count

    if not specs:
        raise BenchError("no runs to measure")
    check_corpora(list(specs))
    cuda = cuda_device_count() if cuda_devices is None else cuda_devices
    started = time.perf_counter()
    plan = plan_suite(specs, device, workers, group_size, cuda)
    shapes: dict[tuple, list[RunConfig]] = {}
    for group in plan.groups:
        shapes.setdefault(shape_key([r.config for r in group]), [r.config for r in group])
    if progress is not None:
        progress(plan, 0, len(shapes))
    costs, startup_s = measure_groups(
        shapes, plan.workers, steps_budget_s=steps_budget_s, cancel=cancel,
        on_measured=None if progress is None else (lambda done, total: progress(plan, done, total)))

    def seconds(group: list[PlannedRun]) -> float:
        return group_time(group[0].config, _cost_for(shape_key([r.config for r in group]), costs)).total_s

    schedule = simulate_schedule(plan.runs, len(plan.workers), plan.group_size, seconds)
    for slot in schedule:
        key = shape_key([r.config for r in slot.group])
        costs.setdefault(key, _cost_for(key, costs))
    return Prediction(plan, costs, schedule, startup_s, time.perf_counter() - started,
                      plan.workers[0].threads if plan.workers else 1)


__all__ = [
    "BenchCancelled", "BenchError", "GroupCost", "GroupTime", "Plan", "PlannedRun", "Prediction", "Slot",
    "bench_suite", "evaluations", "exact_windows", "group_time", "makespan", "measure_group",
    "measure_groups", "plan_suite", "plan_text", "rough_seconds", "shape_key", "simulate_schedule",
]
