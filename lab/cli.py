"""The `dropres-lab` command line (Typer).

Expected failures (a bad file, no corpus, a locked store, ...) print one readable line to
stderr and exit with code 2, never a traceback. Every command's --help explains itself.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .core.config import FIELDS, RunConfig, check_config, default_values

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


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .core.checkpoint import CheckpointError
    from .core.data import DataError

    errors: list[type[BaseException]] = [UserError, DataError, CheckpointError]
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
            err.print(f"[bold red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
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
def main_callback(ctx: typer.Context) -> None:
    """Open the interactive lab when no command is given."""
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help())


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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # a Ctrl-C outside a training loop: no traceback
        err.print("interrupted")
        sys.exit(130)
