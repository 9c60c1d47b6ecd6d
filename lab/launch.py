"""Starting work, shared by both front-ends: `run --headless` and the TUI.

Before anything is written: every corpus a run needs is found, verified and checked against
its block size. Then runs are enqueued in the store with their provenance. The TUI, which
never trains, also starts a detached background driver when no driver holds the store.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import __version__
from .experiments import RunSpec
from .store import DriverLock, NewRun, RunRow, Store
from .workers.settings import DriverSettings


def check_corpora(specs: list[RunSpec]) -> dict[str, str]:
    """Read every corpus the runs need and check block sizes; returns data -> SHA-256.

    Raises DataError (one line) for the first problem, before anything is written. Torch-free
    (the text, not its tokens), so a client such as the TUI checks a launch without torch.
    """
    from .core.corpus import get_corpus_text  # urllib and ssl (for a download): only when launching

    shas: dict[str, str] = {}
    block_sizes: dict[str, set[int]] = {}
    for spec in specs:  # each corpus is read once, not once per run
        block_sizes.setdefault(spec.config.data, set()).add(spec.config.block_size)
    for data, sizes in block_sizes.items():
        corpus = get_corpus_text(data)
        for block_size in sorted(sizes, reverse=True):
            corpus.check_block_size(block_size)
        shas[data] = corpus.sha256
    return shas


def provenance(corpus_sha: str) -> dict:
    """Versions and corpus a run was trained with (device and dtype come from the worker)."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        torch_version = "unknown"
    values = {"lab": __version__, "torch": torch_version, "python": platform.python_version(),
              "corpus_sha256": corpus_sha}
    commit = git_commit()
    if commit:
        values["git_commit"] = commit
    return values


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the lab's own source when it runs from a git checkout ("+dirty" when
    tracked files differ from it), else None: a report can then name the code of every run.
    Asked once per process (two quick git calls), never an error."""
    folder = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "diff", "--quiet", "HEAD", "--", "."], capture_output=True,
                               timeout=5).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def enqueue_specs(store: Store, specs: list[RunSpec], corpus_shas: dict[str, str], fresh: bool = False) -> list[RunRow]:
    """Queue each run with its provenance (finished and diverged ones stay results), in a few
    transactions (`Store.enqueue_many`).

    `corpus_shas` is what `check_corpora` returned for these specs: check first, then write.
    """
    by_data = {data: provenance(sha) for data, sha in corpus_shas.items()}
    runs = [NewRun(s.suite, s.name, s.base_name, s.config, s.reference) for s in specs]
    return store.enqueue_many(runs, fresh=fresh, provenance=[by_data[s.config.data] for s in specs])


def start_background_driver(store_dir: Path, settings: DriverSettings = DriverSettings()) -> int | None:
    """Start a detached driver for the store unless one already holds it.

    The driver runs in its own session (it survives the TUI and its terminal), logs to
    `<store>/driver.log`, trains every queued run, and exits `linger_s` seconds after the
    queue empties. Returns its pid, or None when a driver was already running.
    """
    if DriverLock.is_held(store_dir):
        return None
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "lab", "driver", "--store", str(store_dir), "--device", settings.device,
            "--linger", str(settings.linger_s)]
    if settings.workers:
        args += ["--workers", str(settings.workers)]
    if settings.group_size:
        args += ["--group-size", str(settings.group_size)]
    if settings.executor != "local":
        args += ["--executor", settings.executor, "--gpu-share", str(settings.gpu_share)]
        if settings.address:
            args += ["--address", settings.address]
    with open(store_dir / "driver.log", "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True, cwd=os.getcwd(), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc.pid
