"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never half.

Every file the lab writes for the user (checkpoints, the downloaded corpus, experiments.toml,
exported tables) goes through here: a temporary file in the same folder, flushed and fsynced,
then renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_writer(path: str | os.PathLike, binary: bool = True) -> Iterator[IO]:
    """Yield a file to write; on success it replaces `path` (permissions kept, links followed)."""
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of `atomic_writer`'s temporaries (one that outlives its write
    was left by a killed process)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def write_atomic(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns the resolved target."""
    with atomic_writer(path, binary=isinstance(content, bytes)) as fh:
        fh.write(content)
    return Path(os.path.realpath(path))
