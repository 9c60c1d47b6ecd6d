"""Per-run checkpoints: their format and file names, the sink the trainer hands them to, and
reading them back.

A group checkpoints each run on its own (its slice of the weights and optimiser state), so a
run can resume in a different group from the one it was trained in. The trainer encodes a
run's state to bytes and hands them to the `CheckpointSink` it was given, which makes them
durable and says where (on a thread of its own, `BackgroundSaves`, while training goes on;
the trainer reports a checkpoint only once it is durable); it resumes from what that sink
gives back. The sink of local workers,
`FileCheckpointSink`, writes the run's folder atomically (a kill mid-write leaves the previous
checkpoint intact); an executor on other machines swaps in a sink that sends the bytes home.

The core writes and reads, and never deletes: the store keeps the newest checkpoints it has
recorded and discards the rest (lab/store.py). Checkpoints load with `weights_only=True`, so
a checkpoint can never run code, and a damaged one is skipped, with a warning, for the one
before it. torch is imported inside the functions that need it: the store and its clients
(the TUI) use the file names here without loading torch.
"""

from __future__ import annotations

import io
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

from .atomic import atomic_writer
from .config import RunConfig

if TYPE_CHECKING:
    from .model import Decoder

FORMAT = 1
_FILE_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says which file and why."""


# -- file names -------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    """The file name of a run's checkpoint at `step` (`step_000000500.pt`)."""
    return f"step_{step:09d}.pt"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file name, or None for any other name (temp files included)."""
    m = _FILE_RE.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in a run's folder, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := checkpoint_step(p.name)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def write_checkpoint_file(folder: Path, step: int, data: bytes) -> Path:
    """Write a checkpoint's bytes as folder/step_NNNNNNNNN.pt atomically; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / checkpoint_name(step)
    with atomic_writer(dest) as fh:
        fh.write(data)
    return dest


# -- the format -------------------------------------------------------------------------------


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """A run's state (plain tensors, numbers, strings) as checkpoint bytes."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class SavedCheckpoint:
    """One durable checkpoint of a run, read only when needed (`read()` gives its bytes)."""

    step: int
    where: str  # for messages: a file's path, or wherever a sink keeps the bytes
    read: Callable[[], bytes]

    @classmethod
    def in_file(cls, path: Path, step: int | None = None) -> "SavedCheckpoint":
        """A checkpoint file; its step is read from its name unless given."""
        step = checkpoint_step(path.name) if step is None else step
        if step is None:
            raise ValueError(f"not a checkpoint file name: {path.name}")
        return cls(step, str(path), path.read_bytes)


def load_checkpoint(saved: SavedCheckpoint) -> dict[str, Any]:
    """Read and decode one checkpoint safely; any damage becomes a CheckpointError naming it."""
    import torch

    try:
        state = torch.load(io.BytesIO(saved.read()), map_location="cpu", weights_only=True)
    except Exception as exc:  # missing, truncated, corrupt or foreign
        raise CheckpointError(f"checkpoint {saved.where} is unreadable ({type(exc).__name__}); it will be skipped") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {saved.where} is not a dropres-lab checkpoint of format {FORMAT}")
    return state


def load_newest(saved: Iterable[SavedCheckpoint], warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The first readable checkpoint of `saved` (newest first), falling back past damaged ones.

    `warn(message)` hears about every checkpoint that had to be skipped. None: nothing usable.
    """
    for candidate in saved:
        try:
            return load_checkpoint(candidate)
        except CheckpointError as exc:
            if warn is not None:
                warn(str(exc))
    return None


# -- where checkpoints go -----------------------------------------------------------------------


class CheckpointSink(Protocol):
    """Where the trainer hands each run's checkpoint, and where it resumes from.

    Run ids are the trainer's; the bytes are opaque to the sink (`encode_checkpoint`).
    """

    def save(self, run_id: str, step: int, data: bytes) -> str:
        """Make the checkpoint durable; return where it is (the trainer reports it in
        `Checkpointed`, which tells the store it may rely on it)."""
        ...

    def saved(self, run_id: str) -> Iterable[SavedCheckpoint]:
        """The run's checkpoints, newest first (empty for a run that starts fresh)."""
        ...


class FileCheckpointSink:
    """Local workers' sink: each run's checkpoints are files in the run's own folder."""

    def __init__(self, folders: Mapping[str, Path]):
        self.folders = dict(folders)

    def save(self, run_id: str, step: int, data: bytes) -> str:
        return str(write_checkpoint_file(self.folders[run_id], step, data))

    def saved(self, run_id: str) -> list[SavedCheckpoint]:
        return [SavedCheckpoint.in_file(p) for p in list_checkpoints(self.folders[run_id])]


class BackgroundSaves:
    """Hands checkpoints to a sink on a thread of their own, so training goes on while they
    are made durable (a file write and fsync per run: a tenth of a second or more per group
    on a busy disk, at every evaluation).

    The trainer still reports a checkpoint only once the sink says it is durable: `done()`
    gives back the saves that have finished since it was last asked, `settle()` waits for all
    of them first. A save that failed raises its exception from `done()`/`settle()`, in the
    trainer's thread, so a full disk fails the group as a synchronous write did. Saves are
    made one at a time, in the order given.
    """

    def __init__(self, sink: CheckpointSink):
        self.sink = sink
        self._todo: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._finished: list[tuple[str, int, str]] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, run_id: str, step: int, data: bytes) -> None:
        """Queue a run's checkpoint bytes for the sink (a thread starts when none is running)."""
        with self._lock:
            self._todo.put((run_id, step, data))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="checkpoint-saves", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        """Save what is queued, then end: a long-lived worker keeps no idle thread per group."""
        while True:
            with self._lock:
                if self._todo.empty():
                    self._thread = None
                    return
            run_id, step, data = self._todo.get()
            try:
                if self._error is None:  # after a failure, later saves are not attempted
                    where = self.sink.save(run_id, step, data)
                    with self._lock:
                        self._finished.append((run_id, step, where))
            except BaseException as exc:  # handed to the trainer's thread by raise_failure()
                with self._lock:
                    self._error = exc
            finally:
                self._todo.task_done()

    def done(self) -> list[tuple[str, int, str]]:
        """(run_id, step, where) of every save finished since the last call, in order."""
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def settle(self) -> list[tuple[str, int, str]]:
        """Wait until every submitted save has finished (or failed), then `done()`."""
        self._todo.join()
        return self.done()

    def raise_failure(self) -> None:
        """Raise the exception of a save that failed, if one did (a failed save ends the group)."""
        with self._lock:
            error = self._error
        if error is not None:
            raise error


class ShippingCheckpointSink:
    """A remote worker's sink, for machines that share no filesystem with the driver.

    Each checkpoint's bytes go home through `send(run_id, step, data)` (the executor's event
    channel, in order with the events), and the driver writes them into the store's folder of
    the run, `home[run_id]`, before it reads the `Checkpointed` that follows; so `save` answers
    with that path. Resuming reads the checkpoints the driver handed over with the task
    (`resume[run_id]`: (step, bytes), newest first).
    """

    def __init__(self, home: Mapping[str, str], send: Callable[[str, int, bytes], None],
                 resume: Mapping[str, list[tuple[int, bytes]]] | None = None):
        self.home = dict(home)
        self.send = send
        self.resume = dict(resume or {})

    def save(self, run_id: str, step: int, data: bytes) -> str:
        self.send(run_id, step, data)
        return str(Path(self.home[run_id]) / checkpoint_name(step))

    def saved(self, run_id: str) -> list[SavedCheckpoint]:
        where = Path(self.home.get(run_id, run_id))
        return [SavedCheckpoint(step, f"{where / checkpoint_name(step)} (sent by the driver)", lambda data=data: data)
                for step, data in self.resume.get(run_id, [])]


# -- models from checkpoints --------------------------------------------------------------------


def load_run_weights(model: "Decoder", slot: int, state: dict[str, Any]) -> None:
    """Copy a checkpoint's weights into configuration `slot` of a (grouped) model."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            saved = state["model"].get(name)
            if saved is None or tuple(saved.shape) != tuple(p.shape[1:]):
                found = "missing" if saved is None else f"of shape {tuple(saved.shape)}"
                raise CheckpointError(f"checkpoint weight {name} is {found}, the model needs {tuple(p.shape[1:])}; "
                                      "start the run over with --fresh")
            p[slot].copy_(saved)


def model_from_checkpoint(state: dict[str, Any]) -> tuple["Decoder", list[str]]:
    """The run's trained model (on the CPU) and its vocabulary, from its checkpoint alone:
    the settings and the characters travel in the checkpoint, so no corpus is needed."""
    from .model import Decoder

    vocab = list(state["vocab"])
    model = Decoder([RunConfig.from_dict(state["config"])], len(vocab))
    load_run_weights(model, 0, state)
    return model, vocab
