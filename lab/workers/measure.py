"""Timing one group on a worker: the measurement behind `dropres-lab bench` and the launch dialog.

A group of a given shape and size is built with the real `GroupTrainer` (so every change to
the model or the loop is measured) and timed for a few training steps, an evaluation forward
over a few chunks of windows (the trainer's own evaluation code) and a checkpoint, and
the worker's matmul peak in the group's dtype is measured beside it (`GroupCost.peak_fraction`).
`MeasureTask` does this on whichever worker an `Executor` hands it to, like a `GroupTask`,
so the benchmark measures the same worker processes a launch trains in; `measure_group` does
it in this process. Nothing here imports torch at module level: `lab.bench`, which the TUI
imports, reads `GroupCost` from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..core.config import RunConfig, TrainOptions

if TYPE_CHECKING:
    from ..core.data import Corpus
    from ..core.precision import DtypeChoice

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


@dataclass(frozen=True)
class GroupCost:
    """What one group of a given shape and size costs on this machine, under launch load."""

    step_s: float  # one optimiser step of the whole group
    window_s: float  # one evaluated window (no-grad forward of every configuration)
    setup_s: float  # GroupTrainer construction and setup (model, optimiser)
    checkpoint_s: float = 0.0  # handing every run's checkpoint to the writer (training waits this long)
    exact_windows: int = 0  # windows of the exact validation pass over the whole split
    once_s: float = 0.0  # a fresh worker's one-time costs: corpus load, first setup's lazy initialisation
    dtype: str = "float32"  # the precision in effect ("auto" resolved by the trainer)
    steps_timed: int = 0
    windows_timed: int = 0
    checkpoint_durable_s: float = 0.0  # until the written checkpoints are durable (overlaps training)
    flop_per_step: float = 0.0  # model FLOPs of one step of the group (lab.core.throughput)
    peak_flops: float = 0.0  # the worker's matmul peak in `dtype`, measured beside the others

    @property
    def achieved_flops(self) -> float:
        """FLOP/s of the group's training steps."""
        return self.flop_per_step / self.step_s if self.step_s > 0 else 0.0

    @property
    def peak_fraction(self) -> float:
        """Achieved FLOP/s of training steps as a fraction of the matmul peak (0 if unmeasured)."""
        return self.achieved_flops / self.peak_flops if self.peak_flops > 0 else 0.0

    @staticmethod
    def mean(costs: Sequence["GroupCost"]) -> "GroupCost":
        """Several measurements of one shape (taken side by side): their mean."""
        if len(costs) == 1:
            return costs[0]

        def avg(name: str) -> float:
            return sum(getattr(c, name) for c in costs) / len(costs)

        return GroupCost(avg("step_s"), avg("window_s"), avg("setup_s"), avg("checkpoint_s"),
                         costs[0].exact_windows, avg("once_s"), costs[0].dtype,
                         sum(c.steps_timed for c in costs), sum(c.windows_timed for c in costs),
                         avg("checkpoint_durable_s"), costs[0].flop_per_step, avg("peak_flops"))


def exact_windows(val_tokens: int, block_size: int) -> int:
    """Windows `GroupTrainer.exact_val_loss` evaluates: every position of the split once."""
    targets = val_tokens - 1
    count = (targets - block_size) // block_size + 1
    return count + (1 if targets - count * block_size > 0 else 0)


@dataclass(frozen=True)
class Measured:
    """A MeasureTask's result: the group's cost, measured on the worker that ran it."""

    cost: GroupCost


@dataclass(frozen=True)
class MeasureFailed:
    """A MeasureTask could not measure (the trainer raised): one line for the user."""

    reason: str


@dataclass(frozen=True)
class MeasureTask:
    """Time one group on a worker, then keep it training until the worker is told to stop.

    The keeping busy is the point of measuring side by side: a worker's speed depends on what
    the other workers do to the shared cores and memory, and in a launch they all train, so a
    worker with nothing left to measure goes on loading the machine while the others measure.
    Plain, picklable data only, like a GroupTask.
    """

    task_id: str
    configs: list[dict]  # RunConfig.to_dict() of each configuration of the group
    device: str
    steps_budget_s: float = STEPS_BUDGET_S
    eval_budget_s: float = STEPS_BUDGET_S * EVAL_BUDGET_SHARE
    checkpoint_dir: str | None = None  # where the timed checkpoint is written (the caller removes it)
    dtype_choice: "DtypeChoice | None" = None  # dtype "auto" resolved before the workers started

    def perform(self, emit: Callable[[object], None], should_stop: Callable[[], bool],
                load_corpus: "Callable[[], Corpus] | None" = None) -> None:
        """Emit Measured (or MeasureFailed), then train steps until `should_stop()`.

        `load_corpus`: how this worker gets the corpus when it has no copy of the file (a
        cluster node: from the bytes the driver shipped); None reads the configs' `data`.
        Either way its time counts in the worker's one-time costs."""
        try:
            cost, trainer = _measure_on_worker([RunConfig.from_dict(c) for c in self.configs],
                                               TrainOptions(device=self.device, dtype_choice=self.dtype_choice),
                                               self.steps_budget_s, self.eval_budget_s,
                                               None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
                                               load_corpus)
        except Exception as exc:  # reported as one line; the benchmark stops measuring
            emit(MeasureFailed(f"{type(exc).__name__}: {exc}"))
            return
        emit(Measured(cost))
        while not should_stop():
            trainer.train_step(trainer.cfg.lr)


#: Devices this process has already set a trainer up on: the first setup also pays lazy
#: initialisation (kernels, allocators), once per worker, which `GroupCost.once_s` reports.
_set_up_on: set[str] = set()


def _measure_on_worker(configs: list[RunConfig], options: TrainOptions, steps_budget_s: float, eval_budget_s: float,
                       checkpoint_dir: Path | None,
                       load_corpus: "Callable[[], Corpus] | None" = None) -> tuple[GroupCost, Any]:
    """`_measure` with the worker's one-time costs: loading the corpus (cached per process;
    `load_corpus` where it did not come from a file here) and, on its first group, a throwaway
    setup that pays lazy initialisation."""
    from ..core.data import get_corpus
    from ..core.train import GroupTrainer

    first = options.device not in _set_up_on
    t = time.perf_counter()
    corpus = load_corpus() if load_corpus is not None else get_corpus(configs[0].data)
    if first:
        GroupTrainer(configs, [""] * len(configs), lambda event: None, options, None).setup(corpus)
        _set_up_on.add(options.device)
    once_s = time.perf_counter() - t
    cost, trainer = _measure(configs, options, corpus, steps_budget_s, eval_budget_s, checkpoint_dir)
    once_s = max(0.0, once_s - (cost.setup_s if first else 0.0))  # less what every group's setup costs
    return GroupCost(**{**cost.__dict__, "once_s": once_s}), trainer


#: Matmul peaks this process has measured, by (device, dtype): measured once per worker.
_peaks: dict[tuple[str, str], float] = {}


def _matmul_peak(device: str, dtype: str) -> float:
    """This process's matmul peak in `dtype` on `device` (cached), with its torch threads; 0
    (not measured) for bf16 where the device emulates it (`native_matmul_peak`)."""
    if (device, dtype) not in _peaks:
        import torch

        from ..core.throughput import native_matmul_peak

        _peaks[(device, dtype)] = native_matmul_peak(getattr(torch, dtype), device) or 0.0
    return _peaks[(device, dtype)]


def _synchronizer(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _measure(configs: Sequence[RunConfig], options: TrainOptions, corpus: "Corpus", steps_budget_s: float,
             eval_budget_s: float, checkpoint_dir: Path | None) -> tuple[GroupCost, Any]:
    """`measure_group` with this process's torch threads, also returning the trainer (a
    measuring worker keeps it busy after)."""
    import torch

    from ..core.checkpoint import FileCheckpointSink
    from ..core.data import random_starts
    from ..core.throughput import train_flop_per_step
    from ..core.train import GroupTrainer

    sync = _synchronizer(options.device)
    n = len(configs)
    ids = [f"bench-{i}" for i in range(n)]
    sink = None
    if checkpoint_dir is not None:
        sink = FileCheckpointSink({rid: checkpoint_dir / f"run{i}" for i, rid in enumerate(ids)})
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

    checkpoint_s = checkpoint_durable_s = 0.0
    if sink is not None:  # every evaluation after step 0 writes each run's checkpoint
        trainer.t0, trainer.start_step = time.perf_counter(), trainer.step  # set by train() in a run
        t = time.perf_counter()
        trainer.checkpoint()
        checkpoint_s = time.perf_counter() - t  # what training waits for
        trainer.report_saves(wait=True)  # the writes run on a thread while training goes on
        checkpoint_durable_s = time.perf_counter() - t

    dtype = str(getattr(trainer, "dtype", cfg.dtype))
    cost = GroupCost(
        step_s=steps_s / steps, window_s=eval_s / windows, setup_s=setup_s, checkpoint_s=checkpoint_s,
        exact_windows=exact_windows(len(val), T), dtype=dtype, steps_timed=steps, windows_timed=windows,
        checkpoint_durable_s=checkpoint_durable_s,
        flop_per_step=train_flop_per_step(cfg, corpus.vocab_size, n), peak_flops=_matmul_peak(options.device, dtype),
    )
    return cost, trainer


def measure_group(configs: Sequence[RunConfig], device: str, threads: int, corpus: "Corpus",
                  steps_budget_s: float = STEPS_BUDGET_S, eval_budget_s: float | None = None,
                  checkpoint_dir: Path | None = None) -> GroupCost:
    """Time one group of this shape and size here, in this process, with `threads` threads.

    Times warm-up then at least MIN_TIMED_STEPS `train_step`s for about `steps_budget_s`,
    the evaluation forward (`_window_sums`) over one to MAX_EVAL_CHUNKS chunks of windows,
    and, with `checkpoint_dir`, one checkpoint of every run.
    """
    import torch

    torch.set_num_threads(threads)
    budget = steps_budget_s * EVAL_BUDGET_SHARE if eval_budget_s is None else eval_budget_s
    return _measure(configs, TrainOptions(device=device), corpus, steps_budget_s, budget, checkpoint_dir)[0]
