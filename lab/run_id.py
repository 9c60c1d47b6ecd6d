"""A run's identifier, in a module of its own so that run specs and the store share it.

`lab.experiments` (run specs, imported by every front-end) and `lab.store` (the SQLite store)
both need the one rule that names a run; neither should import the other for it.
"""

from __future__ import annotations

import hashlib


def make_run_id(suite: str, name: str, config_hash: str) -> str:
    """A run's identifier: 16 hex chars of sha256 over (suite, name, config hash).

    Safe as a folder name whatever the user called the run, and stable, so the same run
    enqueued twice gets the same id. Fields are joined by NUL, which names may not contain,
    so ("a/b", "c") and ("a", "b/c") cannot collide.
    """
    blob = "\x00".join((suite, name, config_hash)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
