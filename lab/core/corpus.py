"""The corpus as text: find it, verify it, read it; no torch.

Tiny Shakespeare is looked up in a fixed order (DESIGN.md section 3): an explicit path, then
`$DROPRES_DATA`, then the user cache, then a download from the canonical char-rnn URL that is
verified against its SHA-256 before it is kept. Any other UTF-8 text file works as a corpus
by giving its path. Every problem a user can cause raises `DataError` with one readable line.

This half of the corpus is torch-free so that the lab's clients (the TUI, `validate`) can
check every corpus a launch needs, and its block sizes, without importing torch; tokenising
into tensors and sampling batches is `lab.core.data`, which builds on this module.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .atomic import write_atomic
from .errors import DataError

TINY_SHAKESPEARE = "tinyshakespeare"
TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def cache_dir() -> Path:
    """Per-user cache folder for downloaded corpora (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("dropres-lab"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, expected_sha256: str, timeout: float = 30.0) -> Path:
    """Fetch url to dest atomically; keep it only when its SHA-256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"Tiny Shakespeare is not cached and the download failed ({reason}); "
            f"pass --data PATH, set $DROPRES_DATA to a local copy, or place it at {dest}"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha256:
        raise DataError(
            f"downloaded Tiny Shakespeare has SHA-256 {digest[:12]}..., expected "
            f"{expected_sha256[:12]}...; not kept. Retry later or pass --data PATH"
        )
    write_atomic(dest, payload)
    return dest


def locate_corpus(data: str = TINY_SHAKESPEARE, *, download: bool = True) -> Path:
    """Resolve a `data` setting to a file on disk.

    `data` is "tinyshakespeare" or a path to any UTF-8 text file. For Tiny Shakespeare the
    order is $DROPRES_DATA, the user cache, then a verified download into the cache.
    """
    if data != TINY_SHAKESPEARE:
        path = Path(data).expanduser()
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "not found"
            raise DataError(f"corpus {data}: {what}; give a path to a UTF-8 text file or \"tinyshakespeare\"")
        return path
    env = os.environ.get("DROPRES_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise DataError(f"$DROPRES_DATA={env}: file not found; fix the path or unset it to use the cache or a download")
        if sha256_of(path) != TINY_SHAKESPEARE_SHA256:
            raise DataError(
                f"$DROPRES_DATA={env} is not Tiny Shakespeare (SHA-256 mismatch); "
                "to train on another text, set data = PATH instead"
            )
        return path
    cached = cache_dir() / "tinyshakespeare.txt"
    if cached.is_file() and sha256_of(cached) == TINY_SHAKESPEARE_SHA256:
        return cached
    if not download:
        raise DataError(
            f"Tiny Shakespeare not found: pass --data PATH, set $DROPRES_DATA, or place it at {cached}"
        )
    return _download(TINY_SHAKESPEARE_URL, cached, TINY_SHAKESPEARE_SHA256)


def train_size(n_chars: int) -> int:
    """Characters in the training split (the first 90 %); the rest is validation."""
    return int(TRAIN_FRACTION * n_chars)


def check_block_size(path: str, n_chars: int, block_size: int) -> None:
    """Each split of an `n_chars` corpus must hold one window of block_size + 1 characters."""
    n_train = train_size(n_chars)
    n_val = n_chars - n_train
    shortest = min(n_train, n_val)
    if shortest <= block_size:
        raise DataError(
            f"corpus {path} is too short for block_size {block_size}: its "
            f"{'validation' if n_val <= n_train else 'training'} split has "
            f"{shortest} characters; each split needs more than block_size "
            f"(the file needs about {int((block_size + 1) / (1 - TRAIN_FRACTION)) + 1})"
        )


@dataclass(frozen=True)
class CorpusText:
    """A corpus file read and checked: UTF-8 text that is not empty and not binary."""

    path: str
    sha256: str
    text: str

    def check_block_size(self, block_size: int) -> None:
        check_block_size(self.path, len(self.text), block_size)


@lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int) -> CorpusText:
    return decode_corpus(path, Path(path).read_bytes())


def decode_corpus(path: str, raw: bytes) -> CorpusText:
    """Check a corpus's bytes (not empty, not binary, UTF-8) and decode them; `path` names it."""
    if not raw:
        raise DataError(f"corpus {path} is empty; give a UTF-8 text file with some text in it")
    if b"\x00" in raw:
        raise DataError(f"corpus {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus {path} is not UTF-8 text (invalid byte at offset {exc.start}); convert it to UTF-8") from None
    return CorpusText(path, hashlib.sha256(raw).hexdigest(), text)


def read_corpus_text(path: Path | str) -> CorpusText:
    """Read and check a corpus file (cached per process while the file is unchanged)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"corpus {path}: {exc.strerror or exc}") from None
    return _read(str(p.resolve()), st.st_mtime_ns, st.st_size)


def get_corpus_text(data: str = TINY_SHAKESPEARE) -> CorpusText:
    """locate_corpus + read_corpus_text: what checking a launch needs, without torch."""
    return read_corpus_text(locate_corpus(data))
