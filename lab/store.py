"""The run store: the lab's source of truth and its queue (DESIGN.md section 3).

One folder holds everything a sweep has earned::

    <dir>/store.sqlite3            runs, metrics, checkpoint records, requests, driver info
    <dir>/checkpoints/<run_id>/    checkpoint files of one run (run_id is a hex string we make)
    <dir>/driver.lock              flock held by the one driver; holds its pid for messages
    <dir>/driver.log               the detached driver's output

Why SQLite in WAL mode: the driver writes while the TUI, `results` and other readers read, and
WAL lets readers proceed during a write. Every write is one transaction, so a driver killed
with SIGKILL mid-write leaves the database exactly as of the last commit (synchronous=NORMAL
is durable against process crashes; only a power cut can lose the last few commits, never
corrupt the file).

Who writes what: the driver applies the workers' typed events (`apply`, `apply_many`) and
claims the store with `DriverLock`; clients (TUI, CLI) enqueue runs and write requests
(stop, cancel, exit when idle) that the driver acts on. Clients never train and never talk to workers.
Checkpoint files are written by the trainer's sink (lab/core/checkpoint.py) and count once the
store has recorded them; the store is the only one that deletes them (`_prune` keeps the
newest KEEP_CHECKPOINTS, `discard_unrecorded_checkpoints` clears what a crash left behind).

Schema changes go through `_MIGRATIONS`, applied in one transaction when a store is opened.

Conventions: timestamps are Unix seconds (floats); non-finite numbers (NaN, inf) are stored as
NULL, so a `RunRow` field is None where there is no finite value and a metric loss reads back
as NaN (a gap in a curve). Run names are data, never paths: files live under the run_id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from lab.core.atomic import is_temp_name
from lab.core.checkpoint import checkpoint_name, checkpoint_step
from lab.core.config import RunConfig
from lab.core.events import (
    Checkpointed,
    Diverged,
    Evaluated,
    Event,
    Failed,
    Finished,
    Started,
    StepLogged,
    Stopped,
    Warned,
)
from lab.formatting import fmt_loss
from lab.run_id import make_run_id

DEFAULT_STORE_DIR = "runs"
STORE_ENV = "DROPRES_STORE"
DB_NAME = "store.sqlite3"
LOCK_NAME = "driver.lock"
LOG_NAME = "driver.log"
CHECKPOINTS_NAME = "checkpoints"

STATUSES = ("queued", "running", "finished", "failed", "diverged", "stopped")
#: Statuses that are results: rerunning the same command skips them.
RESULT_STATUSES = ("finished", "diverged")
#: Statuses that a new enqueue (or `requeue`) puts back in the queue, resuming from a checkpoint.
RESUMABLE_STATUSES = ("failed", "stopped")
REQUEST_KINDS = ("stop", "cancel", "stop_all", "exit")
#: Requests addressed to the driver itself rather than to one run.
DRIVER_REQUEST_KINDS = ("stop_all", "exit")
#: Who a driver is: `run --headless` in a terminal, or the lab's detached background driver.
DRIVER_KINDS = ("headless", "background")

#: Checkpoints kept per run while it trains; a finished run keeps only its final one. The store
#: is the one place that deletes checkpoints (the trainer only writes them), see `_prune`.
KEEP_CHECKPOINTS = 2
#: How long a writer waits for another writer before giving up (SQLite busy_timeout).
BUSY_TIMEOUT_S = 15.0

_RUN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
#: Runs queued per write transaction by `enqueue_many`: large enough that a sweep is a few
#: commits, small enough that a reader (the TUI, `results`) never waits long for one.
ENQUEUE_BATCH = 5000
#: Writes of at least this many runs get a page cache of ROOMY_CACHE_KIB (`Store._roomy`).
ROOMY_WRITE_ROWS = 1000
ROOMY_CACHE_KIB = 256 * 1024
#: Host parameters per `IN (...)` query: well under SQLite's smallest default limit (999).
SQL_VARIABLES = 900


class StoreError(Exception):
    """A problem the user can fix (store locked, path is a file, disk full, newer schema).

    The message is one readable line; the CLI prints it and exits 2, without a traceback.
    """


# -- paths ----------------------------------------------------------------------------------


def resolve_store_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: `--store DIR`, else `$DROPRES_STORE`, else `runs/` in the working dir.

    Returned absolute so that a detached driver started elsewhere finds the same store.
    A path that exists and is not a folder is refused here, before anything is written.
    """
    raw = explicit if explicit not in (None, "") else os.environ.get(STORE_ENV) or DEFAULT_STORE_DIR
    path = Path(os.path.abspath(Path(raw).expanduser()))
    _check_is_folder(path)
    return path


def _check_is_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise StoreError(f"store path {path} is a file, not a folder; use --store DIR with a folder")


def _finite(x: Any) -> float | None:
    """Finite float or None: SQLite would store NaN as NULL anyway, and inf is not JSON."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "an unknown time"


# -- rows -------------------------------------------------------------------------------------


@dataclass
class RunRow:
    """One run as the store knows it: identity, settings, status, progress and results."""

    run_id: str
    suite: str
    name: str
    base_name: str  # the name without a replicate's "#seed" suffix, for aggregation
    config: RunConfig
    config_hash: str
    status: str
    step: int
    max_iters: int
    reference: float | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    final_val: float | None
    best_val: float | None  # best evaluation so far while running; the trainer's at the end
    final_train: float | None
    exact_val: float | None
    wall_s: float | None
    tokens_per_s: float | None
    error: str | None
    device: str | None
    dtype: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    last_train_loss: float | None = None
    last_val_loss: float | None = None
    tokens_per_s_live: float | None = None
    checkpoint_step: int | None = None
    n_params: int | None = None
    group_size: int | None = None
    queued_at: float | None = None
    updated_at: float | None = None

    @property
    def is_result(self) -> bool:
        """Finished and diverged runs are results: rerunning skips them."""
        return self.status in RESULT_STATUSES

    @property
    def group_text(self) -> str:
        """What the scheduler groups by (`RunConfig.group_text`), as `QueuedRun` has it."""
        return self.config.group_text()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the resolved settings as a dict, non-finite numbers as None."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["config"] = self.config.to_dict()
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class NewRun(NamedTuple):
    """A run to queue (`Store.enqueue_many`): what names it and what it trains."""

    suite: str
    name: str
    base_name: str
    config: RunConfig
    reference: float | None


class QueuedRun(NamedTuple):
    """A queued run as the scheduler reads it (`Store.queued_runs`): its id, what it groups by
    (`RunConfig.group_text`, stored at enqueue) and the step it resumes from. Three columns,
    not a whole row: the driver plans a 100,000-run queue from these in a fraction of a second
    and reads whole rows only for the groups it hands to workers."""

    run_id: str
    group_text: str
    checkpoint_step: int | None


@dataclass(frozen=True)
class Request:
    """A client's request to the driver: stop or cancel one run, stop everything ("stop_all"),
    or exit if idle ("exit": a lingering background driver makes way for `run --headless`)."""

    id: int
    run_id: str | None
    kind: str
    created_at: float


@dataclass(frozen=True)
class DriverInfo:
    """What the current (or last) driver wrote about itself; `alive` checks its lock.

    `kind` is "headless" or "background" (`DRIVER_KINDS`), or None for a record written before
    drivers recorded it (schema 1). Without it a driver that takes no new work could be a
    headless run or a background driver winding down, which clients must tell apart.
    """

    pid: int | None
    started_at: float | None
    accepting: bool
    alive: bool
    kind: str | None = None
    executor: str | None = None  # what its executor trains on (`Executor.describe`), once it has said


# -- schema -----------------------------------------------------------------------------------

#: Schema 1, as the first release created it. Never edit it: every store, new or old, is built
#: from it by the same `_MIGRATIONS`, so a store upgraded in place and a new one are identical.
_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    name TEXT NOT NULL,
    base_name TEXT NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed', 'diverged', 'stopped')),
    step INTEGER NOT NULL DEFAULT 0,
    max_iters INTEGER NOT NULL,
    reference REAL,
    created_at REAL NOT NULL,
    queued_at REAL,
    started_at REAL,
    ended_at REAL,
    updated_at REAL,
    final_val REAL,
    best_val REAL,
    final_train REAL,
    exact_val REAL,
    wall_s REAL,
    tokens_per_s REAL,
    error TEXT,
    device TEXT,
    dtype TEXT,
    n_params INTEGER,
    group_size INTEGER,
    provenance TEXT NOT NULL DEFAULT '{}',
    last_train_loss REAL,
    last_val_loss REAL,
    tokens_per_s_live REAL,
    checkpoint_step INTEGER,
    UNIQUE (suite, name, config_hash)
);
CREATE INDEX runs_by_status ON runs (status, queued_at);
CREATE INDEX runs_by_suite ON runs (suite, name);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    split TEXT NOT NULL,
    loss REAL,
    lr REAL,
    PRIMARY KEY (run_id, step, split)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT REFERENCES runs (run_id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('stop', 'cancel', 'stop_all')),
    created_at REAL NOT NULL,
    acked_at REAL
);
CREATE TABLE log (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at REAL NOT NULL,
    step INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX log_by_run ON log (run_id, at);
CREATE TABLE driver (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    started_at REAL,
    accepting INTEGER NOT NULL DEFAULT 1,
    updated_at REAL
);
"""

#: A step from one schema version to the next: SQL statements (separated by ";") or a function
#: of the open transaction's connection, for changes that need Python (e.g. reading the config JSON).
Migration = str | Callable[[sqlite3.Connection], None]


def _add_group_text(c: sqlite3.Connection) -> None:
    """The `group_text` column, filled from each run's settings (old stores have no other source)."""
    c.execute("ALTER TABLE runs ADD COLUMN group_text TEXT")
    c.executemany("UPDATE runs SET group_text = ? WHERE rowid = ?",
                  [(RunConfig.from_dict(json.loads(config)).group_text(), rowid)
                   for rowid, config in c.execute("SELECT rowid, config FROM runs").fetchall()])


#: `_MIGRATIONS[k - 1]` upgrades a store from schema k to k + 1. A schema change is a new entry
#: at the end (never an edit of an old one); `Store.open` applies the missing ones in one
#: transaction, so a store is upgraded completely or not at all.
_MIGRATIONS: list[Migration] = [
    # 1 -> 2: the driver records its kind (NULL: an older driver); the "exit" request. SQLite
    # cannot change a CHECK constraint, so the requests table is rebuilt with its rows.
    """ALTER TABLE driver ADD COLUMN kind TEXT CHECK (kind IN ('headless', 'background'));
    CREATE TABLE requests_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT REFERENCES runs (run_id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('stop', 'cancel', 'stop_all', 'exit')),
        created_at REAL NOT NULL,
        acked_at REAL
    );
    INSERT INTO requests_v2 (id, run_id, kind, created_at, acked_at)
        SELECT id, run_id, kind, created_at, acked_at FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v2 RENAME TO requests""",
    # 2 -> 3: what the scheduler groups by, in its own column (see `QueuedRun`).
    _add_group_text,
    # 3 -> 4: the lab's paged reads (`run_states`, `page_ids`) walk these instead of sorting
    # or scanning every run at each poll of a 100,000-run store.
    """CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
    CREATE INDEX IF NOT EXISTS runs_by_updated ON runs (updated_at)""",
    # 4 -> 5: the driver records what its executor trains on ("ray: 3 nodes, 8 GPUs, 96 CPUs; ..."), for
    # the lab's status line (NULL: not said yet, or an older driver)
    "ALTER TABLE driver ADD COLUMN executor TEXT",
]

#: The schema this code writes; a store of a higher version was made by a newer dropres-lab.
SCHEMA_VERSION = 1 + len(_MIGRATIONS)


def _run_sql(c: sqlite3.Connection, script: str) -> None:
    """Statement by statement: executescript would commit the open transaction midway."""
    for stmt in script.split(";"):
        if stmt.strip():
            c.execute(stmt)


def _apply_migrations(c: sqlite3.Connection, version: int | None, migrations: Sequence[Migration]) -> int:
    """Bring a store from `version` (None: an empty database) to the last of `migrations`.

    Runs inside the caller's transaction and records the version reached, which it returns.
    """
    if version is None:
        _run_sql(c, _SCHEMA_V1)
        c.execute("INSERT INTO schema_version (version) VALUES (1)")
        version = 1
    for step in migrations[version - 1:]:
        if callable(step):
            step(c)
        else:
            _run_sql(c, step)
        version += 1
    c.execute("UPDATE schema_version SET version = ?", (version,))
    return version


def _log_message(ev: Event) -> str | None:
    """What a lifecycle event says in the run's log; per-step metrics are not logged."""
    if isinstance(ev, Started):
        how = "resumed" if ev.step else "started"
        where = f"{ev.device} of node {ev.node}" if ev.node else ev.device
        note = f"; {ev.dtype_note}" if ev.dtype_note else ""
        return f"{how} at step {ev.step} of {ev.max_iters} on {where} ({ev.dtype}, group of {ev.group_size}){note}"
    if isinstance(ev, Finished):
        return f"finished: val {fmt_loss(ev.final_val)} (best {fmt_loss(ev.best_val)}, exact {fmt_loss(ev.exact_val)})"
    if isinstance(ev, Diverged):
        return f"diverged: {ev.reason}"
    if isinstance(ev, Failed):
        return f"failed: {ev.reason}"
    if isinstance(ev, Stopped):
        return f"stopped at step {ev.step} (resumable)"
    if isinstance(ev, Warned):
        return f"warning: {ev.message}"
    return None


class Store:
    """The run store. Open with `Store.open(dir)`; safe to share between threads of a process.

    Writes are serialised by SQLite (BEGIN IMMEDIATE plus a busy timeout), so the driver and
    clients in other processes can write at once; only the driver applies training events.
    """

    def __init__(self, dir: Path, conn: sqlite3.Connection) -> None:
        """Use `Store.open`, which creates the folder and checks the schema."""
        self.dir = dir
        self._conn = conn
        self._lock = threading.RLock()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, dir: str | os.PathLike[str]) -> "Store":
        """Open (creating if needed) the store in `dir`.

        Raises StoreError when the path is a file, the folder cannot be created, the database
        is not one of ours or is damaged, or it was made by a newer dropres-lab.
        """
        path = Path(os.path.abspath(Path(dir).expanduser()))
        _check_is_folder(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / CHECKPOINTS_NAME).mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store folder {path}: {e.strerror or e}") from None
        db = path / DB_NAME
        if db.exists() and not db.is_file():
            raise StoreError(f"{db} is not a file; move it away or use --store DIR")
        try:
            conn = sqlite3.connect(
                db, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the store {db}: {e}") from None
        store = cls(path, conn)
        try:
            store._setup()
        except BaseException:
            conn.close()
            raise
        return store

    def _setup(self) -> None:
        conn = self._conn
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_size_limit = 67108864")
        except sqlite3.DatabaseError as e:
            raise self._error(e, "open") from None
        if str(mode).lower() != "wal":
            raise StoreError(
                f"the store {self.db_path} cannot use SQLite's WAL mode here (got {mode!r}); "
                "put it on a local disk with --store DIR"
            )
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        with self._write() as c:  # create or upgrade, once, under the write lock
            version = self._schema_version()
            if version == SCHEMA_VERSION:  # another process created or upgraded it meanwhile
                return
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store at {self.dir} was made by a newer dropres-lab (schema {version}, "
                    f"this version reads up to {SCHEMA_VERSION}); upgrade dropres-lab or use --store DIR"
                )
            _apply_migrations(c, version, _MIGRATIONS)

    def _schema_version(self) -> int | None:
        try:
            has = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if not has:
                if self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise StoreError(
                        f"{self.db_path} is an SQLite database but not a dropres-lab store; "
                        "use --store DIR with another folder"
                    )
                return None
            row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        except sqlite3.DatabaseError as e:
            raise self._error(e, "open") from None
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the connection; committed data is already safe on disk."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths ----------------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.dir / DB_NAME

    @property
    def log_path(self) -> Path:
        """Where a detached driver writes its output."""
        return self.dir / LOG_NAME

    def checkpoint_dir(self, run_id: str) -> Path:
        """The run's checkpoint folder (not created here; the trainer creates it when writing).

        Only store-made run ids are accepted, so no name can point outside the store.
        """
        if not _RUN_ID_RE.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.dir / CHECKPOINTS_NAME / run_id

    def checkpoint_path(self, run_id: str, step: int) -> Path:
        """The conventional file for a checkpoint at `step` (`step_000000500.pt`).

        Writers should write a temporary file beside it and rename it into place; pruning
        recognises this name and never touches other files of a run that is still training.
        """
        return self.checkpoint_dir(run_id) / checkpoint_name(int(step))

    def discard_unrecorded_checkpoints(self, run_id: str) -> None:
        """Before a run (re)starts: delete what a resume must not pick up from its folder.

        That is checkpoint files newer than the newest one recorded (written just before a
        crash, they would resume past metrics the store never received, leaving a gap in the
        curves) and temporary files of writes that a kill interrupted. Older files stay for
        the trainer to fall back to.
        """
        rows = self._read("SELECT checkpoint_step FROM runs WHERE run_id = ?", (run_id,))
        recorded = rows[0]["checkpoint_step"] if rows else None
        try:
            entries = list(self.checkpoint_dir(run_id).iterdir())
        except OSError:  # no folder yet
            return
        for entry in entries:
            step = checkpoint_step(entry.name)
            if is_temp_name(entry.name) or (step is not None and (recorded is None or step > recorded)):
                _remove(entry)

    def checkpoints(self, run_id: str) -> list[tuple[int, Path]]:
        """Recorded checkpoints whose file exists, newest first (fall back along this list
        when the newest is corrupt)."""
        with self._lock:
            rows = self._read(
                "SELECT step, path FROM checkpoints WHERE run_id = ? ORDER BY step DESC", (run_id,)
            )
        out = [(int(r["step"]), self._abs(r["path"])) for r in rows]
        return [(s, p) for s, p in out if p.is_file()]

    def latest_checkpoint(self, run_id: str) -> Path | None:
        """The newest recorded checkpoint whose file exists, or None (start from scratch).

        Only checkpoints the store has recorded count: the metrics up to that step are
        committed too, so resuming from it never leaves a gap in the curves.
        """
        found = self.checkpoints(run_id)
        return found[0][1] if found else None

    def _abs(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.dir / p

    def _rel(self, path: str | os.PathLike[str]) -> str:
        """Store paths inside the folder relative to it, so the folder can be moved."""
        p = Path(os.path.realpath(path))
        try:
            return str(p.relative_to(os.path.realpath(self.dir)))
        except ValueError:
            return str(p)

    # -- transactions and errors ----------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so the busy
        timeout applies (a deferred transaction that upgrades to a writer would fail at once).

        SQLite and OS failures (disk full, I/O error, store busy too long) roll back and are
        raised as one-line StoreErrors; what was committed before stays intact.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.OperationalError, OSError) as e:
                raise self._error(e, "write") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(e, (sqlite3.OperationalError, OSError)) or type(e) is sqlite3.DatabaseError:
                    raise self._error(e, "write") from None
                raise

    @contextlib.contextmanager
    def _roomy(self, rows: int) -> Iterator[None]:
        """A page cache large enough for one write of `rows` runs (queueing or marking a
        sweep): with SQLite's default 2 MB, a transaction over 100,000 runs spills pages to the
        WAL and rewrites them, at twice the time. Back to the default after it."""
        if rows < ROOMY_WRITE_ROWS:
            yield
            return
        with self._lock:
            before = self._conn.execute("PRAGMA cache_size").fetchone()[0]
            self._conn.execute(f"PRAGMA cache_size = -{ROOMY_CACHE_KIB}")
            try:
                yield
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA cache_size = {int(before)}")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except (sqlite3.OperationalError, OSError) as e:
                raise self._error(e, "read") from None
            except sqlite3.DatabaseError as e:
                if type(e) is sqlite3.DatabaseError:
                    raise self._error(e, "read") from None
                raise

    def _error(self, e: BaseException, action: str) -> StoreError:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, OSError) and e.strerror:
            text = e.strerror
        hint = "use --store DIR to choose another folder"
        low = text.lower()
        full = "full" in low or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
        if full:
            hint = "free some disk space (nothing committed so far was lost) or use --store DIR"
        elif "locked" in low or "busy" in low:
            text = f"the store was busy for more than {BUSY_TIMEOUT_S:g} s ({text})"
            hint = "another process holds it; try again"
        elif "not a database" in low or "malformed" in low:
            hint = "the file is damaged or not a store; move it away or use --store DIR"
        return StoreError(f"cannot {action} the run store {self.db_path}: {text}; {hint}")

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "anything new?" for pollers."""
        return int(self._read("PRAGMA data_version")[0][0])

    # -- runs -----------------------------------------------------------------------------------

    def enqueue(
        self,
        suite: str,
        name: str,
        base_name: str,
        config: RunConfig,
        reference: float | None,
        fresh: bool = False,
    ) -> RunRow:
        """Queue a run, or find it: identity is suite + name + config.identity_hash().

        An existing run keeps its row: finished and diverged runs are results and stay as
        they are; failed, stopped and interrupted ones (left "running" with no live driver)
        are queued again at their checkpoint's step, so they resume. `fresh=True` drops the
        run's metrics and checkpoints and queues it from step 0. The reference is display
        data, not identity, so it is updated to the caller's value.
        """
        return self.enqueue_many([NewRun(suite, name, base_name, config, reference)], fresh=fresh)[0]

    def enqueue_many(self, runs: Sequence["NewRun"], fresh: bool = False,
                     provenance: Sequence[dict[str, Any]] | None = None) -> list[RunRow]:
        """`enqueue` for many runs, in one transaction per `ENQUEUE_BATCH` runs rather than one
        (or two, with provenance) per run: a 10,000-run grid is queued in a second, not a minute.

        `provenance[i]` is merged into run i's provenance in the same transaction. A batch is
        all or nothing; batches before a failing one stay queued, as runs enqueued one by one
        would. Returns the runs' rows in the order given.
        """
        for run in runs:
            for label, text in (("suite", run.suite), ("run name", run.name), ("base name", run.base_name)):
                if not text or "\x00" in text:
                    raise StoreError(f"{label} {text!r} must be a non-empty string without NUL characters")
        hashes = [run.config.identity_hash() for run in runs]
        ids = [make_run_id(run.suite, run.name, h) for run, h in zip(runs, hashes)]
        driver_alive = DriverLock.is_held(self.dir)
        drop_dirs: list[str] = []
        made: dict[str, RunRow] = {}  # runs inserted here, as they were written
        texts: dict[int, str] = {}  # id of a provenance dict (alive in `provenance`) -> its JSON
        for start in range(0, len(runs), ENQUEUE_BATCH):
            batch = range(start, min(len(runs), start + ENQUEUE_BATCH))
            now = time.time()
            with self._roomy(len(batch)), self._write() as c:
                status = self._statuses(c, [ids[i] for i in batch])
                fresh_rows = []
                for i in batch:
                    run, run_id = runs[i], ids[i]
                    reference = _finite(run.reference)
                    if run_id not in status:
                        fresh_rows.append(run_id)
                        origin = texts.get(id(provenance[i])) if provenance else "{}"  # a sweep's runs share
                        if origin is None:  # one provenance dict: encoded once
                            origin = texts[id(provenance[i])] = json.dumps(provenance[i], sort_keys=True, default=str)
                        c.execute(
                            """INSERT INTO runs (run_id, suite, name, base_name, config, config_hash, status,
                                   step, max_iters, reference, created_at, queued_at, updated_at, provenance,
                                   group_text)
                               VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?)""",
                            (run_id, run.suite, run.name, run.base_name, json.dumps(run.config.to_dict(), sort_keys=True),
                             hashes[i], run.config.max_iters, reference, now, now, now, origin,
                             run.config.group_text()),
                        )
                        status[run_id] = "queued"
                        made[run_id] = RunRow(  # what reading it back would give, without reading 100,000 rows
                            run_id=run_id, suite=run.suite, name=run.name, base_name=run.base_name, config=run.config,
                            config_hash=hashes[i], status="queued", step=0, max_iters=run.config.max_iters,
                            reference=reference, created_at=now, started_at=None, ended_at=None, final_val=None,
                            best_val=None, final_train=None, exact_val=None, wall_s=None, tokens_per_s=None,
                            error=None, device=None, dtype=None, provenance=json.loads(origin), queued_at=now,
                            updated_at=now)
                        continue
                    made.pop(run_id, None)  # queued twice in one call: read back as the store has it
                    c.execute("UPDATE runs SET reference = ? WHERE run_id = ?", (reference, run_id))
                    if status[run_id] == "running" and driver_alive:
                        if fresh:
                            raise StoreError(
                                f"run {run.suite}/{run.name} is running; stop it before starting it over with --fresh"
                            )
                    elif fresh and run_id not in fresh_rows:
                        c.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                        c.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
                        c.execute(
                            f"""UPDATE runs SET status = 'queued', step = 0, queued_at = ?, updated_at = ?,
                                   {", ".join(f"{k} = NULL" for k in _RESET_FIELDS)}, provenance = '{{}}'
                               WHERE run_id = ?""",
                            (now, now, run_id),
                        )
                        fresh_rows.append(run_id)
                        drop_dirs.append(run_id)
                    elif status[run_id] in RESUMABLE_STATUSES or status[run_id] == "running":
                        self._requeue(c, [run_id], now)
                    if provenance:
                        self._merge_provenance(c, run_id, provenance[i])
        for run_id in drop_dirs:
            shutil.rmtree(self.checkpoint_dir(run_id), ignore_errors=True)
        rows = self.get_many([run_id for run_id in dict.fromkeys(ids) if run_id not in made])
        rows.update(made)
        return [rows[run_id] for run_id in ids]

    @staticmethod
    def _statuses(c: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, str]:
        """run_id -> status of those of `run_ids` in the store."""
        out: dict[str, str] = {}
        for start in range(0, len(run_ids), SQL_VARIABLES):
            chunk = run_ids[start:start + SQL_VARIABLES]
            out.update(c.execute(f"SELECT run_id, status FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})",
                                 chunk).fetchall())
        return out

    def get_many(self, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """run_id -> row of those of `run_ids` in the store, read in a few queries."""
        out: dict[str, RunRow] = {}
        ids = list(run_ids)
        for start in range(0, len(ids), SQL_VARIABLES):
            chunk = ids[start:start + SQL_VARIABLES]
            for r in self._read(f"SELECT * FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})", chunk):
                out[r["run_id"]] = _row(r)
        return out

    def refresh(self, rows: Sequence[RunRow]) -> list[RunRow]:
        """`rows` as the store has them now, in the order given, those deleted meanwhile left
        out. A run's settings never change (they are its identity), so they are not parsed
        again: most of the cost of reading a row, at the end of a 100,000-run sweep."""
        known = {r.run_id: r.config for r in rows}
        ids = list(known)
        out: dict[str, RunRow] = {}
        for start in range(0, len(ids), SQL_VARIABLES):
            chunk = ids[start:start + SQL_VARIABLES]
            for r in self._read(f"SELECT * FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})", chunk):
                out[r["run_id"]] = _row(r, known[r["run_id"]])
        return [out[r.run_id] for r in rows if r.run_id in out]

    def requeue(self, run_ids: Iterable[str]) -> list[str]:
        """Put failed, stopped or running runs back in the queue at their checkpoint's step.

        For the driver: e.g. group-mates of a run that ran out of memory, retried in smaller
        groups. Results (finished, diverged) are never requeued. Returns the ids requeued.
        """
        with self._write() as c:
            return self._requeue(c, list(run_ids), time.time())

    def _requeue(self, c: sqlite3.Connection, run_ids: list[str], now: float) -> list[str]:
        done = []
        for run_id in run_ids:
            row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] not in RESUMABLE_STATUSES + ("running",):
                continue
            ckpts = c.execute(
                "SELECT step, path FROM checkpoints WHERE run_id = ? ORDER BY step DESC", (run_id,)
            ).fetchall()
            step = next((int(r["step"]) for r in ckpts if self._abs(r["path"]).is_file()), 0)
            c.execute(
                """UPDATE runs SET status = 'queued', step = ?, queued_at = ?, updated_at = ?,
                       error = NULL, ended_at = NULL WHERE run_id = ?""",
                (step, now, now, run_id),
            )
            done.append(run_id)
        return done

    def get(self, run_id: str) -> RunRow | None:
        rows = self._read("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _row(rows[0]) if rows else None

    def queued(self) -> list[RunRow]:
        """The queue, first queued first."""
        rows = self._read("SELECT * FROM runs WHERE status = 'queued' ORDER BY queued_at, rowid")
        return [_row(r) for r in rows]

    def queued_runs(self) -> list[QueuedRun]:
        """The queue as the scheduler reads it, first queued first: three columns per run."""
        rows = self._read("SELECT run_id, group_text, checkpoint_step FROM runs WHERE status = 'queued' "
                          "ORDER BY queued_at, rowid")
        return [QueuedRun(*r) for r in rows]

    def group_leaders(self, queued: Iterable["QueuedRun | RunRow"]) -> list[RunRow]:
        """A whole row for the first of `queued` in each group: the settings that decide what
        dtype "auto" means are the same for all of a group (they are in its group key), so the
        driver's start-up reads one row per group, not the whole queue."""
        firsts: dict[str, str] = {}
        for r in queued:
            firsts.setdefault(r.group_text, r.run_id)
        rows = self.get_many(list(firsts.values()))
        return [rows[rid] for rid in firsts.values() if rid in rows]

    def queued_ids(self) -> list[str]:
        """The queue's run ids, first queued first: what a stop needs, without reading (and
        parsing) 100,000 whole rows."""
        return [r[0] for r in self._read("SELECT run_id FROM runs WHERE status = 'queued' ORDER BY queued_at, rowid")]

    def outcomes(self, statuses: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """(run id, status, error) of the runs in `statuses`, without reading whole rows."""
        rows = self._read(f"SELECT run_id, status, error FROM runs WHERE status IN ({', '.join('?' * len(statuses))})",
                          list(statuses))
        return [(r[0], r[1], r[2]) for r in rows]

    def runs(self, suite: str | None = None, statuses: Iterable[str] | None = None) -> list[RunRow]:
        """Runs in the order they were first enqueued, optionally of one suite and statuses."""
        sql, args = "SELECT * FROM runs WHERE 1", []
        if suite is not None:
            sql += " AND suite = ?"
            args.append(suite)
        if statuses is not None:
            statuses = [statuses] if isinstance(statuses, str) else list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            args.extend(statuses)
        return [_row(r) for r in self._read(sql + " ORDER BY created_at, rowid", args)]

    def find(self, suite: str, name: str | None = None) -> list[RunRow]:
        """Runs of a suite, or of one name in it (several when settings differ, e.g. --max-iters)."""
        if name is None:
            return self.runs(suite)
        rows = self._read(
            "SELECT * FROM runs WHERE suite = ? AND name = ? ORDER BY created_at, rowid", (suite, name)
        )
        return [_row(r) for r in rows]

    #: The order `lab.results` ranks a suite's runs in: lowest best val first, no value last,
    #: then by name; ties in the order the runs were first queued (`runs`).
    RANK_ORDER = "best_val IS NULL, best_val, name, created_at, rowid"

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the store as of one moment (one read transaction), whatever a
        driver writes meanwhile: an export reads a suite more than once, and every pass must
        see the same runs with the same results."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except (sqlite3.OperationalError, OSError) as e:
                raise self._error(e, "read") from None
            try:
                yield
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("COMMIT")

    def ranked(self, suite: str, fields: Sequence[str], base_name: str | None = None) -> Iterator[sqlite3.Row]:
        """Columns `fields` of a suite's runs (or of one base name in it) in rank order
        (`RANK_ORDER`), a few thousand rows read at a time: what an export streams instead of
        holding 100,000 rows."""
        if not all(re.fullmatch(r"[a-z_]+|\*", f) for f in fields):
            raise ValueError(f"not column names: {fields!r}")
        sql, args = f"SELECT {', '.join(fields)} FROM runs WHERE suite = ?", [suite]
        if base_name is not None:
            sql += " AND base_name = ?"
            args.append(base_name)
        with self._lock:
            try:
                cursor = self._conn.execute(f"{sql} ORDER BY {self.RANK_ORDER}", args)
                while chunk := cursor.fetchmany(2000):
                    yield from chunk
            except (sqlite3.OperationalError, OSError) as e:
                raise self._error(e, "read") from None

    def ranked_rows(self, suite: str) -> Iterator[RunRow]:
        """A suite's whole rows in rank order (`ranked`)."""
        return (_row(r) for r in self.ranked(suite, ["*"]))

    def best_runs(self, suite: str | None = None, limit: int = 25) -> tuple[list[RunRow], dict[str, int]]:
        """The `limit` runs of each suite (or of `suite`) with the lowest best val, in rank
        order (`RANK_ORDER`, as `ranked` and `lab.results` rank), suites in first-seen order, and how many
        runs each suite has in all. Sorted and cut in SQL, so a table of a 100,000-run store
        reads a few rows, not all of them (the ranking sorts keys only, not whole rows)."""
        where, args = ("WHERE suite = ?", [suite]) if suite is not None else ("", [])
        rows = self._read(
            f"""SELECT runs.*, ranked.in_suite FROM (
                   SELECT rowid AS rid, row_number() OVER (PARTITION BY suite ORDER BY {self.RANK_ORDER}) AS place,
                          count(*) OVER (PARTITION BY suite) AS in_suite,
                          min(rowid) OVER (PARTITION BY suite) AS suite_first
                   FROM runs {where}) AS ranked
               JOIN runs ON runs.rowid = ranked.rid
               WHERE ranked.place <= ? ORDER BY ranked.suite_first, ranked.place""",
            [*args, limit],
        )
        return [_row(r) for r in rows], {r["suite"]: int(r["in_suite"]) for r in rows}

    def skip_depths(self) -> list[int]:
        """Every skip depth that some run's settings have a path for, ascending."""
        rows = self._read("SELECT DISTINCT CAST(j.key AS INTEGER) FROM runs, json_each(runs.config, '$.skips') AS j")
        return sorted(int(r[0]) for r in rows)

    def suites(self) -> list[str]:
        """Suites present in the store, in the order first seen."""
        rows = self._read("SELECT suite, min(rowid) AS first FROM runs GROUP BY suite ORDER BY first")
        return [r["suite"] for r in rows]

    # -- paged reads for views (the lab on a 100,000-run store) -------------------------------
    # A view polls what changed and reads whole rows only for what it shows; counting,
    # filtering and paging happen here, in SQL, never in Python over every run.

    def run_states(self, since: float | None = None) -> list[tuple[str, str, float | None, int]]:
        """(run id, status, updated time, step) of every run in store order, or of the runs
        updated at or after `since`: what tells a poller which rows changed without reading them."""
        if since is None:
            rows = self._read("SELECT run_id, status, updated_at, step FROM runs ORDER BY created_at, rowid")
        else:
            rows = self._read("""SELECT run_id, status, updated_at, step FROM runs WHERE updated_at >= ?
                                 ORDER BY created_at, rowid""", (since,))
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    def count_runs(self, text: str = "") -> int:
        """How many runs match the filter `text` (`view_filter`; "" counts every run)."""
        where, args = view_filter(text)
        return int(self._read(f"SELECT count(*) FROM runs WHERE {where}", args)[0][0])

    def page_ids(self, text: str = "", offset: int = 0, limit: int = 200) -> list[str]:
        """The ids of `limit` runs from `offset` of those matching `text`, in store order."""
        where, args = view_filter(text)
        rows = self._read(f"SELECT run_id FROM runs WHERE {where} ORDER BY created_at, rowid LIMIT ? OFFSET ?",
                          [*args, max(0, limit), max(0, offset)])
        return [r[0] for r in rows]

    def replicated_suites(self) -> list[str]:
        """Suites with a replicate (a run whose name is not its base name), in first-seen order."""
        rows = self._read("""SELECT suite, min(rowid) AS first FROM runs WHERE base_name != name
                             GROUP BY suite ORDER BY first""")
        return [r[0] for r in rows]

    def set_provenance(self, run_id: str, values: dict[str, Any]) -> None:
        """Merge provenance (lab/torch/python versions, device, dtype, corpus sha256) into a run's.

        Merged rather than replaced so the driver and the Started event can each add theirs.
        """
        with self._write() as c:
            self._merge_provenance(c, run_id, values)

    def _merge_provenance(self, c: sqlite3.Connection, run_id: str, values: dict[str, Any]) -> None:
        row = c.execute("SELECT provenance FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return
        merged = json.loads(row["provenance"] or "{}")
        merged.update(values)
        c.execute(
            "UPDATE runs SET provenance = ? WHERE run_id = ?",
            (json.dumps(merged, sort_keys=True, default=str), run_id),
        )

    def mark_interrupted(self) -> list[str]:
        """For a driver that has just taken the lock: runs a dead driver left "running"
        become "stopped" (resumable from their checkpoint), with a note saying so
        (`as_interrupted` is the same change, for a view)."""
        now = time.time()
        with self._write() as c:
            ids = [r[0] for r in c.execute("SELECT run_id FROM runs WHERE status = 'running'")]
            c.execute(
                """UPDATE runs SET status = 'stopped', ended_at = ?, updated_at = ?, error = ?
                   WHERE status = 'running'""",
                (now, now, INTERRUPTED_NOTE),
            )
        return ids

    def fail_runs(self, run_ids: Iterable[str], reason: str) -> list[str]:
        """Mark runs failed with a reason (e.g. their worker was killed).

        Only runs still queued or running change: a group-mate that already finished or
        diverged keeps its result. Returns the ids marked.
        """
        return self._end_runs(run_ids, "failed", reason)

    def stop_runs(self, run_ids: Iterable[str], note: str | None = None) -> list[str]:
        """Mark queued or running runs stopped (resumable: a rerun continues from their newest
        checkpoint, or from the start if they never checkpointed). Returns the ids marked."""
        return self._end_runs(run_ids, "stopped", note)

    def _end_runs(self, run_ids: Iterable[str], status: str, note: str | None) -> list[str]:
        """One UPDATE per `SQL_VARIABLES` runs and one batched log insert, in one transaction:
        a stop marks 100,000 queued runs in well under a second, where a statement per run
        (two with the log line) took half a minute. Returns the ids marked, in the order given."""
        ids = list(dict.fromkeys(run_ids))
        now = time.time()
        done: list[str] = []
        # "+status": the status test must not touch its index, which the UPDATE changes (with
        # it, SQLite updates in two passes: four times the time for 100,000 runs).
        with self._roomy(len(ids)), self._write() as c:
            for start in range(0, len(ids), SQL_VARIABLES):
                chunk = ids[start:start + SQL_VARIABLES]
                marked = {r[0] for r in c.execute(
                    f"""UPDATE runs SET status = ?, error = ?, ended_at = ?, updated_at = ?
                        WHERE run_id IN ({', '.join('?' * len(chunk))}) AND +status IN ('queued', 'running')
                        RETURNING run_id""",
                    (status, note, now, now, *chunk)).fetchall()}
                done.extend(run_id for run_id in chunk if run_id in marked)
            if note:
                c.executemany("INSERT INTO log (run_id, at, step, message) VALUES (?, ?, NULL, ?)",
                              [(run_id, now, f"{status}: {note}") for run_id in done])
        return done

    def delete(self, run_ids: Iterable[str]) -> int:
        """Delete runs with their metrics, requests and checkpoint folders (`dropres-lab rm`).

        The rows go first, in one transaction; folders after, so a failure part-way leaves at
        worst an orphan folder, never a row pointing at missing files. Returns rows deleted.
        The caller decides whether deleting a running run is allowed.
        """
        ids = list(run_ids)
        for run_id in ids:
            self.checkpoint_dir(run_id)  # validates the id before anything is deleted
        with self._write() as c:
            n = 0
            for run_id in ids:
                n += c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
        for run_id in ids:
            shutil.rmtree(self.checkpoint_dir(run_id), ignore_errors=True)
        return n

    # -- events -------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Write one training event (see `apply_many`)."""
        self.apply_many([event])

    def apply_many(self, events: Iterable[Event]) -> None:
        """Write a batch of training events in one transaction (the driver batches its writes).

        Events for runs that are not in the store (deleted while training) are ignored.
        Checkpoint files are pruned only after the transaction commits, so a failed write
        never leaves the records pointing at deleted files.
        """
        unlink: list[Path] = []
        with self._write() as c:
            for event in events:
                self._apply(c, event, time.time(), unlink)
        for path in unlink:
            _remove(path)

    def _apply(self, c: sqlite3.Connection, ev: Event, now: float, unlink: list[Path]) -> None:
        run_id = ev.run_id
        if c.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            return
        if isinstance(ev, StepLogged):
            c.execute(
                "INSERT OR REPLACE INTO metrics (run_id, step, split, loss, lr) VALUES (?, ?, 'train_step', ?, ?)",
                (run_id, ev.step, _finite(ev.train_loss), _finite(ev.lr)),
            )
            c.execute(
                """UPDATE runs SET step = ?, last_train_loss = ?, tokens_per_s_live = ?, updated_at = ?
                   WHERE run_id = ?""",
                (ev.step, _finite(ev.train_loss), _finite(ev.tokens_per_s), now, run_id),
            )
        elif isinstance(ev, Evaluated):
            train, val, lr = _finite(ev.train_loss), _finite(ev.val_loss), _finite(ev.lr)
            c.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, split, loss, lr) VALUES (?, ?, ?, ?, ?)",
                [(run_id, ev.step, "train", train, lr), (run_id, ev.step, "val", val, lr)],
            )
            c.execute(
                """UPDATE runs SET step = :step, last_val_loss = :val, updated_at = :now,
                       best_val = CASE WHEN :val IS NULL THEN best_val
                                       WHEN best_val IS NULL OR :val < best_val THEN :val
                                       ELSE best_val END
                   WHERE run_id = :run_id""",
                {"step": ev.step, "val": val, "now": now, "run_id": run_id},
            )
        elif isinstance(ev, Started):
            # A (re)start at step s: drop what came after s (metrics of the interrupted session,
            # checkpoints the trainer could not use), so the resumed curve has each step once.
            self._truncate(c, run_id, ev.step, unlink)
            c.execute(
                """UPDATE runs SET status = 'running', step = ?, max_iters = ?, started_at = ?,
                       ended_at = NULL, error = NULL, device = ?, dtype = ?, n_params = ?,
                       group_size = ?, updated_at = ? WHERE run_id = ?""",
                (ev.step, ev.max_iters, now, ev.device, ev.dtype, ev.n_params, ev.group_size, now, run_id),
            )
            self._merge_provenance(c, run_id, {"device": ev.device, "dtype": ev.dtype, "worker_pid": ev.pid,
                                               **({"dtype_choice": ev.dtype_note} if ev.dtype_note else {}),
                                               **({"node": ev.node} if ev.node else {})})
        elif isinstance(ev, Checkpointed):
            c.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, step, path, created_at) VALUES (?, ?, ?, ?)",
                (run_id, ev.step, self._rel(ev.path), now),
            )
            c.execute(
                "UPDATE runs SET checkpoint_step = ?, updated_at = ? WHERE run_id = ?",
                (ev.step, now, run_id),
            )
            self._prune(c, run_id, KEEP_CHECKPOINTS, unlink, final=False)
        elif isinstance(ev, Finished):
            c.execute(
                """UPDATE runs SET status = 'finished', step = ?, final_val = ?, best_val = ?,
                       final_train = ?, exact_val = ?, wall_s = ?, tokens_per_s = ?, error = NULL,
                       ended_at = ?, updated_at = ? WHERE run_id = ?""",
                (ev.step, _finite(ev.final_val), _finite(ev.best_val), _finite(ev.final_train),
                 _finite(ev.exact_val), _finite(ev.wall_s), _finite(ev.tokens_per_s), now, now, run_id),
            )
            self._prune(c, run_id, 1, unlink, final=True)
        elif isinstance(ev, (Diverged, Failed)):
            status = "diverged" if isinstance(ev, Diverged) else "failed"
            c.execute(
                """UPDATE runs SET status = ?, step = ?, error = ?, ended_at = ?, updated_at = ?
                   WHERE run_id = ?""",
                (status, ev.step, ev.reason, now, now, run_id),
            )
        elif isinstance(ev, Stopped):
            c.execute(
                """UPDATE runs SET status = 'stopped', step = ?, error = NULL, ended_at = ?, updated_at = ?
                   WHERE run_id = ?""",
                (ev.step, now, now, run_id),
            )
        elif not isinstance(ev, Warned):
            raise TypeError(f"not a training event: {ev!r}")
        message = _log_message(ev)
        if message:
            c.execute("INSERT INTO log (run_id, at, step, message) VALUES (?, ?, ?, ?)",
                      (run_id, now, ev.step, message))

    def log(self, run_id: str) -> list[tuple[float, int | None, str]]:
        """The run's lifecycle log, oldest first: (unix time, step, message)."""
        rows = self._read("SELECT at, step, message FROM log WHERE run_id = ? ORDER BY at, rowid", [run_id])
        return [(float(r[0]), r[1], r[2]) for r in rows]

    def truncate_metrics(self, run_id: str, step: int) -> None:
        """Delete a run's metrics and checkpoint records after `step` (it resumes from there).

        `apply(Started(step=s))` does this itself; it is public for drivers that resume runs
        another way. The live fields (last losses, best so far) are recomputed from what stays.
        """
        unlink: list[Path] = []
        with self._write() as c:
            self._truncate(c, run_id, step, unlink)
        for path in unlink:
            _remove(path)

    def _truncate(self, c: sqlite3.Connection, run_id: str, step: int, unlink: list[Path]) -> None:
        c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, step))
        later = c.execute(
            "SELECT path FROM checkpoints WHERE run_id = ? AND step > ?", (run_id, step)
        ).fetchall()
        if later:
            c.execute("DELETE FROM checkpoints WHERE run_id = ? AND step > ?", (run_id, step))
            keep = {self._abs(r["path"]) for r in c.execute(
                "SELECT path FROM checkpoints WHERE run_id = ?", (run_id,))}
            unlink.extend(p for p in (self._abs(r["path"]) for r in later)
                          if p not in keep and self._inside_run_dir(run_id, p))
        c.execute(
            """UPDATE runs SET
                   best_val = (SELECT min(loss) FROM metrics WHERE run_id = ?1 AND split = 'val'),
                   last_val_loss = (SELECT loss FROM metrics WHERE run_id = ?1 AND split = 'val'
                                    ORDER BY step DESC LIMIT 1),
                   last_train_loss = (SELECT loss FROM metrics WHERE run_id = ?1 AND split = 'train_step'
                                      ORDER BY step DESC LIMIT 1),
                   checkpoint_step = (SELECT max(step) FROM checkpoints WHERE run_id = ?1)
               WHERE run_id = ?1""",
            (run_id,),
        )

    def _prune(self, c: sqlite3.Connection, run_id: str, keep: int, unlink: list[Path], final: bool) -> None:
        """Keep the newest `keep` recorded checkpoints; queue the other files for deletion.

        Only files inside the run's folder are ever deleted. While training, stray files are
        removed only if they carry the checkpoint name with a step older than every kept one
        (a temporary file being written right now is left alone); once finished, everything
        but the kept checkpoint goes.
        """
        rows = c.execute(
            "SELECT step, path FROM checkpoints WHERE run_id = ? ORDER BY step DESC", (run_id,)
        ).fetchall()
        kept, dropped = rows[:keep], rows[keep:]
        for r in dropped:
            c.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", (run_id, r["step"]))
        kept_paths = {self._abs(r["path"]) for r in kept}
        doomed = {self._abs(r["path"]) for r in dropped}
        folder = self.checkpoint_dir(run_id)
        oldest_kept = min((int(r["step"]) for r in kept), default=None)
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                step = checkpoint_step(entry.name)
                if final or (step is not None and oldest_kept is not None and step < oldest_kept):
                    doomed.add(entry)
        unlink.extend(p for p in doomed if p not in kept_paths and self._inside_run_dir(run_id, p))

    def _inside_run_dir(self, run_id: str, path: Path) -> bool:
        folder = os.path.realpath(self.checkpoint_dir(run_id))
        return os.path.dirname(os.path.realpath(path)) == folder

    def metrics(
        self, run_id: str, split: str | None = None, since_step: int | None = None
    ) -> list[tuple[int, str, float, float | None]]:
        """(step, split, loss, lr) ordered by step; splits are "train_step" (one batch, every
        log interval), "train" and "val" (evaluation estimates). A non-finite loss reads as NaN.
        `since_step` returns only later steps, for views that poll incrementally."""
        sql, args = "SELECT step, split, loss, lr FROM metrics WHERE run_id = ?", [run_id]
        if split is not None:
            sql += " AND split = ?"
            args.append(split)
        if since_step is not None:
            sql += " AND step > ?"
            args.append(since_step)
        rows = self._read(sql + " ORDER BY step, split", args)
        return [
            (int(r[0]), r[1], float("nan") if r[2] is None else float(r[2]), r[3]) for r in rows
        ]

    # -- requests and the driver ------------------------------------------------------------------

    def request(self, run_id: str | None, kind: str) -> int:
        """Ask the driver to stop or cancel a run, to stop everything ("stop_all"), or to exit
        if it is idle ("exit"; a busy driver ignores it).

        The driver polls `pending_requests` and acknowledges each one it read.
        """
        if kind not in REQUEST_KINDS:
            raise ValueError(f"request kind must be one of {', '.join(REQUEST_KINDS)}, got {kind!r}")
        to_driver = kind in DRIVER_REQUEST_KINDS
        if (run_id is None) != to_driver:
            raise ValueError(f"a {kind!r} request {'takes no' if to_driver else 'needs a'} run id")
        with self._write() as c:
            if run_id is not None and c.execute(
                "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone() is None:
                raise StoreError(f"no run {run_id} in the store at {self.dir}")
            cur = c.execute(
                "INSERT INTO requests (run_id, kind, created_at) VALUES (?, ?, ?)",
                (run_id, kind, time.time()),
            )
            return int(cur.lastrowid)

    def pending_requests(self) -> list[Request]:
        """Requests not yet acknowledged, oldest first."""
        rows = self._read(
            "SELECT id, run_id, kind, created_at FROM requests WHERE acked_at IS NULL ORDER BY id"
        )
        return [Request(int(r[0]), r[1], r[2], float(r[3])) for r in rows]

    def ack_request(self, request_id: int) -> None:
        """Mark a request handled so it is not acted on twice."""
        with self._write() as c:
            c.execute("UPDATE requests SET acked_at = ? WHERE id = ? AND acked_at IS NULL",
                      (time.time(), request_id))

    def clear_requests(self) -> int:
        """Acknowledge every pending request; a new driver calls this so that a "stop_all"
        meant for a driver that has since exited does not stop the new one. Returns the count."""
        with self._write() as c:
            return c.execute("UPDATE requests SET acked_at = ? WHERE acked_at IS NULL",
                             (time.time(),)).rowcount

    def set_driver_info(self, pid: int, accepting: bool, *, kind: str) -> None:
        """Record the driver's pid, kind (`DRIVER_KINDS`) and whether it takes new work (False
        for a headless run, and while a background driver winds down, so a client starts a
        new driver instead of queueing behind one that is exiting)."""
        if kind not in DRIVER_KINDS:
            raise ValueError(f"driver kind must be one of {', '.join(DRIVER_KINDS)}, got {kind!r}")
        now = time.time()
        with self._write() as c:
            row = c.execute("SELECT pid, started_at, executor FROM driver WHERE id = 1").fetchone()
            same = row is not None and row["pid"] == pid  # the same driver: it keeps its start and executor
            c.execute(
                """INSERT OR REPLACE INTO driver (id, pid, started_at, accepting, updated_at, kind, executor)
                   VALUES (1, ?, ?, ?, ?, ?, ?)""",
                (pid, row["started_at"] if same else now, int(bool(accepting)), now, kind,
                 row["executor"] if same else None),
            )

    def set_driver_executor(self, pid: int, description: str) -> None:
        """Record what driver `pid`'s executor trains on (`Executor.describe`), so that clients
        (the lab's status line) can say it; a cluster's changes as nodes join and leave."""
        with self._write() as c:
            c.execute("UPDATE driver SET executor = ?, updated_at = ? WHERE id = 1 AND pid = ?",
                      (description, time.time(), pid))

    def clear_driver_info(self) -> None:
        """A driver that exits cleanly removes its record."""
        with self._write() as c:
            c.execute("DELETE FROM driver")

    def driver_info(self) -> DriverInfo | None:
        """The last driver's record, with `alive` from its lock (robust against SIGKILL: the OS
        drops the lock when the process dies). None if no driver has written one."""
        rows = self._read("SELECT pid, started_at, accepting, kind, executor FROM driver WHERE id = 1")
        alive = DriverLock.is_held(self.dir)
        if not rows:
            return None
        r = rows[0]
        return DriverInfo(r["pid"], r["started_at"], bool(r["accepting"]), alive, r["kind"], r["executor"])

    def driver_alive(self) -> bool:
        """Whether some process holds the driver lock right now."""
        return DriverLock.is_held(self.dir)


#: What a run left "running" by a driver that died says (`mark_interrupted`, `as_interrupted`).
INTERRUPTED_NOTE = "interrupted: the driver running it exited; resumable from its last checkpoint"


def view_filter(text: str) -> tuple[str, list[Any]]:
    """A view's filter as an SQL condition: each word is a status ("running failed": either)
    or a piece of "suite/name" (case-insensitive); every non-status word must match."""
    statuses, pieces = [], []
    for word in text.split():
        (statuses if word.lower() in STATUSES else pieces).append(word)
    where, args = ["1"], []
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args += [w.lower() for w in statuses]
    for piece in pieces:
        escaped = piece.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("(suite || '/' || name) LIKE ? ESCAPE '\\'")
        args.append(f"%{escaped}%")
    return " AND ".join(where), args


def as_interrupted(row: RunRow) -> RunRow:
    """A run a dead driver left "running", as `mark_interrupted` will record it when the next
    driver starts: stopped (resumable), with the note saying why. For views, which show the
    truth as soon as the driver is known dead without writing to the store themselves."""
    if row.status != "running":
        return row
    return replace(row, status="stopped", error=INTERRUPTED_NOTE, ended_at=row.updated_at)


#: Result and live fields cleared when a run starts over (`enqueue(..., fresh=True)`).
_RESET_FIELDS = (
    "started_at", "ended_at", "final_val", "best_val", "final_train", "exact_val", "wall_s",
    "tokens_per_s", "error", "device", "dtype", "n_params", "group_size", "last_train_loss",
    "last_val_loss", "tokens_per_s_live", "checkpoint_step",
)


def _row(r: sqlite3.Row, config: RunConfig | None = None) -> RunRow:
    """A run from its database row; `config`: its settings when already known (they never
    change for a run id), which saves parsing them."""
    def num(key: str) -> float | None:
        v = r[key]
        return None if v is None else float(v)

    return RunRow(
        run_id=r["run_id"], suite=r["suite"], name=r["name"], base_name=r["base_name"],
        config=config or RunConfig.from_dict(json.loads(r["config"])), config_hash=r["config_hash"],
        status=r["status"], step=int(r["step"]), max_iters=int(r["max_iters"]),
        reference=num("reference"), created_at=float(r["created_at"]),
        started_at=num("started_at"), ended_at=num("ended_at"),
        final_val=num("final_val"), best_val=num("best_val"), final_train=num("final_train"),
        exact_val=num("exact_val"), wall_s=num("wall_s"), tokens_per_s=num("tokens_per_s"),
        error=r["error"], device=r["device"], dtype=r["dtype"],
        provenance=json.loads(r["provenance"] or "{}"),
        last_train_loss=num("last_train_loss"), last_val_loss=num("last_val_loss"),
        tokens_per_s_live=num("tokens_per_s_live"), checkpoint_step=r["checkpoint_step"],
        n_params=r["n_params"], group_size=r["group_size"], queued_at=num("queued_at"),
        updated_at=num("updated_at"),
    )


def _remove(path: Path) -> None:
    """Best effort: a checkpoint that cannot be deleted only costs disk space."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


# -- the driver lock ----------------------------------------------------------------------------

#: Locks held by this process. A forked child (e.g. a multiprocessing worker started with
#: "fork") inherits the locked file; it closes its copy so that, if the driver is killed, a
#: surviving child does not keep the store locked. (Closing a copy never releases the parent's.)
#: Strong references: a held lock stays held until `release()` or the end of the process, even
#: if the caller drops the object.
_HELD_LOCKS: "set[DriverLock]" = set()


def _forget_locks_in_child() -> None:
    for lock in list(_HELD_LOCKS):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DriverLock:
    """The one-driver-per-store lock: `fcntl.flock` on `<dir>/driver.lock`.

    The kernel drops an flock when its holder dies, SIGKILL included, so a lock left by a
    dead driver is simply free and the next driver takes it over; no pid guessing is needed
    for correctness. The holder's pid and start time are written into the file only to name
    it in the refusal message. The file is never deleted (deleting a lock file lets two
    processes hold locks on two different files).
    """

    def __init__(self, dir: str | os.PathLike[str]) -> None:
        self.dir = Path(os.path.abspath(Path(dir).expanduser()))
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, wait_s: float = 0.5) -> "DriverLock":
        """Take the lock or raise StoreError naming the holder.

        Retries for `wait_s` because a client checking `is_held` holds a shared lock for an
        instant, which must not make a driver think the store is taken.
        """
        if self._fd is not None:
            return self
        _check_is_folder(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot create the driver lock {self.path}: {e.strerror or e}") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreError(self._refusal()) from None
                time.sleep(0.02)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "started_at": time.time()}).encode() + b"\n", 0)
        except OSError as e:
            os.close(fd)  # releases the lock
            raise StoreError(f"cannot write the driver lock {self.path}: {e.strerror or e}; "
                             "free some disk space or use --store DIR") from None
        self._fd = fd
        _HELD_LOCKS.add(self)
        return self

    def release(self) -> None:
        """Release the lock (clearing the holder note first); safe to call twice."""
        fd, self._fd = self._fd, None
        _HELD_LOCKS.discard(self)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> "DriverLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> tuple[int | None, float | None]:
        """(pid, start time) written by the current or last holder, when readable."""
        try:
            info = json.loads(self.path.read_text() or "{}")
            return (int(info["pid"]) if "pid" in info else None, info.get("started_at"))
        except (OSError, ValueError, TypeError):
            return (None, None)

    def _refusal(self) -> str:
        pid, started = self.holder()
        if pid is None:
            who = "pid unknown"
        elif not _pid_alive(pid):
            return (f"store {self.dir} is locked by a leftover process of driver pid {pid} "
                    f"(started at {_fmt_time(started)}), which has exited; end its worker processes "
                    "or use --store DIR")
        else:
            who = f"pid {pid}"
        return (f"store {self.dir} is in use by another driver ({who}, started at "
                f"{_fmt_time(started)}); stop it or use --store DIR")

    @staticmethod
    def is_held(dir: str | os.PathLike[str]) -> bool:
        """Whether any process (this one included) holds the driver lock of the store in `dir`.

        Probes with a non-blocking shared lock on a fresh descriptor, released at once.
        """
        path = Path(dir) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing drops our probe lock if we got it
        return False
