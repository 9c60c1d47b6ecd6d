"""The `dropres-lab` command line (Typer).

Expected failures (a bad file, no corpus, a locked store, ...) print one readable line to
stderr and exit with code 2, never a traceback. Every command's --help explains itself.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .core.config import DTYPES, FIELDS, RunConfig, check_config, default_values
from .formatting import counted

if TYPE_CHECKING:
    from .store import Store

app = typer.Typer(
    name="dropres-lab",
    help="A terminal lab for how dropout and residual connections interact in a transformer LM "
    "(arXiv 2410.01019). Run with no command to open the interactive lab.",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: Settings given on the command line; each maps to the RunConfig field of the same name.
DEFAULT_FILE = Path("experiments.toml")
EXECUTOR_HELP = "Where groups train: local (worker processes here) or ray (a Ray cluster; pip install \"dropres-lab[ray]\")."
ADDRESS_HELP = "--executor ray: the cluster to join (auto: the one `ray start --head` started; HOST:PORT; ray://HOST:PORT). Default: start a private Ray here."
GPU_SHARE_HELP = "--executor ray: the fraction of a GPU each group asks for (0.25: four groups per GPU)."


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .core.checkpoint import CheckpointError
    from .core.data import DataError

    from .bench import BenchError
    from .headless import HeadlessError
    from .serve.listen import ServeError
    from .workers.executor import ExecutorUnavailable

    errors: list[type[BaseException]] = [UserError, DataError, CheckpointError, HeadlessError, BenchError, ServeError,
                                         ExecutorUnavailable]
    try:
        from .experiments import ExperimentsError

        errors.append(ExperimentsError)
    except ImportError:  # pragma: no cover - during development of the sweep runner
        pass
    try:
        from .store import StoreError

        errors.append(StoreError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and exit code 2."""
    try:
        yield
    except _expected_errors() as exc:
        for line in str(exc).splitlines() or ["error"]:
            err.print(f"[bold red]error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _parse_skip(text: str) -> tuple[int, float]:
    depth, sep, rate = text.partition("=")
    if not sep or not depth.strip().isdigit():
        raise UserError(f"--skip {text!r}: write DEPTH=RATE, e.g. --skip 1=0.025 --skip 2=0.99")
    try:
        return int(depth), float(rate)
    except ValueError:
        raise UserError(f"--skip {text!r}: the rate must be a number, e.g. --skip 1=0.025") from None


def config_from_options(base: dict, overrides: dict) -> RunConfig:
    """Apply command-line settings over `base`, check them with the shared rules, build a RunConfig."""
    values = dict(base)
    if overrides.get("dropout") is not None:
        for site in ("embd_dropout", "attn_dropout", "attn_out_dropout", "mlp_dropout"):
            values[site] = overrides["dropout"]
    for key, value in overrides.items():
        if key != "dropout" and value is not None:
            values[key] = value
    problems = check_config(values)
    if problems:
        raise UserError("; ".join(msg for _, msg in problems))
    return RunConfig.from_dict(values)


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    store: Optional[Path] = typer.Option(None, "--store", help="Run store folder the interactive lab shows and launches into (default: $DROPRES_STORE, else ./runs). Commands take their own --store after the command name."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file the interactive lab edits and launches from."),
    read_only: bool = typer.Option(False, "--read-only", help="A view only: every screen, no launch, cancel, edit or save."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP + " The lab's launches train there."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    gpu_share: float = typer.Option(1.0, "--gpu-share", help=GPU_SHARE_HELP),
) -> None:
    """Open the interactive lab when no command is given.

    The lab (Textual) edits experiments.toml, launches runs into a background driver, shows every run in the store live, compares results and overlays loss curves. F1 in the lab lists its keys.
    """
    if ctx.invoked_subcommand is not None:
        if store is not None or file != DEFAULT_FILE or read_only or executor != "local" or address is not None or gpu_share != 1.0:
            with user_errors():
                raise UserError(f"--store, --file, --read-only, --executor, --address and --gpu-share before a command apply to "
                                f"the interactive lab only; "
                                f"put them after the command: dropres-lab {ctx.invoked_subcommand} --store DIR")
        return
    with user_errors():
        # Under `dropres-lab serve` the lab talks to a browser through Textual's web driver
        # (textual-serve sets TEXTUAL_DRIVER), not to a terminal.
        if not (sys.stdin.isatty() and sys.stdout.isatty()) and not os.environ.get("TEXTUAL_DRIVER"):
            raise UserError("the interactive lab needs a terminal; `dropres-lab --help` lists the commands "
                            "that do not (e.g. `dropres-lab run --headless`)")
        from .workers.settings import DriverSettings

        settings = DriverSettings(executor=executor, address=address, gpu_share=gpu_share)
        problem = settings.problem()
        if problem:
            raise UserError(problem)
        if executor == "ray":
            from .workers.ray_cluster import import_ray

            import_ray()
        from .tui import run_lab

        message = run_lab(store, file, settings, read_only)
    if message:
        out.print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
def inspect(
    run: Optional[str] = typer.Argument(None, help="SUITE/RUN from the experiments file; omit to describe the settings given as options."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file to read SUITE/RUN from."),
    n_layer: Optional[int] = typer.Option(None, help=FIELDS["n_layer"].help),
    n_head: Optional[int] = typer.Option(None, help=FIELDS["n_head"].help),
    n_embd: Optional[int] = typer.Option(None, help=FIELDS["n_embd"].help),
    block_size: Optional[int] = typer.Option(None, help=FIELDS["block_size"].help),
    bias: Optional[bool] = typer.Option(None, "--bias/--no-bias", help=FIELDS["bias"].help),
    norm: Optional[str] = typer.Option(None, help=FIELDS["norm"].help),
    skip_dropout: Optional[str] = typer.Option(None, help=FIELDS["skip_dropout"].help),
    dropout: Optional[float] = typer.Option(None, help="Shorthand: one rate for all four dropout sites."),
    skip: Optional[List[str]] = typer.Option(None, help="Skip path DEPTH=RATE (repeatable); replaces the default skip-1 path."),
    data: Optional[str] = typer.Option(None, help=FIELDS["data"].help),
) -> None:
    """Print a configuration's architecture: sub-layers, skip paths, dropout sites, parameters."""
    from .core.data import get_corpus
    from .core.model import count_params, skip_paths

    with user_errors():
        overrides = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block_size,
                     "bias": bias, "norm": norm, "skip_dropout": skip_dropout, "dropout": dropout, "data": data}
        if skip:
            overrides["skips"] = dict(_parse_skip(s) for s in skip)
        if run is not None:
            from .experiments import load_experiments, parse_run_ref

            spec = parse_run_ref(load_experiments(file), run)
            base = spec.config.to_dict()
            base["skips"] = dict(spec.config.skips)
            title = f"{spec.suite}/{spec.name}"
        else:
            base = default_values()
            title = "settings from options"
        cfg = config_from_options(base, overrides)
        corpus = get_corpus(cfg.data)
        render_architecture(cfg, corpus.vocab_size, title, count_params(cfg, corpus.vocab_size), skip_paths(cfg))


def render_architecture(cfg: RunConfig, vocab: int, title: str, n_params: int, paths: list) -> None:
    L = cfg.n_sublayers
    out.print(f"[bold]{title}[/]: {cfg.n_layer} blocks = {L} sub-layers, n_embd {cfg.n_embd}, "
              f"{cfg.n_head} heads, block_size {cfg.block_size}, vocab {vocab}, bias {'on' if cfg.bias else 'off'}")
    norm_text = ("stream: u_i = LN_i(h_i) replaces the stream, skip paths carry normalised activations"
                 if cfg.norm == "stream" else "pre: standard pre-LN, skip paths carry the raw stream h_j")
    out.print(f"norm: {norm_text}")

    sites = Table(title="Dropout sites", title_justify="left")
    for col in ("site", "where", "rate"):
        sites.add_column(col)
    sites.add_row("embd_dropout", "tok_emb + pos_emb (h_0)", f"{cfg.embd_dropout:g}")
    sites.add_row("attn_dropout", "attention probabilities, every attention sub-layer", f"{cfg.attn_dropout:g}")
    sites.add_row("attn_out_dropout", "attention output projection", f"{cfg.attn_out_dropout:g}")
    sites.add_row("mlp_dropout", "MLP output", f"{cfg.mlp_dropout:g}")
    out.print(sites)

    layers = Table(title="Sub-layers", title_justify="left")
    for col in ("i", "f_i", "block", "skip paths landing on h_{i+1}"):
        layers.add_column(col)
    for i in range(L):
        landing = [p for p in paths if p.target == i + 1]
        layers.add_row(str(i), "attention" if i % 2 == 0 else "MLP", str(i // 2),
                       ", ".join(f"skip-{p.depth} from s_{p.source}" for p in landing) or "none")
    out.print(layers)

    skips = Table(title=f"Skip paths (skip_dropout = {cfg.skip_dropout})", title_justify="left",
                  caption="s_j: the input of sub-layer j; h_i: the stream after sub-layer i-1", caption_justify="left")
    for col in ("depth", "from", "to", "rate", "training", "evaluation"):
        skips.add_column(col)
    for p in paths:
        if cfg.skip_dropout == "paper":
            train_txt = "removed" if p.rate >= 1 else (f"mask, keep {1 - p.rate:g}, unscaled" if p.rate else "identity")
            eval_txt = f"x {1 - p.rate:g}"
        else:
            train_txt = f"mask / {1 - p.rate:g}" if p.rate else "identity"
            eval_txt = "identity"
        skips.add_row(str(p.depth), f"s_{p.source}", f"h_{p.target}", f"{p.rate:g}", train_txt, eval_txt)
    out.print(skips)
    out.print(f"trainable parameters: [bold]{n_params:,}[/] (tied embedding counted once, position embeddings included)")


#: `--dtype`: the precision setting every run gets (a changed setting makes new runs).
DtypeOption = Enum("DtypeOption", {d: d for d in DTYPES}, type=str)


_DTYPE_HELP = ("Override dtype for every run (makes runs distinct): auto (bf16 where a measured training step "
               "is at least 10% faster), float32 or bfloat16.")


@app.command()
def run(
    suites: Optional[List[str]] = typer.Argument(None, help="Suites to run (default: the file's default_suite)."),
    headless: bool = typer.Option(False, "--headless", help="Train in this terminal with Rich progress, without the interactive lab."),
    only: Optional[str] = typer.Option(None, help="Only runs whose name matches this glob, e.g. 'skips.2=*'."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file."),
    store: Optional[str] = typer.Option(None, help="Run store folder (default: $DROPRES_STORE or ./runs)."),
    device: str = typer.Option("auto", help="auto (every visible GPU, else CPU), cpu, cuda or cuda:N."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: one per GPU; on CPU one per group up to the core count, cores split between them)."),
    group_size: Optional[int] = typer.Option(None, help="Most configurations trained as one batched model (1 disables grouping)."),
    max_iters: Optional[int] = typer.Option(None, help="Override max_iters for every run (makes runs distinct from the full ones)."),
    data: Optional[str] = typer.Option(None, help="Override the corpus: a path to a UTF-8 text file."),
    dtype: Optional[DtypeOption] = typer.Option(None, "--dtype", help=_DTYPE_HELP),
    fresh: bool = typer.Option(False, "--fresh", help="Start the chosen runs over, discarding their results and checkpoints."),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    gpu_share: float = typer.Option(1.0, help=GPU_SHARE_HELP),
) -> None:
    """Train suites from the experiments file.

    Finished and diverged runs are skipped; failed, stopped and interrupted runs resume from their checkpoints. Ctrl-C stops gracefully (checkpoints written); a second Ctrl-C stops at once.

    Exit code 0 when every run finished, 1 when any failed, diverged or was stopped, 2 for a mistake in the command, the file, the data or the store."""
    from .experiments import load_experiments
    from .headless import HeadlessOptions, override_specs, run_headless

    with user_errors():
        if not headless:
            raise UserError("add --headless to train in this terminal (plain `dropres-lab` opens the interactive lab)")
        experiments = load_experiments(file)
        specs = override_specs(experiments.select(suites or None, only), max_iters, data, dtype.value if dtype else None)
        opts = HeadlessOptions(store=store, device=device, workers=workers, group_size=group_size, fresh=fresh,
                               executor=executor, address=address, gpu_share=gpu_share)
        code = run_headless(specs, opts, out, experiments)
    raise typer.Exit(code)


@app.command()
def bench(
    suite: Optional[str] = typer.Argument(None, metavar="SUITE", help="Suite to predict (default: the file's default_suite)."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file."),
    device: str = typer.Option("auto", help="auto (every visible GPU, else CPU), cpu, cuda or cuda:N: as `run --headless` would use."),
    workers: Optional[int] = typer.Option(None, help="Worker processes, as for `run --headless` (default: one per GPU; on CPU one per group up to the core count)."),
    group_size: Optional[int] = typer.Option(None, help="Most configurations trained as one batched model (1 disables grouping)."),
    max_iters: Optional[int] = typer.Option(None, help="Predict with max_iters overridden for every run, as `run --headless --max-iters` trains them."),
    dtype: Optional[DtypeOption] = typer.Option(None, "--dtype", help=_DTYPE_HELP),
    budget: float = typer.Option(1.5, "--budget", min=0.05, help="Seconds of timed training steps per group shape (at least 3 steps); more is steadier, less is quicker."),
    executor: str = typer.Option("local", help=EXECUTOR_HELP + " With ray, groups are measured on the cluster and its resources give the slots."),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    gpu_share: float = typer.Option(1.0, help=GPU_SHARE_HELP),
) -> None:
    """Measure this machine's training speed for a suite and predict its wall time, in under a minute.

    The suite is planned as `run --headless` plans it: the same workers (device, torch threads each) and the same groups, split over idle workers as the driver splits them. Every distinct group (shape and size) is then built with the real trainer and timed: a few training steps, the evaluation forward over a few chunks of windows, and a checkpoint. The measuring runs in as many concurrent processes as there will be workers, with their thread counts, so the cores and memory are shared as in the launch.

    A group's prediction is max_iters steps + every evaluation (at step 0, every eval_interval and at the end) + the exact validation pass + checkpoints + setup; the driver's dispatch is then replayed (a worker takes the next group when it goes idle) and the last group's end is the predicted wall time.

    The prediction assumes an otherwise idle machine (other load now makes the measurement slow, other load later makes the run slow) and trains every run from step 0: runs already finished in the store are not subtracted. Exit code 2 for a mistake in the command or the file.
    """
    from .experiments import load_experiments
    from .headless import override_specs
    from .launch import check_corpora
    from .workers.scheduler import check_device, cuda_device_count
    from .workers.settings import DriverSettings

    with user_errors():
        settings = DriverSettings(device, workers, group_size, executor=executor, address=address, gpu_share=gpu_share)
        problem = settings.problem()
        if problem:
            raise UserError(problem)
        if executor == "ray":
            from .workers.ray_cluster import import_ray

            import_ray()
        if workers is not None and workers < 1:
            raise UserError(f"--workers {workers}: give at least 1 worker")
        if group_size is not None and group_size < 1:
            raise UserError(f"--group-size {group_size}: give at least 1 (1 disables grouping)")
        experiments = load_experiments(file)
        name = suite or experiments.default_suite
        specs = override_specs(experiments.select([name]), max_iters, None, dtype.value if dtype else None)
        cuda = cuda_device_count()
        problem = None if executor == "ray" else check_device(device, cuda)
        if problem:
            raise UserError(problem)
        check_corpora(specs)
        prediction = _bench_with_progress(specs, device, workers, group_size, cuda, budget, settings)
    render_prediction(name, prediction)


def _bench_with_progress(specs: list, device: str, workers: Optional[int], group_size: Optional[int], cuda: int,
                         budget: float, settings=None):
    """`lab.bench.bench_suite` with a Rich progress line (a plain line when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .bench import Plan, bench_suite, plan_text

    if not out.is_terminal:
        def note(plan: Plan, done: int, total: int) -> None:
            if done == 0:
                out.print(f"measuring {counted(total, 'group shape')} for {plan_text(plan)} ...",
                          markup=False, highlight=False, soft_wrap=True)

        return bench_suite(specs, device, workers, group_size, cuda_devices=cuda, steps_budget_s=budget, progress=note,
                           settings=settings)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("shapes"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("planning", total=None)

        def update(plan: Plan, done: int, total: int) -> None:
            bar.update(task, description=f"measuring {plan_text(plan)}", completed=done, total=total)

        return bench_suite(specs, device, workers, group_size, cuda_devices=cuda, steps_budget_s=budget, progress=update,
                           settings=settings)


def _seconds(s: float) -> str:
    """A bench table's seconds: three significant digits, whole seconds from 100."""
    return f"{s:.3g}" if s < 100 else f"{s:,.0f}"


def render_prediction(suite: str, prediction) -> None:
    """The per-group table and the one-line prediction of `bench`."""
    from .formatting import fmt_duration

    table = Table(title=f"{suite}: measured group costs and predicted times", title_justify="left")
    for col, justify in (("group", "left"), ("configs", "right"), ("model", "left"), ("dtype", "left"),
                         ("ms/step", "right"), ("ms/config-step", "right"), ("tokens/s", "right"),
                         ("of peak", "right"), ("start s", "right"), ("eval s each", "right"),
                         ("exact s", "right"), ("ckpt s", "right"), ("worker", "right"), ("starts", "right"),
                         ("predicted", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "group")
    for slot in prediction.schedule:
        cost, times = prediction.cost_of(slot.group), prediction.time_of(slot.group)
        cfg, n = slot.group[0].config, len(slot.group)
        label = slot.group[0].spec.name + (f" +{n - 1}" if n > 1 else "")
        table.add_row(label, str(n), f"{cfg.n_layer} x {cfg.n_embd}", cost.dtype, f"{cost.step_s * 1000:,.1f}",
                      f"{cost.step_s * 1000 / n:,.1f}", f"{n * cfg.batch_size * cfg.block_size / cost.step_s:,.0f}",
                      f"{cost.peak_fraction:.0%}" if cost.peak_flops else "-",
                      _seconds(prediction.startup_s + times.setup_s), _seconds(times.per_eval_s),
                      _seconds(times.exact_s), f"{_seconds(cost.checkpoint_s)}/{_seconds(cost.checkpoint_durable_s)}",
                      str(slot.worker + 1), fmt_duration(prediction.startup_s + slot.start_s, "long"),
                      fmt_duration(times.total_s, "long"))
    table.caption = ("model: blocks x n_embd; of peak: training FLOP/s (6 x weights x tokens + attention) as a "
                     "share of the worker's measured matmul peak in the dtype (- for bf16 where the CPU emulates it); start s: a worker's start "
                     "(spawn, imports, corpus) and the group's setup (model, optimiser); eval s each: one "
                     "evaluation (eval_iters batches of each split); exact s: the exact validation pass; "
                     "ckpt s: every run's checkpoint handed over / durable (written while training goes on); "
                     "predicted: steps, evaluations, exact val, checkpoints and setup of the group")
    print_tables([table])
    for choice in prediction.dtype_choices:
        out.print(choice.describe(), markup=False, highlight=False, soft_wrap=True)
    out.print(f"{suite}: {prediction.summary()}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"measured in {fmt_duration(prediction.measure_s, 'long')} with {len(prediction.plan.workers)} concurrent "
              "process(es) as the launch would run them; assumes an otherwise idle machine, and every run from "
              "step 0 (runs already finished in a store are not subtracted)",
              markup=False, highlight=False, soft_wrap=True, style="dim")


# -- validate, results, sample, rm ----------------------------------------------------------------
# Read-side commands: they check the experiments file or read the run store; none of them trains.
# The results table itself lives in lab/results.py, shared with the headless runner and the TUI.


class OutputFormat(str, Enum):
    """`results --format`: a Rich table for people, csv/json/markdown for other programs."""

    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


_STORE_HELP = "Run store folder (default: $DROPRES_STORE, else ./runs)."


def _open_store(store: Optional[Path]) -> "Store":
    """Open an existing store for reading; a folder without one is a user error, not a new store.

    (Opening would otherwise create an empty store wherever a typo pointed.)
    """
    from .store import DB_NAME, Store, resolve_store_dir

    folder = resolve_store_dir(store)
    if not (folder / DB_NAME).is_file():
        raise UserError(f"no runs yet at {folder}; run `dropres-lab run --headless` first")
    return Store.open(folder)


def _unknown_suite(st: "Store", suite: str) -> UserError:
    import difflib

    present = st.suites()
    if not present:
        return UserError(f"no runs yet at {st.dir}; run `dropres-lab run --headless` first")
    close = difflib.get_close_matches(suite, present, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UserError(f"no suite {suite!r} in the store at {st.dir}; {hint}suites with runs: {', '.join(present)}")


def _split_ref(ref: str, run_required: bool) -> tuple[str, str]:
    """"SUITE/RUN" (or "SUITE" when the run is optional) -> (suite, run or "")."""
    suite, sep, name = ref.partition("/")
    if not suite or (sep and not name) or (run_required and not name):
        example = "quick/skip1" if run_required else "quick or quick/skip1"
        raise UserError(f"{ref!r}: expected {'SUITE/RUN' if run_required else 'SUITE or SUITE/RUN'}, e.g. {example}")
    return suite, name


def _find_runs(st: "Store", suite: str, name: str, file: Optional[Path] = None) -> list:
    """The store's runs called SUITE/NAME: every identity of that name (e.g. a --max-iters copy
    too), or, when NAME is a replicated run's base name, all its replicates. Never empty."""
    rows = st.find(suite, name)
    if rows:
        return rows
    in_suite = st.find(suite)
    if not in_suite:
        raise _unknown_suite(st, suite)
    replicates = [r for r in in_suite if r.base_name == name]
    if replicates:
        return replicates
    import difflib

    names = list(dict.fromkeys(r.name for r in in_suite))
    hint = ""
    if file is not None and file.is_file():
        from .experiments import ExperimentsError, load_experiments

        try:
            spec = load_experiments(file).suites.get(suite)
        except ExperimentsError:
            spec = None
        defined = spec is not None and any(r.name == name or r.base_name == name for r in spec.runs)
        if defined:
            hint = f" (it is in {file} but has not been queued yet: dropres-lab run --headless {suite} --only '{name}')"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    listing = f"did you mean {', '.join(close)}?" if close else f"runs in {suite}: {', '.join(names)}"
    raise UserError(f"no run {suite}/{name} in the store{hint}; {listing}")


def _write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, with one-line errors for the mistakes a user can make."""
    from .core.atomic import write_atomic

    target = path.expanduser()
    if target.is_dir():
        raise UserError(f"--output {path} is a folder; give a file name, e.g. {path / 'results.csv'}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--output {path}: the folder {parent} does not exist; create it first")
    try:
        write_atomic(target, text)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return target


def _tables_as_text(tables: list) -> str:
    import io

    buf = io.StringIO()
    print_tables(tables, Console(file=buf, highlight=False, no_color=True))
    return buf.getvalue()


def print_tables(tables: list, console: Optional[Console] = None) -> None:
    """`lab.results.print_tables` on the command line's stdout console."""
    from .results import print_tables as print_whole

    print_whole(tables, console or out)


def _dropout_text(cfg: RunConfig) -> str:
    rates = [cfg.embd_dropout, cfg.attn_dropout, cfg.attn_out_dropout, cfg.mlp_dropout]
    if len(set(rates)) == 1:
        return f"{rates[0]:g}"
    return " ".join(f"{site} {rate:g}" for site, rate in zip(("embd", "attn", "out", "mlp"), rates))


@app.command()
def validate(
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file to check."),
    show_all: bool = typer.Option(False, "--all", help="List every run (default: the first 25 of each suite, and how many more)."),
) -> None:
    """Check an experiments file and list the runs it expands to.

    Every problem is reported at once, one per line as FILE:LINE: KEY: MESSAGE, and the exit code is 2. A valid file prints each suite's runs with their key settings (exit code 0): the first 25 of each suite unless --all.
    """
    from .experiments import ExperimentsError, load_experiments
    from .formatting import fmt_loss
    from .results import TOP_PER_SUITE

    try:
        experiments = load_experiments(file)
    except ExperimentsError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        n = len(exc.problems)
        err.print(f"{counted(n, 'problem')} in {file}; nothing was run", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    table = Table(title=str(file), title_justify="left")
    for col, justify in (("suite", "left"), ("run", "left"), ("n_layer", "right"), ("dropout", "left"),
                         ("skips", "left"), ("max_iters", "right"), ("seed", "right"), ("reference", "right")):
        table.add_column(col, justify=justify)
    for s, suite in enumerate(experiments.suites.values()):
        if s:
            table.add_section()
        listed = suite.runs if show_all else suite.runs[:TOP_PER_SUITE]
        for run in listed:
            cfg = run.config
            table.add_row(suite.name, run.name, str(cfg.n_layer), _dropout_text(cfg),
                          ", ".join(f"{d}={r:g}" for d, r in cfg.skips), f"{cfg.max_iters:,}", str(cfg.seed),
                          fmt_loss(run.reference))
        if len(listed) < len(suite.runs):
            table.add_row(suite.name, f"... {len(suite.runs) - len(listed):,} more (--all lists every run)")
    print_tables([table])
    n_runs, n_suites = len(experiments.runs), len(experiments.suites)
    out.print(f"{file}: valid; {counted(n_runs, 'run')} in {counted(n_suites, 'suite')} "
              f"(default suite: {experiments.default_suite})", markup=False)


def _experiments_for_claims(file: Path):
    """The experiments file for claims and tolerances, or None: results read the store, so a
    missing file or one with problems only leaves the claims out (said once, on stderr)."""
    from .experiments import ExperimentsError, load_experiments

    if not file.is_file():
        return None
    try:
        return load_experiments(file)
    except ExperimentsError as exc:
        err.print(f"{file} has {counted(len(exc.problems), 'problem')} (dropres-lab validate lists them); "
                  "claims and tolerances are left out", markup=False, highlight=False, soft_wrap=True)
        return None


@app.command()
def results(
    suite: Optional[str] = typer.Argument(None, metavar="SUITE", help="Suite to compare; omit for every suite in the store."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table (for reading), or csv, json, markdown (for other tools; JSON writes non-finite numbers as null)."),
    replicates: bool = typer.Option(False, "--replicates", help="Merge runs that differ only in seed (name#seed) into one row: mean ± sample std, its 95 % interval and n."),
    show_all: bool = typer.Option(False, "--all", help="Show every run in the table and in Markdown (default: the best 25 of each suite, saying how many more there are). CSV and JSON always carry every run."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead of the terminal."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file: the suites' claims and reproduction tolerances (left out if it is absent or has problems)."),
) -> None:
    """Compare runs from the store, ranked by best validation loss within each suite, and test the suites' claims.

    Columns: the settings that differ between the suite's runs, status and step, best val and its distance to the suite's best, final val and train with their gap, the exact val loss over the whole validation split with its 95 % interval over seeds, the test against the best run it is comparable with (same settings but those the suite varies, same dtype), the published reference and final val minus it (✓ within the suite's tolerance), tokens/s and wall time. Table and Markdown add each suite's claims (supported, contradicted, inconclusive; Holm-corrected). Reads the store only; safe while a driver is training.
    """
    from .claims import claim_results, claim_runs, markdown_with_claims, suite_tolerances, tables_with_claims
    from .results import TOP_PER_SUITE, best_rows, render_text, result_rows

    with user_errors():
        experiments = _experiments_for_claims(file)
        st = _open_store(store)
        try:
            if suite is not None and suite not in st.suites():
                raise _unknown_suite(st, suite)
            if fmt in (OutputFormat.csv, OutputFormat.json):
                _export(st, suite, fmt.value, replicates, output)
                return
            if show_all or replicates:
                rows, totals = st.runs(suite), None
            else:  # the best of each suite, picked in SQL: a 100,000-run store prints in a second
                rows, totals = st.best_runs(suite, TOP_PER_SUITE)
            if not rows:
                raise _unknown_suite(st, suite) if suite else UserError(
                    f"no runs yet at {st.dir}; run `dropres-lab run --headless` first")
            shown = list(dict.fromkeys(r.suite for r in rows))
            tested = claim_runs(experiments, st, shown) if fmt in (OutputFormat.table, OutputFormat.markdown) else []
        finally:
            st.close()
        table_rows = result_rows(rows, replicates=replicates, tolerances=suite_tolerances(experiments))
        if replicates and not show_all:
            table_rows, totals = best_rows(table_rows, TOP_PER_SUITE)
        claims = claim_results(experiments, tested, shown) if tested else {}
        if fmt is OutputFormat.table:
            tables = tables_with_claims(table_rows, claims, totals=totals)
            if output is None:
                print_tables(tables)
                return
            text = _tables_as_text(tables)
        else:
            text = markdown_with_claims(table_rows, claims) if fmt is OutputFormat.markdown else render_text(table_rows, fmt.value)
            if output is None:
                sys.stdout.write(text)
                sys.stdout.flush()
                return
        out.print(str(_write_atomic(output, text)), markup=False, highlight=False, soft_wrap=True)


def _export(st: "Store", suite: Optional[str], fmt: str, replicates: bool, output: Optional[Path]) -> None:
    """CSV or JSON of every run, streamed suite by suite from the store (`lab.export`: a
    100,000-run store is never in memory at once), to stdout or atomically to `output`."""
    from .core.atomic import atomic_writer
    from .export import export

    suites = [suite] if suite is not None else st.suites()
    if not suites:
        raise UserError(f"no runs yet at {st.dir}; run `dropres-lab run --headless` first")
    if output is None:
        export(st, suites, fmt, replicates, sys.stdout.write)
        sys.stdout.flush()
        return
    target = output.expanduser()
    if target.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name, e.g. {output / 'results.csv'}")
    if not (target.parent if str(target.parent) else Path(".")).is_dir():
        raise UserError(f"--output {output}: the folder {target.parent} does not exist; create it first")
    try:
        with atomic_writer(target, binary=False) as fh:
            export(st, suites, fmt, replicates, fh.write)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    out.print(str(Path(os.path.realpath(target))), markup=False, highlight=False, soft_wrap=True)


class FigureFormat(str, Enum):
    """`report --format`: the figures' file format."""

    png = "png"
    svg = "svg"


@app.command()
def report(
    suites: Optional[List[str]] = typer.Argument(None, metavar="[SUITE]...", help="Suites to report on (default: every suite in the store)."),
    output: Path = typer.Option(Path("report"), "--output", "-o", help="Folder for report.md and the figures (created if need be)."),
    fmt: FigureFormat = typer.Option(FigureFormat.png, "--format", help="Figure files: png (150 dpi) or svg."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file: suite descriptions and the claims to check (optional)."),
) -> None:
    """Write a reproduction report: report.md with the settings, results, claims and provenance of each suite, and its figures.

    Per suite: validation loss against iteration (the whole run and its last half; replicates as the mean with a shaded 95 % band), the exact validation loss against the swept setting with 95 % intervals and the published values, and the train-val gap against the swept setting. Reads the store only; safe while a driver is training.
    """
    from .report import ReportError, write_report
    from .store import resolve_store_dir

    with user_errors():
        try:
            written = write_report(resolve_store_dir(store), suites or None, output, fmt.value, file)
        except ReportError as exc:
            raise UserError(str(exc)) from None
    out.print(written.summary(), markup=False, highlight=False, soft_wrap=True)


@app.command()
def sample(
    run: str = typer.Argument(..., metavar="SUITE/RUN", help="The run to sample from, e.g. quick/skip1 (a replicate: quick/skip1#1338)."),
    tokens: int = typer.Option(500, "--tokens", "-n", min=0, help="Characters to generate after the prompt."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", min=0.0, help="Softmax temperature; 0 always takes the most likely character."),
    seed: int = typer.Option(1337, "--seed", min=0, help="Sampling seed: the same seed gives the same text."),
    prompt: str = typer.Option("\n", "--prompt", "-p", show_default=False, help="Text to continue (default: a newline). Every character must occur in the run's corpus."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file, used to explain a run that has not been trained yet."),
) -> None:
    """Print text generated by a run's newest checkpoint (its final one once it has finished).

    Writes the prompt, then exactly --tokens characters, then a newline, to stdout; notes (which checkpoint, an unfinished run) go to stderr. Runs on the CPU; the vocabulary comes from the checkpoint, so the corpus file is not needed.
    """
    with user_errors():
        suite, name = _split_ref(run, run_required=True)
        if not prompt:
            raise UserError("--prompt must not be empty; give at least one character (the default is a newline)")
        st = _open_store(store)
        try:
            row, state = _checkpoint_to_sample(st, suite, name, file)
        finally:
            st.close()
        text = _generate_text(state, prompt, tokens, temperature, seed)
    sys.stdout.write(prompt + text + "\n")
    sys.stdout.flush()


def _checkpoint_to_sample(st: "Store", suite: str, name: str, file: Optional[Path]) -> tuple:
    """Pick the run (finished first, then one with a checkpoint, then the newest) and load its
    newest readable checkpoint, falling back past damaged files with a note."""
    from .core.checkpoint import SavedCheckpoint, load_newest

    rows = _find_runs(st, suite, name, file)
    if len({r.name for r in rows}) > 1:
        raise UserError(f"{suite}/{name} has replicates; name one of: "
                        + ", ".join(f"{suite}/{r.name}" for r in rows))
    with_ckpt = {r.run_id: bool(st.checkpoints(r.run_id)) for r in rows}
    row = max(rows, key=lambda r: (r.status == "finished", with_ckpt[r.run_id],
                                   r.ended_at or r.updated_at or r.created_at))
    if len(rows) > 1:
        err.print(f"note: {counted(len(rows), 'run')} named {suite}/{name} with different settings in the store; "
                  f"using the {row.status} one with max_iters {row.max_iters} (run id {row.run_id})",
                  markup=False, highlight=False, soft_wrap=True)
    state = load_newest((SavedCheckpoint.in_file(path, step) for step, path in st.checkpoints(row.run_id)),
                        warn=lambda message: err.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True))
    if state is not None:
        step = state["step"]
        if row.status != "finished" or step != row.max_iters:
            err.print(f"note: {suite}/{name} is {row.status}; sampling its checkpoint at step {step} of {row.max_iters}",
                      markup=False, highlight=False, soft_wrap=True)
        return row, state
    if with_ckpt[row.run_id]:
        raise UserError(f"run {suite}/{name} has no readable checkpoint (see the notes above); "
                        f"rerun it with `dropres-lab run --headless {suite} --only '{name}' --fresh`")
    raise UserError(f"run {suite}/{name} has no checkpoint yet ({row.status} at step {row.step}); one is written "
                    f"at every evaluation (eval_interval {row.config.eval_interval}) and when it stops or finishes")


def _generate_text(state: dict, prompt: str, tokens: int, temperature: float, seed: int) -> str:
    """Rebuild the run's model from a checkpoint (its settings and vocabulary) and sample."""
    import torch

    from .core.checkpoint import model_from_checkpoint
    from .core.model import generate

    model, vocab = model_from_checkpoint(state)
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted({c for c in prompt if c not in index})
    if unknown:
        shown = "".join(vocab) if len(vocab) <= 100 else "".join(vocab[:100]) + "..."
        raise UserError(f"--prompt has characters the run's corpus does not contain: "
                        f"{', '.join(repr(c) for c in unknown)}; use only these: {shown!r}")
    ids = torch.tensor([index[c] for c in prompt], dtype=torch.long)
    result = generate(model, ids, tokens, temperature, torch.Generator().manual_seed(seed))
    return "".join(vocab[i] for i in result[len(prompt):].tolist())


@app.command()
def rm(
    target: str = typer.Argument(..., metavar="SUITE[/RUN]", help="A whole suite, or one run (a replicated run's base name removes all its replicates)."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
) -> None:
    """Delete runs from the store with their metrics and checkpoints, after confirmation.

    Lists what will go first. Runs that a live driver is training are refused: stop them first. Finished runs deleted here are trained again by the next `run --headless`.
    """
    from .formatting import fmt_loss

    with user_errors():
        suite, name = _split_ref(target, run_required=False)
        st = _open_store(store)
        try:
            rows = _find_runs(st, suite, name) if name else st.find(suite)
            if not rows:
                raise _unknown_suite(st, suite)
            busy = [r for r in rows if r.status == "running"]
            if busy and st.driver_alive():
                info = st.driver_info()
                who = f"pid {info.pid}" if info is not None and info.pid else "a live driver"
                raise UserError(f"{len(busy)} of these runs are being trained by the driver ({who}): "
                                f"{', '.join(f'{r.suite}/{r.name}' for r in busy[:5])}{', ...' if len(busy) > 5 else ''}; "
                                "stop them first (Ctrl-C the headless run, or stop them in the TUI)")
            table = Table(title=f"to delete from {st.dir}", title_justify="left")
            for col, justify in (("run", "left"), ("status", "left"), ("step", "right"), ("best val", "right")):
                table.add_column(col, justify=justify)
            for r in rows:
                table.add_row(f"{r.suite}/{r.name}", r.status, f"{r.step}/{r.max_iters}", fmt_loss(r.best_val))
            print_tables([table])
            what = counted(len(rows), "run")
            if not yes:
                try:
                    confirmed = typer.confirm(f"Delete {what} with their metrics and checkpoints?", default=False)
                except typer.Abort:
                    raise UserError("no answer to the confirmation (input is not a terminal?); pass --yes to delete without asking") from None
                if not confirmed:
                    out.print("nothing deleted")
                    raise typer.Exit(1)
            n = st.delete([r.run_id for r in rows])
        finally:
            st.close()
        out.print(f"deleted {counted(n, 'run')}", markup=False)


@app.command()
def serve(
    store: Optional[Path] = typer.Option(None, "--store", help="Run store folder the lab shows and launches into (default: $DROPRES_STORE, else ./runs)."),
    file: Path = typer.Option(DEFAULT_FILE, "--file", "-f", help="Experiments file the lab edits and launches from."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Only loopback without --public."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one (the URL printed says which)."),
    public: bool = typer.Option(False, "--public", help="Allow a --host other machines can reach: anyone who reaches the port can launch and cancel runs."),
    read_only: bool = typer.Option(False, "--read-only", help="Serve a view only: every screen, no launch, cancel, edit or save."),
) -> None:
    """Serve the interactive lab to a web browser (needs the extra: pip install "dropres-lab\\[serve]").

    Each browser tab is its own lab on the same store: closing a tab stops no run, and every tab sees the same live runs. Listens on 127.0.0.1 only unless --public; to watch from another machine, forward the port over SSH (see the README). Ctrl-C stops the server and the labs of every open tab; background drivers keep training. Exit code 2 for a mistake (a taken port, a public address without --public, textual-serve not installed).
    """
    from .serve.listen import listen, tab_command
    from .store import Store, resolve_store_dir

    with user_errors():
        try:
            from .serve.server import LabServer
        except ImportError:
            raise UserError('serve needs textual-serve, which is not installed: pip install "dropres-lab[serve]"') from None
        store_dir = resolve_store_dir(str(store) if store is not None else None)
        Store.open(store_dir).close()  # as the lab opens it; one that cannot be used is one line here
        listening = listen(host, port, public)
    if not listening.loopback:
        what = "see your runs and experiments" if read_only else "launch and cancel runs and edit the experiments file"
        err.print(f"warning: serving on {host}, reachable from other machines: anyone who can reach port "
                  f"{listening.sock.getsockname()[1]} can {what}", markup=False, highlight=False, soft_wrap=True)
    command = tab_command(store_dir, file.expanduser().absolute(), read_only)
    view = "a read-only view of " if read_only else ""

    def announce() -> None:
        out.print(f"serving {view}the lab for {store_dir} at {listening.url} (Ctrl-C stops)",
                  markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()

    LabServer(command, listening.sock, title="dropres-lab", announce=announce).serve()
    out.print("stopped", markup=False, highlight=False)


@app.command(hidden=True)
def driver(
    store: Optional[str] = typer.Option(None, help="Run store folder."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    workers: Optional[int] = typer.Option(None, help="Worker processes."),
    group_size: Optional[int] = typer.Option(None, help="Most configurations per batched group."),
    linger: float = typer.Option(30.0, help="Seconds to wait for new work once the queue is empty."),
    executor: str = typer.Option("local", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    gpu_share: float = typer.Option(1.0, help=GPU_SHARE_HELP),
) -> None:
    """Background driver for the interactive lab: trains every queued run in the store."""
    from .workers.settings import DriverSettings
    from .store import resolve_store_dir
    from .workers.background import serve

    with user_errors():
        code = serve(resolve_store_dir(store), DriverSettings(device, workers, group_size, linger, executor, address, gpu_share))
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # a Ctrl-C outside a training loop: no traceback
        err.print("interrupted")
        sys.exit(130)
