"""Typed training events: the only thing the core tells the outside world.

The training loop emits these through a callback; workers forward them over a queue to the
driver, which writes the store; the headless view renders from them. They are plain frozen
dataclasses so they pickle across processes. `run_id` is whatever identifier the caller
gave the run when it started the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Started:
    run_id: str
    step: int  # 0 for a fresh run, the checkpoint's step for a resumed one
    max_iters: int
    n_params: int
    device: str
    dtype: str
    group_size: int
    pid: int = 0  # the process training the group
    dtype_note: str = ""  # how dtype was decided: "dtype auto: float32, bf16 measured 0.62x on this CPU (...)"
    node: str = ""  # the cluster node it trains on (an executor across machines fills it in)


@dataclass(frozen=True)
class StepLogged:
    """Training progress, emitted every log interval (losses are gathered then, not per step)."""

    run_id: str
    step: int  # optimiser steps completed
    train_loss: float  # loss of the last batch
    lr: float
    tokens_per_s: float  # this run's own tokens per second of group wall time


@dataclass(frozen=True)
class Evaluated:
    run_id: str
    step: int
    train_loss: float  # mean over eval_iters random batches
    val_loss: float
    lr: float


@dataclass(frozen=True)
class Checkpointed:
    run_id: str
    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    run_id: str
    step: int
    final_val: float
    best_val: float
    final_train: float
    exact_val: float  # over the whole validation split, every position predicted once
    wall_s: float  # wall time of the group this run trained in
    tokens_per_s: float
    # Seconds of this session of the group by part: setup (model, optimiser), steps (training
    # steps and their logging), evaluations, exact (validation pass), checkpoints (training
    # waiting on them). Benchmarks read it to see where a run's time goes.
    phase_s: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Diverged:
    run_id: str
    step: int  # the step whose loss became NaN or infinite
    reason: str


@dataclass(frozen=True)
class Stopped:
    """Stopped on request after writing a checkpoint; resumable."""

    run_id: str
    step: int


@dataclass(frozen=True)
class Failed:
    run_id: str
    step: int
    reason: str


@dataclass(frozen=True)
class Warned:
    """Something the user should know that did not end the run (e.g. a damaged checkpoint skipped)."""

    run_id: str
    step: int
    message: str


Event = Started | StepLogged | Evaluated | Checkpointed | Finished | Diverged | Stopped | Failed | Warned

#: Events after which a run has ended (for this training session).
TERMINAL = (Finished, Diverged, Stopped, Failed)
