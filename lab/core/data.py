"""The corpus as tokens: tokenise it per character, split it, and sample batches.

Finding, verifying and reading the corpus file is `lab.core.corpus` (torch-free, so clients
can check corpora without torch); this module turns that text into token tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .corpus import TINY_SHAKESPEARE, CorpusText, check_block_size, decode_corpus, locate_corpus, read_corpus_text, train_size
from .errors import DataError

__all__ = ["Corpus", "DataError", "get_batch", "get_corpus", "load_corpus", "random_starts", "window_batch"]


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: sorted character vocabulary, 90/10 train/val split."""

    path: str
    sha256: str
    chars: tuple[str, ...]
    train: torch.Tensor  # int64 token ids
    val: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def split(self, name: str) -> torch.Tensor:
        return self.train if name == "train" else self.val

    def check_block_size(self, block_size: int) -> None:
        """Each split must hold at least one window of block_size + 1 characters."""
        check_block_size(self.path, len(self.train) + len(self.val), block_size)


@lru_cache(maxsize=8)
def _tokenise(text: CorpusText) -> Corpus:
    """The characters in code-point order (as `sorted(set(text))`) and every character's index
    among them, computed on tensors: a Python loop over tinyshakespeare's million characters
    took 0.15 s of every worker's start, this a few milliseconds."""
    points = torch.frombuffer(bytearray(text.text.encode("utf-32-le")), dtype=torch.int32).long()
    present = torch.bincount(points).nonzero().squeeze(1)  # the code points that occur, ascending
    chars = tuple(chr(c) for c in present.tolist())
    index = torch.zeros(int(present[-1]) + 1, dtype=torch.int64)
    index[present] = torch.arange(len(present))
    ids = index[points]
    n_train = train_size(len(ids))
    return Corpus(text.path, text.sha256, chars, ids[:n_train], ids[n_train:])


def corpus_from_bytes(raw: bytes, name: str, sha256: str) -> Corpus:
    """A corpus that arrived as bytes (a cluster node has no copy of the file): verified
    against the SHA-256 the sender computed, then checked and tokenised as a file is."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataError(f"corpus {name} arrived with SHA-256 {digest[:12]}..., expected {sha256[:12]}...; not used")
    return _tokenise(decode_corpus(name, raw))


def load_corpus(path: Path | str) -> Corpus:
    """Read and tokenise a corpus file (cached per process while the file is unchanged)."""
    return _tokenise(read_corpus_text(path))


def get_corpus(data: str = TINY_SHAKESPEARE) -> Corpus:
    """locate_corpus + load_corpus: what the trainer and `sample` need."""
    return load_corpus(locate_corpus(data))


def window_batch(data: torch.Tensor, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets for windows starting at `starts`: both [len(starts), T]."""
    offsets = torch.arange(block_size + 1)
    windows = data[starts[:, None] + offsets]  # [B, T+1]
    return windows[:, :-1], windows[:, 1:]


def random_starts(data: torch.Tensor, count: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    """Window starts drawn as nanoGPT draws them: uniform over len(data) - block_size."""
    return torch.randint(len(data) - block_size, (count,), generator=generator)


def get_batch(
    corpus: Corpus, split: str, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random training batch of (x, y), each [batch_size, block_size], on the CPU."""
    data = corpus.split(split)
    return window_batch(data, random_starts(data, batch_size, block_size, generator), block_size)
