"""Shared fixtures: tiny generated corpora and tiny configurations, so tests stay fast."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lab.core.config import RunConfig


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
                eval_interval=10, eval_iters=2)
    base.update(overrides)
    return RunConfig.from_dict(base)
