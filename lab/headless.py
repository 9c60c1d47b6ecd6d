"""`dropres-lab run --headless`: a driver in the foreground with Rich progress.

It checks everything a user can get wrong before writing anything (the experiments file, the
corpus, the device, the store lock), enqueues the chosen runs, drives them to the end with
the shared driver and workers, renders progress from the driver's own events, and prints the
comparative results table. On a terminal progress is a live table; otherwise (CI, pipes, log
files) it is plain timestamped lines at a modest rate, with no control codes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Mapping

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .core import events as ev
from .core.config import check_config
from .experiments import Experiments, RunSpec, resolve_data
from .formatting import counted, fmt_duration, fmt_loss, fmt_rate, sparkline, status_style
from .launch import check_corpora, enqueue_specs
from .store import RunRow, Store, resolve_store_dir
from .workers.scheduler import check_device, cuda_device_count
from .workers.settings import DriverSettings
from .workers.startup import DriverSession, StopSignals

PLAIN_STEP_EVERY_S = 10.0  # at most one step line per run this often in plain output
LIVE_ROWS = 40  # the most runs the live table lists (it counts the rest by status)


class HeadlessError(Exception):
    """A user mistake found before anything ran: one line, exit code 2."""


def override_specs(specs: list[RunSpec], max_iters: int | None, data: str | None,
                   dtype: str | None = None) -> list[RunSpec]:
    """Apply --max-iters / --data / --dtype to every run; the changed settings make new run
    identities (a run keeps the precision it started in, so another dtype is another run).

    A relative --data path is relative to the working folder, as command-line paths are."""
    if data is not None:
        data = resolve_data(data, os.getcwd())
    changes = {k: v for k, v in (("max_iters", max_iters), ("data", data), ("dtype", dtype)) if v is not None}
    if not changes:
        return specs
    if specs:  # the same values for every run, and in no cross-key rule: checked once, with the first
        cfg = dataclasses.replace(specs[0].config, **changes)
        values = cfg.to_dict()
        values["skips"] = dict(cfg.skips)
        problems = check_config(values)
        if problems:
            raise HeadlessError(f"{specs[0].run_key}: " + "; ".join(m for _, m in problems))
    return [dataclasses.replace(spec, config=dataclasses.replace(spec.config, **changes)) for spec in specs]


@dataclass
class RunProgress:
    """What the headless view knows about one run: the store's record when the view starts,
    then the driver's events."""

    label: str
    max_iters: int
    tokens_per_step: int
    status: str = "queued"
    step: int = 0
    train: float | None = None
    val: float | None = None
    vals: list[float] = field(default_factory=list)
    tokens_per_s: float = 0.0
    device: str = ""
    note: str = ""
    last_plain: float = 0.0
    ended_at: float = 0.0  # monotonic time the run ended in this view; 0 while it has not

    def eta_s(self) -> float | None:
        if self.status != "running" or self.tokens_per_s <= 0:
            return None
        return (self.max_iters - self.step) * self.tokens_per_step / self.tokens_per_s


class ProgressView:
    """Turns driver events into a live table (terminal) or timestamped lines (anything else).

    A resumed run starts from what the store recorded (its step, last losses and val
    evaluations), so its row is not blank until its next evaluation."""

    def __init__(self, console: Console, rows: list[RunRow], plain: bool,
                 recorded_vals: Mapping[str, list[float]] | None = None):
        self.console = console
        self.plain = plain
        self.dtype_notes: set[str] = set()  # how dtype "auto" was decided, each said once
        recorded_vals = recorded_vals or {}
        self.runs = {}
        for r in rows:
            vals = list(recorded_vals.get(r.run_id, ()))
            self.runs[r.run_id] = RunProgress(
                f"{r.suite}/{r.name}", r.max_iters, r.config.batch_size * r.config.block_size, status=r.status,
                step=r.step, train=r.last_train_loss if r.step else None,
                val=vals[-1] if vals else (r.last_val_loss if r.step else None), vals=vals)
        self.live: Live | None = None
        self.drawn_at = 0.0

    def __enter__(self) -> "ProgressView":
        if not self.plain:
            self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.live is not None:
            self.live.console.print(f"{stamp} {text}", markup=False, highlight=False)
        else:
            self.console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)

    def on_event(self, event: object) -> None:
        run = self.runs.get(getattr(event, "run_id", None))
        if run is None:
            return
        if isinstance(event, ev.Started):
            run.status, run.step, run.device = "running", event.step, event.device
            how = "resumed at step" if event.step else "started,"
            where = f"{event.device} of node {event.node}" if event.node else event.device
            self.line(f"{run.label} {how} {event.step}/{event.max_iters} on {where} "
                      f"(group of {event.group_size}, {event.n_params:,} parameters)")
            if event.dtype_note and event.dtype_note not in self.dtype_notes:  # once, not once per run
                self.dtype_notes.add(event.dtype_note)
                self.line(event.dtype_note)
        elif isinstance(event, ev.StepLogged):
            run.step, run.train, run.tokens_per_s = event.step, event.train_loss, event.tokens_per_s
            now = time.monotonic()
            if self.plain and now - run.last_plain >= PLAIN_STEP_EVERY_S:
                run.last_plain = now
                self.line(f"{run.label} step {run.step}/{run.max_iters} train {fmt_loss(event.train_loss)} "
                          f"{fmt_rate(run.tokens_per_s)} tok/s eta {fmt_duration(run.eta_s())}")
        elif isinstance(event, ev.Evaluated):
            run.step, run.val = event.step, event.val_loss
            run.vals.append(event.val_loss)
            if self.plain:
                self.line(f"{run.label} eval step {event.step}: train {fmt_loss(event.train_loss)} "
                          f"val {fmt_loss(event.val_loss)}")
        elif isinstance(event, ev.Finished):
            run.status, run.step = "finished", event.step
            self.line(f"{run.label} finished: val {fmt_loss(event.final_val)} (best {fmt_loss(event.best_val)}, "
                      f"exact {fmt_loss(event.exact_val)}) in {fmt_duration(event.wall_s)}")
        elif isinstance(event, ev.Diverged):
            run.status, run.note = "diverged", event.reason
            self.line(f"{run.label} diverged: {event.reason}")
        elif isinstance(event, ev.Failed):
            run.status, run.note = "failed", event.reason
            self.line(f"{run.label} failed: {event.reason}")
        elif isinstance(event, ev.Stopped):
            run.status = "stopped"
            self.line(f"{run.label} stopped at step {event.step} (checkpointed; run again to resume)")
        elif isinstance(event, ev.Warned):
            self.line(f"{run.label} warning: {event.message}")
        if isinstance(event, ev.TERMINAL):
            run.ended_at = time.monotonic()
        if self.live is not None and time.monotonic() - self.drawn_at >= 0.25:  # Live redraws 4 times a second
            self.drawn_at = time.monotonic()
            self.live.update(self.render())

    def mark(self, run_id: str, status: str, note: str = "") -> None:
        run = self.runs.get(run_id)
        if run is not None and run.status not in ("finished", "diverged"):
            run.status, run.note = status, note
            if note:
                self.line(f"{run.label} {status}: {note}")

    def shown(self) -> list[RunProgress]:
        """The rows of the live table: every run of a small sweep; of a large one, those
        training now and the latest to end, up to `LIVE_ROWS` (a terminal shows no more, and
        redrawing 10,000 rows four times a second would slow the driver that draws them)."""
        runs = list(self.runs.values())
        if len(runs) <= LIVE_ROWS:
            return runs
        running = [r for r in runs if r.status == "running"]
        ended = sorted((r for r in runs if r.ended_at), key=lambda r: r.ended_at, reverse=True)
        return (running + ended)[:LIVE_ROWS]

    def render(self) -> Table:
        table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
        for col, just in [("run", "left"), ("status", "left"), ("progress", "left"), ("step", "right"),
                          ("train", "right"), ("val", "right"), ("val curve", "left"), ("tok/s", "right"),
                          ("eta", "right")]:
            table.add_column(col, justify=just, no_wrap=True)
        shown = self.shown()
        if len(shown) < len(self.runs):
            counts: dict[str, int] = {}
            for r in self.runs.values():
                counts[r.status] = counts.get(r.status, 0) + 1
            table.caption = f"{len(shown)} of {counted(len(self.runs), 'run')}: " + ", ".join(
                f"{n:,} {status}" for status, n in counts.items())
            table.caption_justify = "left"
        for run in shown:
            table.add_row(
                run.label, Text(run.status, style=status_style(run.status)),
                ProgressBar(total=run.max_iters, completed=run.step, width=20),
                f"{run.step}/{run.max_iters}", fmt_loss(run.train), fmt_loss(run.val), sparkline(run.vals),
                fmt_rate(run.tokens_per_s or None), fmt_duration(run.eta_s()),
            )
        return table


@dataclass
class HeadlessOptions:
    store: str | None = None
    device: str = "auto"
    workers: int | None = None
    group_size: int | None = None
    fresh: bool = False
    executor: str = "local"
    address: str | None = None
    gpu_share: float = 1.0

    @property
    def settings(self) -> DriverSettings:
        """The driver's settings: these choices, and no lingering (headless trains only its own runs)."""
        return DriverSettings(self.device, self.workers, self.group_size, linger_s=0.0, executor=self.executor,
                              address=self.address, gpu_share=self.gpu_share)


def run_headless(specs: list[RunSpec], opts: HeadlessOptions, console: Console, experiments: Experiments | None = None) -> int:
    """Train `specs` to the end; returns the exit code (0 all finished, 1 any not finished).

    `experiments` (the file the specs come from) gives the final table its suites' claims and
    reproduction tolerances."""
    if opts.workers is not None and opts.workers < 1:
        raise HeadlessError(f"--workers {opts.workers}: give at least 1 worker")
    if opts.group_size is not None and opts.group_size < 1:
        raise HeadlessError(f"--group-size {opts.group_size}: give at least 1 (1 disables grouping)")
    problem = opts.settings.problem()
    if problem:
        raise HeadlessError(problem)
    if opts.executor == "ray":
        from .workers.ray_cluster import import_ray

        import_ray()  # ExecutorUnavailable (how to install it) before anything is written
    cuda = cuda_device_count()
    problem = None if opts.executor == "ray" else check_device(opts.device, cuda)  # a cluster's GPUs are its own
    if problem:
        raise HeadlessError(problem)
    say = partial(console.print, markup=False, highlight=False)
    session = DriverSession(resolve_store_dir(opts.store), opts.settings, cuda, kind="headless", say=say)
    with session.early_workers([s.config for s in specs]):  # their imports overlap what follows
        shas = check_corpora(specs)  # before the store is touched: nothing half-written on a data error
        with session:
            rows = enqueue_specs(session.store, specs, shas, fresh=opts.fresh)
            return _drive(session, rows, console, experiments)


def _drive(session: DriverSession, rows: list[RunRow], console: Console, experiments: Experiments | None = None) -> int:
    from .results import print_tables

    store = session.store
    todo = [r for r in rows if r.status == "queued"]
    skipped = len(rows) - len(todo)
    if skipped:
        console.print(f"{skipped} of {counted(len(rows), 'run')} already {'has' if skipped == 1 else 'have'} results (finished or diverged); "
                      "skipping them (use --fresh to train again)")
    if todo:
        plan = session.plan(todo)
        executor = session.start_workers(plan, todo)  # a cluster is joined (or started) here, so the header says what it sees
        console.print(f"training {counted(len(todo), 'run')} in {counted(plan.n_groups, 'group')} with "
                      f"{executor.describe()}; store {store.dir}")
        plain = not console.is_terminal
        recorded_vals = {r.run_id: [loss for step, _, loss, _ in store.metrics(r.run_id, "val") if step <= r.step]
                         for r in todo if r.step > 0}  # resumed runs: their curve up to the checkpoint
        with ProgressView(console, todo, plain, recorded_vals) as view:
            ctrl_c = StopSignals((signal.SIGINT,), kill_on_repeat=True, ignore_after=True, say=view.line,
                                 graceful_note="stopping: workers checkpoint and exit (Ctrl-C again to stop at once)",
                                 immediate_note="stopping now")
            session.drive(plan, ctrl_c, executor, scope=[r.run_id for r in todo], on_event=view.on_event)
            ended: dict[tuple[str, str], list[str]] = {}  # (status, note) -> runs the driver ended without an event
            for run_id, status, error in store.outcomes(("failed", "stopped")):
                if run_id in view.runs and view.runs[run_id].status not in ("failed", "stopped"):
                    ended.setdefault((status, error or ""), []).append(run_id)
            for (status, note), ids in ended.items():
                if len(ids) <= 3:
                    for run_id in ids:
                        view.mark(run_id, status, note)
                    continue
                for run_id in ids:  # a stopped 10,000-run sweep: one line, not one per queued run
                    view.mark(run_id, status)
                view.line(f"{counted(len(ids), 'run')} {status}" + (f": {note}" if note else ""))
    final = store.refresh(rows)
    print_tables(final_tables(store, final, experiments), console)
    return 0 if all(r.status == "finished" for r in final) else 1


def final_tables(store: Store, final: list[RunRow], experiments: Experiments | None) -> list:
    """The end-of-run tables: this session's runs (replicates merged into mean, interval and
    n where there are any; the best 25 of each suite, saying how many more), each suite
    followed by its claims tested on them (a claim naming another suite's run reads that
    suite's runs from the store)."""
    from .claims import claim_results, referenced_suites, suite_tolerances, tables_with_claims
    from .results import best_rows, result_rows

    suites = list(dict.fromkeys(r.suite for r in final))
    replicates = any(r.base_name and r.base_name != r.name for r in final)
    others = [r for s in referenced_suites(experiments, suites) if s not in suites for r in store.runs(s)]
    claims = claim_results(experiments, final + others, suites)
    rows, totals = best_rows(result_rows(final, replicates=replicates, tolerances=suite_tolerances(experiments)))
    return tables_with_claims(rows, claims, totals=totals, more_hint="`dropres-lab results --all` lists every run")
