"""Shared fixtures: tiny generated corpora and tiny configurations, so tests stay fast."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.core.config import RunConfig
from lab.store import Store

# dtype "auto" measures this machine and caches the answer: never in the user's cache from a
# test (the fixtures below pin float32, so no test depends on a measurement; the ones that
# test it point the cache at their own folder).
os.environ["DROPRES_DTYPE_CACHE"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dropres-test-dtype-{os.getpid()}.json")


def write_corpus(path: Path, chars: int = 20000, seed: int = 0) -> Path:
    """A deterministic pseudo-text with some structure for a model to learn."""
    rng = random.Random(seed)
    words = ["the", "king", "queen", "of", "and", "to", "my", "lord", "thou", "art", "love", "death"]
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(words) + ("\n" if rng.random() < 0.1 else ""))
    path.write_text(" ".join(out)[:chars], encoding="utf-8")
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")


def tiny_config(data: Path | str, **overrides) -> RunConfig:
    """A model small enough that a few dozen steps take well under a second."""
    base = dict(data=str(data), n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                dropout=0.0, skips={1: 0.0}, max_iters=20, lr=1e-3, min_lr=1e-4, warmup_iters=5,
                eval_interval=10, eval_iters=2, dtype="float32")
    base.update(overrides)
    return RunConfig.from_dict(base)


ROOT = Path(__file__).resolve().parents[1]

#: Tiny suites for end-to-end tests of the driver, workers and CLI.

#: [defaults] of a tiny model (a 60-step run takes about a second); format with corpus=PATH.
TINY_DEFAULTS = """
[defaults]
data = "{corpus}"
n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
batch_size = 4
dropout = 0.0
skips = {{ 1 = 0.0 }}
max_iters = 60
lr = 1e-3
min_lr = 1e-4
warmup_iters = 5
eval_interval = 20
eval_iters = 2
dtype = "float32"
"""

SUITES = """
default_suite = "alpha"
""" + TINY_DEFAULTS + """
[suites.alpha]
grid = {{ "skips.1" = [0.0, 0.1] }}
references = {{ "skips.1=0" = 3.0 }}

[suites.beta]
runs = [ {{ name = "deep", n_layer = 2 }}, {{ name = "wide", n_embd = 32 }} ]

[suites.boom]
runs = [ {{ name = "ok" }}, {{ name = "nan", lr = 1e10, min_lr = 0.0 }} ]

[suites.long]
max_iters = 1000000
runs = [ {{ name = "x" }} ]

[suites.slow]
max_iters = 1000
eval_interval = 50
runs = [ {{ name = "a" }}, {{ name = "b", n_embd = 32 }} ]
"""


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    corpus = write_corpus(tmp_path / "corpus.txt")
    (tmp_path / "experiments.toml").write_text(SUITES.format(corpus=corpus), encoding="utf-8")
    return tmp_path


def cli(lab_dir: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m lab ARGS` in lab_dir to the end."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=lab_dir, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def start(lab_dir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m lab ARGS` in lab_dir in the background."""
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=lab_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(lab_dir: Path, suite: str | None = None):
    with Store.open(lab_dir / "runs") as store:
        return {r.name: r for r in store.runs(suite)}


def metric_steps(lab_dir: Path, run_id: str, split: str) -> list[int]:
    with Store.open(lab_dir / "runs") as store:
        return [m[0] for m in store.metrics(run_id, split)]


