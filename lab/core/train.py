"""The training loop for one group of configurations, nanoGPT-equivalent.

`train_group` trains N compatible configurations as one batched model (N = 1 for a single
run). It reports everything through `emit(event)` with the typed events of `events.py`,
hands each run's checkpoint to the `CheckpointSink` it is given (checkpoint.py), resumes from
what that sink gives back so a resumed run continues the same curve, and always ends every
run with exactly one terminal event (Finished, Diverged, Stopped or Failed).

Random streams (DESIGN.md section 2): initialisation from each configuration's own seed;
training batches from the group's `data_seed`; evaluation windows from their own generator;
dropout masks from the global generator, seeded by the configuration's seed (N = 1) or by the
group's seeds together. At zero dropout no mask is ever drawn, so a configuration trained in
any group gives the same losses as trained alone.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from typing import Callable, Iterator

import torch

from . import events as ev
from .checkpoint import (BackgroundSaves, CheckpointError, CheckpointSink, encode_checkpoint, load_newest,
                         load_run_weights)
from .config import EVAL_WINDOW_CONFIGS, RunConfig, TrainOptions, lr_at  # noqa: F401  (re-exported)
from .data import Corpus, DataError, get_corpus, get_batch, random_starts, window_batch
from .model import Decoder, config_losses, token_losses
from .optim import FusedAdamW
from .precision import DtypeChoice, choose_dtype

EVAL_SEED_OFFSET = 0x5EED_E7A1  # evaluation windows: a stream of their own


def mask_seed(configs: list[RunConfig]) -> int:
    """Seed of the dropout-mask stream: the run's own seed alone, the group's seeds together."""
    if len(configs) == 1:
        return configs[0].seed
    acc = 0
    for c in configs:
        acc = (acc * 1_000_003 + c.seed) % (2**63 - 1)
    return acc


def clip_per_config(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """nanoGPT's clip_grad_norm_, but a separate total norm per configuration: returns [N]."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [P, N]
    total = torch.linalg.vector_norm(norms, dim=0)  # [N]
    if max_norm > 0:
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return total


class EvaluationStopped(Exception):
    """A stop request seen between steps or between the chunks of an evaluation."""


class GroupTrainer:
    """State of one group in training: model, optimiser, generators and each run's history."""

    def __init__(self, configs: list[RunConfig], run_ids: list[str], emit: Callable[[ev.Event], None],
                 options: TrainOptions, checkpoints: CheckpointSink | None):
        keys = {c.group_key() for c in configs}
        if len(keys) != 1:
            raise ValueError("configurations in one group must agree on every setting but rates and seed")
        self.configs = configs
        self.cfg = configs[0]
        self.run_ids = run_ids
        self.emit = emit
        self.options = options
        self.checkpoints = checkpoints
        self.saves = None if checkpoints is None else BackgroundSaves(checkpoints)
        self.device = torch.device(options.device)
        self.n = len(configs)
        per_forward = EVAL_WINDOW_CONFIGS.get(self.device.type, EVAL_WINDOW_CONFIGS["cpu"])
        self.eval_windows = options.eval_batch_windows or max(1, per_forward // self.n)
        given = options.dtype_choice  # resolved by the driver before its workers started
        self._use_dtype(given if given is not None and given.setting == self.cfg.dtype
                        else choose_dtype(self.cfg.dtype, self.device, self.cfg))

    def _use_dtype(self, choice: DtypeChoice) -> None:
        self.dtype_choice = choice
        self.dtype = choice.dtype
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")
        self.should_stop: Callable[[], bool] = lambda: False  # set by `train`

    # -- setup -------------------------------------------------------------------------------
    def setup(self, corpus: Corpus) -> None:
        t_setup = time.perf_counter()
        cfg, n = self.cfg, self.n
        self.corpus = corpus
        corpus.check_block_size(cfg.block_size)
        self.model = Decoder(self.configs, corpus.vocab_size)
        self.params = list(self.model.parameters())
        self.names = [name for name, _ in self.model.named_parameters()]
        self.data_gen = torch.Generator().manual_seed(cfg.data_seed)
        self.eval_gen = torch.Generator().manual_seed(cfg.data_seed + EVAL_SEED_OFFSET)
        torch.manual_seed(mask_seed(self.configs))
        self.evals: list[list[list[float]]] = [[] for _ in range(n)]  # per run: [step, train, val, lr]
        self.step = 0
        self.last_eval_step = -1
        self.wall_before = 0.0
        states = self._load_checkpoints()
        self.model.to(self.device)
        self.optimizer = FusedAdamW(self.model.decay_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        if states:
            self._restore_optimizer(states)
        self.active = [True] * n  # False once a run has diverged
        self.active_mask = torch.ones(n, dtype=torch.bool, device=self.device)
        # Seconds spent in each part of the group's life, reported in Finished (where the time goes).
        self.phase_s: dict[str, float] = {"setup": time.perf_counter() - t_setup, "evaluations": 0.0,
                                          "exact": 0.0, "checkpoints": 0.0}

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the seconds of the block to `phase_s[phase]`."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phase_s[phase] += time.perf_counter() - t

    def _load_checkpoints(self) -> list[dict] | None:
        if self.checkpoints is None:
            return None
        found = [load_newest(self.checkpoints.saved(rid), warn=lambda m, i=i: self._warn(i, m))
                 for i, rid in enumerate(self.run_ids)]
        if all(s is None for s in found):
            return None
        steps = {None if s is None else s["step"] for s in found}
        if len(steps) != 1:
            raise CheckpointError("runs resuming from different steps cannot train as one group; use --group-size 1")
        for cfg, state in zip(self.configs, found):
            if state["config"] != cfg.to_dict():
                raise CheckpointError("checkpoint belongs to another configuration; refusing to load it (start over with --fresh)")
        # A run keeps the precision it started in (checkpoints before issue 12 did not say:
        # they resume in what the setting resolves to now).
        started_in = {s["dtype"] for s in found if "dtype" in s}
        if len(started_in) > 1:
            raise CheckpointError("runs that started in different precisions cannot train as one group; use --group-size 1")
        if started_in:
            self._use_dtype(self.dtype_choice.kept(started_in.pop()))
        for i, state in enumerate(found):
            load_run_weights(self.model, i, state)
        first = found[0]
        self.step = first["step"]
        self.last_eval_step = first["history"]["last_eval_step"]
        self.wall_before = first["history"]["wall_s"]
        self.evals = [s["history"]["evals"] for s in found]
        self.data_gen.set_state(first["rng"]["data"])
        self.eval_gen.set_state(first["rng"]["eval"])
        torch.set_rng_state(first["rng"]["mask"])
        if self.device.type == "cuda" and "mask_cuda" in first["rng"]:
            torch.cuda.set_rng_state(first["rng"]["mask_cuda"], self.device)
        return found

    def _restore_optimizer(self, states: list[dict]) -> None:
        if states[0]["optim"] is None:  # checkpoint written before the first step
            return
        for name, p in zip(self.names, self.params):
            slots = [s["optim"][name] for s in states]
            self.optimizer.state[p] = {
                "step": torch.tensor(float(slots[0]["step"]), device=self.device if self.device.type == "cuda" else "cpu"),
                "exp_avg": torch.stack([s["exp_avg"] for s in slots]).to(self.device),
                "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in slots]).to(self.device),
            }

    def _warn(self, i: int, message: str) -> None:
        self.emit(ev.Warned(self.run_ids[i], self.step, message))

    # -- pieces of the loop ----------------------------------------------------------------
    def run_state(self, i: int, finished: bool) -> dict:
        """Everything needed to resume run i alone or in another group, as plain tensors."""
        optim = None
        if self.optimizer.state:
            optim = {}
            for name, p in zip(self.names, self.params):
                st = self.optimizer.state[p]
                optim[name] = {"step": float(st["step"]), "exp_avg": st["exp_avg"][i].detach().cpu().clone(),
                               "exp_avg_sq": st["exp_avg_sq"][i].detach().cpu().clone()}
        rng = {"data": self.data_gen.get_state(), "eval": self.eval_gen.get_state(), "mask": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["mask_cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.configs[i].to_dict(),
            "step": self.step,
            "finished": finished,
            "vocab": list(self.corpus.chars),
            "corpus_sha256": self.corpus.sha256,
            "dtype": self.dtype,  # what "auto" resolved to where it started: a resumed run keeps it
            "model": {name: p[i].detach().cpu().clone() for name, p in zip(self.names, self.params)},
            "optim": optim,
            "rng": rng,
            "history": {"evals": self.evals[i], "last_eval_step": self.last_eval_step, "wall_s": self.wall_s()},
        }

    def checkpoint(self, finished: bool = False) -> None:
        """Hand every active run's state to the sink, which writes it while training goes on;
        `report_saves` reports each once the sink has it durable."""
        if self.saves is None:
            return
        for i in range(self.n):
            if self.active[i]:
                self.saves.submit(self.run_ids[i], self.step, encode_checkpoint(self.run_state(i, finished)))

    def report_saves(self, wait: bool = False) -> None:
        """Emit Checkpointed for every checkpoint made durable since the last call (with `wait`,
        once all handed over are); a failed write raises here, in the training thread."""
        if self.saves is None:
            return
        for rid, step, where in (self.saves.settle() if wait else self.saves.done()):
            self.emit(ev.Checkpointed(rid, step, where))
        self.saves.raise_failure()

    def wall_s(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t0)

    def tokens_per_s(self) -> float:
        elapsed = time.perf_counter() - self.t0
        done = (self.step - self.start_step) * self.cfg.batch_size * self.cfg.block_size
        return done / elapsed if elapsed > 0 else 0.0

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, torch.Tensor]:
        """Mean loss over eval_iters random batches per split, in eval mode: {split: [N]}.

        A stop request between chunks abandons it (`EvaluationStopped`) with the evaluation
        generator put back, so the evaluation redone on resume draws the same windows."""
        cfg = self.cfg
        eval_state = self.eval_gen.get_state()
        self.model.eval()
        out = {}
        try:
            for split in ("train", "val"):
                data = self.corpus.split(split)
                starts = random_starts(data, cfg.eval_iters * cfg.batch_size, cfg.block_size, self.eval_gen)
                out[split] = (self._window_sums(data, starts).sum(dim=1) / (len(starts) * cfg.block_size)).cpu()
        except EvaluationStopped:
            self.eval_gen.set_state(eval_state)
            raise
        finally:
            self.model.train()
        return out

    def _window_sums(self, data: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Summed token loss of every window (no grad, eval mode): [N, windows], in fp32.

        Windows go through the model `eval_windows` at a time, but the sums are added up
        only once all are in, so the result does not depend on that batch size.
        """
        T = self.cfg.block_size
        sums = []
        for k, chunk in enumerate(starts.split(self.eval_windows)):
            if k and self.should_stop():  # an evaluation can take minutes: a stop must not wait for it
                raise EvaluationStopped()
            x, y = (t.to(self.device) for t in window_batch(data, chunk, T))
            with self.amp:
                sums.append(token_losses(self.model(x), y).sum(dim=2))
        return torch.cat(sums, dim=1)

    @torch.no_grad()
    def exact_val_loss(self) -> torch.Tensor:
        """Validation loss with every position of the split predicted exactly once: [N]."""
        T = self.cfg.block_size
        val = self.corpus.val
        targets = len(val) - 1
        starts = torch.arange(0, targets - T + 1, T)
        covered = int(starts[-1]) + T
        self.model.eval()
        try:
            total = self._window_sums(val, starts).sum(dim=1)
            rest = targets - covered
            if rest > 0:
                x, y = (t.to(self.device) for t in window_batch(val, torch.tensor([targets - T]), T))
                with self.amp:
                    total += token_losses(self.model(x), y)[:, :, -rest:].sum(dim=(1, 2))
        finally:
            self.model.train()
        return (total / targets).cpu()

    def evaluate(self) -> None:
        losses = self.estimate_loss()
        lr = lr_at(self.cfg, self.step)
        for i in range(self.n):
            if not self.active[i]:
                continue
            tr, va = float(losses["train"][i]), float(losses["val"][i])
            if not (math.isfinite(tr) and math.isfinite(va)):
                kind = "NaN" if math.isnan(tr) or math.isnan(va) else "infinite"
                self.diverge(i, self.step, f"evaluation loss became {kind}")
                continue
            self.evals[i].append([self.step, tr, va, lr])
            self.emit(ev.Evaluated(self.run_ids[i], self.step, tr, va, lr))
        self.last_eval_step = self.step

    def diverge(self, i: int, step: int, reason: str) -> None:
        """End run i as diverged and park its slice at zero so it cannot disturb the others."""
        self.report_saves(wait=True)  # its checkpoints still being written are reported first
        self.active[i] = False
        self.active_mask[i] = False
        with torch.no_grad():
            for p in self.params:
                p[i].zero_()
                st = self.optimizer.state.get(p)
                if st:
                    st["exp_avg"][i].zero_()
                    st["exp_avg_sq"][i].zero_()
        self.emit(ev.Diverged(self.run_ids[i], step, f"{reason} at step {step}"))

    def flush_logs(self, pending: list[torch.Tensor], lr: float) -> None:
        """Bring the losses of the last steps to the host, detect divergence, emit StepLogged."""
        losses = torch.stack(pending).float().cpu()  # [steps, N]
        first_step = self.step - len(pending) + 1
        tps = self.tokens_per_s()
        for i in range(self.n):
            if not self.active[i]:
                continue
            bad = (~torch.isfinite(losses[:, i])).nonzero()
            if len(bad):
                s = first_step + int(bad[0])
                kind = "NaN" if math.isnan(float(losses[int(bad[0]), i])) else "infinite"
                self.diverge(i, s, f"training loss became {kind}")
                continue
            self.emit(ev.StepLogged(self.run_ids[i], self.step, float(losses[-1, i]), lr, tps))

    def train_step(self, lr: float) -> torch.Tensor:
        """One optimiser step on the next training batch; returns the [N] losses, on device."""
        cfg, model, opt = self.cfg, self.model, self.optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device, non_blocking=True) for t in get_batch(self.corpus, "train", cfg.batch_size, cfg.block_size, self.data_gen))
        with self.amp:
            losses = config_losses(model(x), y)  # [N]
        total = torch.where(self.active_mask, losses, torch.zeros_like(losses)).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        clip_per_config(self.params, cfg.grad_clip)
        opt.step()
        self.step += 1
        return losses.detach()

    def stop(self, pending: list[torch.Tensor], lr: float) -> None:
        """Honour a stop request: report the steps taken, checkpoint at this step (an
        evaluation in progress is not recorded; `last_eval_step` still says it is due, so a
        resume does it again) and end every active run as stopped."""
        if pending:
            self.flush_logs(pending, lr)
        self.checkpoint()
        self.report_saves(wait=True)
        for i in range(self.n):
            if self.active[i]:
                self.emit(ev.Stopped(self.run_ids[i], self.step))

    # -- the loop ----------------------------------------------------------------------------
    def train(self, should_stop: Callable[[], bool]) -> None:
        cfg, model = self.cfg, self.model
        self.t0 = time.perf_counter()
        self.start_step = self.step
        n_params = model.n_params()
        for i in range(self.n):
            self.emit(ev.Started(self.run_ids[i], self.step, cfg.max_iters, n_params, str(self.device), self.dtype,
                                 self.n, os.getpid(), self.dtype_choice.describe()))
        self.should_stop = should_stop
        pending: list[torch.Tensor] = []
        lr = lr_at(cfg, self.step)
        model.train()
        try:
            while self.step < cfg.max_iters:
                if self.step % cfg.eval_interval == 0 and self.step != self.last_eval_step:
                    with self.timed("evaluations"):
                        self.evaluate()
                    if self.step > 0:
                        with self.timed("checkpoints"):
                            self.checkpoint()
                    if not any(self.active):
                        return
                if should_stop():
                    raise EvaluationStopped()  # between steps: the same way out as from an evaluation
                lr = lr_at(cfg, self.step)
                pending.append(self.train_step(lr))
                self.report_saves()  # each step: the store learns of a durable checkpoint at once
                if self.step % self.options.log_interval == 0 or self.step == cfg.max_iters:
                    self.flush_logs(pending, lr)
                    pending = []
                    if not any(self.active):
                        return
            if self.last_eval_step != self.step:  # a resume after a stop in the exact pass has it
                with self.timed("evaluations"):
                    self.evaluate()
            if not any(self.active):
                return
            with self.timed("checkpoints"):
                self.checkpoint(finished=True)  # written while the exact pass runs
            with self.timed("exact"):
                exact = self.exact_val_loss()
        except EvaluationStopped:
            self.stop(pending, lr)
            return
        with self.timed("checkpoints"):
            self.report_saves(wait=True)
        wall, tps = self.wall_s(), self.tokens_per_s()
        phases = dict(self.phase_s, steps=time.perf_counter() - self.t0 - sum(
            v for k, v in self.phase_s.items() if k != "setup"))
        for i in range(self.n):
            if not self.active[i]:
                continue
            vals = [e[2] for e in self.evals[i]]
            self.emit(ev.Finished(self.run_ids[i], self.step, vals[-1], min(vals), self.evals[i][-1][1],
                                  float(exact[i]), wall, tps, phases))


def failure_reason(exc: BaseException, group_size: int) -> str:
    """One line for a failed group, with advice where there is some."""
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        if group_size > 1:
            return f"out of memory; retry with a smaller --group-size (this group had {group_size})"
        return "out of memory with the run alone in its group; use a smaller batch_size, block_size or model"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return (f"cannot write a checkpoint: {exc.strerror}; free disk space (or fix the store folder), "
                "then rerun to resume from the last good checkpoint")
    if isinstance(exc, (DataError, CheckpointError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def train_group(
    configs: list[RunConfig],
    run_ids: list[str],
    emit: Callable[[ev.Event], None],
    options: TrainOptions | None = None,
    checkpoints: CheckpointSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    corpus: Corpus | None = None,
) -> None:
    """Train a group of compatible configurations; every run ends with one terminal event.

    With a `checkpoints` sink the group checkpoints every run at every evaluation, on stop and
    at the end, and resumes from the newest readable checkpoint the sink gives back.
    """
    options = options or TrainOptions()
    should_stop = should_stop or (lambda: False)
    ended: set[str] = set()

    def emit_tracking(event: ev.Event) -> None:
        if isinstance(event, ev.TERMINAL):
            ended.add(event.run_id)
        emit(event)

    trainer = GroupTrainer(list(configs), list(run_ids), emit_tracking, options, checkpoints)
    try:
        trainer.setup(corpus or get_corpus(trainer.cfg.data))
        trainer.train(should_stop)
    except Exception as exc:
        reason = failure_reason(exc, len(configs))
        if getattr(trainer, "saves", None) is not None:
            try:  # checkpoints made durable before the failure still count
                trainer.report_saves(wait=True)
            except Exception:  # noqa: BLE001  the failure being reported is the one that matters
                pass
        step = getattr(trainer, "step", 0)
        for rid in run_ids:
            if rid not in ended:
                emit_tracking(ev.Failed(rid, step, reason))
