"""Per-run checkpoints: written atomically, read back safely, the newest two kept.

A group writes one file per run (its own slice of the weights and optimiser state), so a run
can resume in a different group from the one it was trained in. Files are written to a temp
name and renamed, so a kill mid-write leaves the previous checkpoint intact; they load with
`weights_only=True`, so a checkpoint can never run code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .atomic import TEMP_SUFFIX, atomic_writer

FORMAT = 1
CHECKPOINT_FILE_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says which file and why."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in a run's folder, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_FILE_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write state as folder/step_NNNNNNNNN.pt atomically, then prune to the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / checkpoint_name(step)
    import torch  # here, not at import time: the store and its clients never need torch

    with atomic_writer(dest) as fh:
        torch.save({"format": FORMAT, **state}, fh)
    prune_checkpoints(folder, keep)
    return dest


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and any temp file a kill left behind."""
    for old in list_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint safely; any damage becomes a CheckpointError naming the file."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}); it will be skipped") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a dropres-lab checkpoint of format {FORMAT}")
    return state


def load_latest(folder: Path, warn=None) -> dict[str, Any] | None:
    """The newest readable checkpoint in a run's folder, falling back past damaged ones.

    `warn(message)` hears about every file that had to be skipped.
    """
    for path in list_checkpoints(folder):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            if warn is not None:
                warn(str(exc))
    return None
