"""The run store: identity, events, resume, concurrency, the driver lock, failures.

Fast and CPU only; the cross-process tests use real subprocesses and signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lab.core.checkpoint import FileCheckpointSink, checkpoint_step
from lab.core.config import RunConfig
from lab.core.events import (
    Checkpointed,
    Diverged,
    Evaluated,
    Failed,
    Finished,
    Started,
    StepLogged,
    Stopped,
)
from lab.core.train import train_group
from lab.store import (
    KEEP_CHECKPOINTS,
    SCHEMA_VERSION,
    DriverLock,
    Store,
    StoreError,
    make_run_id,
    resolve_store_dir,
)

from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
CFG = RunConfig(n_layer=1, n_embd=16, n_head=2, max_iters=40, eval_interval=10)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "runs") as s:
        yield s


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def _wait_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """First stdout line of a child (it prints when it is ready)."""
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child exited early: {proc.wait(timeout)} {proc.stderr.read()}")
    return line.strip()


def _write_ckpt(store: Store, run_id: str, step: int) -> Checkpointed:
    path = store.checkpoint_path(run_id, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"weights at %d" % step)
    tmp.rename(path)
    return Checkpointed(run_id, step, str(path))


def _training(run_id: str, start: int, stop: int, every: int = 10) -> list:
    """Events of a run training from `start` to `stop`: logs every 5 steps, evals every 10."""
    events: list = []
    for step in range(start, stop + 1, 5):
        if step > start:
            events.append(StepLogged(run_id, step, 3.0 - step / 100, 1e-3, 1234.0))
        if step % every == 0:
            events.append(Evaluated(run_id, step, 2.9 - step / 100, 3.0 - step / 100, 1e-3))
    return events


# -- identity and the queue ---------------------------------------------------------------------


def test_enqueue_identity_dedup_and_fresh(store: Store) -> None:
    a = store.enqueue("quick", "skip1", "skip1", CFG, 1.55)
    assert a.status == "queued" and a.step == 0 and a.max_iters == 40 and a.reference == 1.55
    assert a.run_id == make_run_id("quick", "skip1", CFG.identity_hash())
    assert len(a.run_id) == 16 and all(ch in "0123456789abcdef" for ch in a.run_id)
    assert a.config == CFG and a.config_hash == CFG.identity_hash()

    again = store.enqueue("quick", "skip1", "skip1", CFG, 1.55)
    assert again.run_id == a.run_id and len(store.runs()) == 1

    # a different setting (e.g. --max-iters) is a different run with the same name
    short = dataclasses.replace(CFG, max_iters=20)
    b = store.enqueue("quick", "skip1", "skip1", short, None)
    assert b.run_id != a.run_id and b.max_iters == 20
    assert [r.run_id for r in store.find("quick", "skip1")] == [a.run_id, b.run_id]
    assert len(store.find("quick")) == 2 and store.find("other") == []
    assert [r.run_id for r in store.queued()] == [a.run_id, b.run_id]

    # a finished run is a result: enqueueing it again changes nothing
    store.apply_many([Started(a.run_id, 0, 40, 1000, "cpu", "float32", 1),
                      *_training(a.run_id, 0, 40),
                      _write_ckpt(store, a.run_id, 40),
                      Finished(a.run_id, 40, 2.6, 2.6, 2.5, 2.61, 3.0, 999.0)])
    kept = store.enqueue("quick", "skip1", "skip1", CFG, 1.55)
    assert kept.status == "finished" and kept.step == 40 and kept.final_val == 2.6
    assert [r.run_id for r in store.queued()] == [b.run_id]

    # --fresh starts over from step 0: metrics and checkpoints gone
    assert store.metrics(a.run_id) and store.latest_checkpoint(a.run_id) is not None
    fresh = store.enqueue("quick", "skip1", "skip1", CFG, 1.55, fresh=True)
    assert fresh.status == "queued" and fresh.step == 0
    assert fresh.final_val is None and fresh.best_val is None and fresh.provenance == {}
    assert store.metrics(a.run_id) == [] and store.latest_checkpoint(a.run_id) is None
    assert not store.checkpoint_dir(a.run_id).exists()



def test_a_run_spec_knows_the_id_the_store_gives_it(store: Store) -> None:
    """Views look runs up by `RunSpec.run_id`; it must be the id enqueueing the spec makes."""
    from lab.experiments import RunSpec

    spec = RunSpec("quick", "skip1#2", CFG, None, "skip1")
    row = store.enqueue(spec.suite, spec.name, spec.base_name, spec.config, spec.reference)
    assert spec.run_id == row.run_id
    assert RunSpec("quick", "skip1#3", CFG, None, "skip1").run_id != row.run_id

def test_failed_and_stopped_runs_requeue_at_their_checkpoint(store: Store) -> None:
    run = store.enqueue("s", "r", "r", CFG, None)
    rid = run.run_id
    store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 1), *_training(rid, 0, 20),
                      _write_ckpt(store, rid, 20), *_training(rid, 20, 25),
                      Failed(rid, 25, "worker killed")])
    failed = store.get(rid)
    assert failed.status == "failed" and failed.error == "worker killed" and failed.step == 25
    again = store.enqueue("s", "r", "r", CFG, None)
    assert again.status == "queued" and again.step == 20 and again.error is None
    assert again.checkpoint_step == 20

    store.apply_many([Started(rid, 20, 40, 10, "cpu", "float32", 1), *_training(rid, 20, 30),
                      _write_ckpt(store, rid, 30), Stopped(rid, 30)])
    assert store.get(rid).status == "stopped"
    assert store.enqueue("s", "r", "r", CFG, None).step == 30


def test_enqueue_rejects_nul_in_names(store: Store) -> None:
    with pytest.raises(StoreError):
        store.enqueue("s", "a\x00b", "a", CFG, None)
    # names are data, never paths: "../x" is stored as a name, files live under the run id
    run = store.enqueue("s", "../x", "../x", CFG, None)
    assert store.checkpoint_dir(run.run_id).parent == store.dir / "checkpoints"
    with pytest.raises(ValueError):
        store.checkpoint_dir("../x")


# -- events -------------------------------------------------------------------------------------


def test_event_sequence_round_trip_and_checkpoint_pruning(store: Store) -> None:
    rid = store.enqueue("quick", "skip1#1337", "skip1", CFG, 1.5560).run_id
    store.set_provenance(rid, {"lab": "0.1.0", "torch": "2.x", "python": "3.11", "corpus_sha256": "86c4"})
    store.apply(Started(rid, 0, 40, 4321, "cpu", "float32", 2))
    row = store.get(rid)
    assert row.status == "running" and row.started_at and row.device == "cpu" and row.n_params == 4321
    assert row.provenance["device"] == "cpu" and row.provenance["corpus_sha256"] == "86c4"

    ckpts = []
    for lo, hi in ((0, 10), (10, 20), (20, 30)):
        store.apply_many(_training(rid, lo, hi))
        ckpts.append(_write_ckpt(store, rid, hi))
        store.apply(ckpts[-1])
    folder = store.checkpoint_dir(rid)
    assert sorted(p.name for p in folder.iterdir()) == ["step_000000020.pt", "step_000000030.pt"]
    assert store.latest_checkpoint(rid) == Path(ckpts[-1].path)
    assert [s for s, _ in store.checkpoints(rid)] == [30, 20]

    live = store.get(rid)
    assert live.step == 30 and live.last_val_loss == pytest.approx(2.7)
    assert live.last_train_loss == pytest.approx(2.7) and live.tokens_per_s_live == 1234.0
    assert live.best_val == pytest.approx(2.7)

    store.apply_many([*_training(rid, 30, 40), _write_ckpt(store, rid, 40),
                      Finished(rid, 40, 2.6, 2.6, 2.5, 2.61, 12.5, 800.0)])
    done = store.get(rid)
    assert done.status == "finished" and done.step == 40 and done.ended_at >= done.started_at
    assert (done.final_val, done.best_val, done.final_train, done.exact_val) == (2.6, 2.6, 2.5, 2.61)
    assert (done.wall_s, done.tokens_per_s, done.error) == (12.5, 800.0, None)
    assert [p.name for p in folder.iterdir()] == ["step_000000040.pt"]

    val = store.metrics(rid, "val")
    assert [m[0] for m in val] == [0, 10, 20, 30, 40] and val[-1][2] == pytest.approx(2.6)
    assert val[0][3] == 1e-3
    steps = [m[0] for m in store.metrics(rid, "train_step")]
    assert steps == list(range(5, 41, 5))
    assert {m[1] for m in store.metrics(rid)} == {"train_step", "train", "val"}
    assert [m[0] for m in store.metrics(rid, "val", since_step=20)] == [30, 40]
    js = done.to_dict()
    assert js["config"]["n_layer"] == 1 and js["reference"] == 1.5560
    json.dumps(js)


def test_the_store_alone_prunes_checkpoints_to_the_newest_it_keeps(store: Store, corpus_file: Path) -> None:
    """The trainer writes a checkpoint at every evaluation; the store, recording them, keeps
    exactly KEEP_CHECKPOINTS files (and, once the run has finished, its final one). The trainer
    writes checkpoints on a thread and reports each once durable, so when one is reported a
    newer one may already be on disk: the store prunes what has been reported."""
    cfg = tiny_config(corpus_file, max_iters=60, eval_interval=5)
    rid = store.enqueue("s", "many", "many", cfg, None).run_id
    folder = store.checkpoint_dir(rid)
    seen: list[list[str]] = []

    def record(event) -> None:
        store.apply(event)
        if isinstance(event, Checkpointed):  # checkpoints newer than this one may be on disk, not yet reported
            seen.append(sorted(p.name for p in folder.iterdir() if checkpoint_step(p.name) <= event.step))

    calls = {"n": 0}

    def stop_after_47_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 47

    train_group([cfg], [rid], record, checkpoints=FileCheckpointSink({rid: folder}), should_stop=stop_after_47_steps)
    assert len(seen) == 10 and all(len(names) <= KEEP_CHECKPOINTS for names in seen)
    assert [s for s, _ in store.checkpoints(rid)] == [47, 45] and KEEP_CHECKPOINTS == 2
    assert sorted(p.name for p in folder.iterdir()) == ["step_000000045.pt", "step_000000047.pt"]

    store.requeue([rid])
    store.discard_unrecorded_checkpoints(rid)
    train_group([cfg], [rid], record, checkpoints=FileCheckpointSink({rid: folder}))
    assert store.get(rid).status == "finished" and store.get(rid).checkpoint_step == 60
    assert [p.name for p in folder.iterdir()] == ["step_000000060.pt"]


def test_files_the_store_never_recorded_are_discarded_before_a_resume(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    folder = store.checkpoint_dir(rid)
    folder.mkdir(parents=True)
    (folder / "step_000000010.pt").write_bytes(b"written before a crash")
    store.discard_unrecorded_checkpoints(rid)  # nothing recorded: nothing to resume from
    assert list(folder.iterdir()) == []

    store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 1), *_training(rid, 0, 20),
                      _write_ckpt(store, rid, 10), _write_ckpt(store, rid, 20)])
    (folder / "step_000000030.pt").write_bytes(b"written, never recorded")
    (folder / ".step_000000040.pt.k7x2.tmp").write_bytes(b"half written when killed")
    (folder / "step_000000005.pt").write_bytes(b"older: left to fall back to")
    (folder / "notes.txt").write_text("not ours to delete")
    store.discard_unrecorded_checkpoints(rid)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "step_000000005.pt",
                                                       "step_000000010.pt", "step_000000020.pt"]
    store.discard_unrecorded_checkpoints("0123456789abcdef")  # no such run, no folder: nothing to do


def test_diverged_and_non_finite_values(store: Store) -> None:
    rid = store.enqueue("s", "hot", "hot", CFG, None).run_id
    store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 1),
                      Evaluated(rid, 0, 4.0, 4.1, 0.0),
                      StepLogged(rid, 5, float("inf"), 1e-3, 10.0),
                      Evaluated(rid, 10, float("nan"), float("nan"), 1e-3),
                      Diverged(rid, 5, "loss became inf at step 5")])
    row = store.get(rid)
    assert row.status == "diverged" and row.error == "loss became inf at step 5"
    assert row.best_val == pytest.approx(4.1) and row.last_val_loss is None
    assert row.last_train_loss is None
    losses = [m[2] for m in store.metrics(rid, "val")]
    assert losses[0] == pytest.approx(4.1) and math.isnan(losses[1])
    assert store.enqueue("s", "hot", "hot", CFG, None).status == "diverged"  # a result
    json.dumps(row.to_dict(), allow_nan=False)


def test_metrics_idempotent_on_replay_and_truncated_on_resume(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    first = [Started(rid, 0, 40, 10, "cpu", "float32", 1), *_training(rid, 0, 20),
             _write_ckpt(store, rid, 20), *_training(rid, 20, 35)]
    store.apply_many(first)
    n = len(store.metrics(rid))
    store.apply_many(first[1:])  # replayed events never duplicate a (step, split)
    assert len(store.metrics(rid)) == n
    assert store.get(rid).step == 35

    # the worker died at 35; the run resumes from its checkpoint at 20
    store.apply(Failed(rid, 35, "worker killed"))
    store.enqueue("s", "r", "r", CFG, None)
    store.apply(Started(rid, 20, 40, 10, "cpu", "float32", 1))
    assert max(m[0] for m in store.metrics(rid)) == 20
    assert store.get(rid).step == 20 and store.get(rid).last_val_loss == pytest.approx(2.8)
    store.apply_many([*_training(rid, 20, 40), _write_ckpt(store, rid, 40),
                      Finished(rid, 40, 2.6, 2.6, 2.5, 2.6, 1.0, 1.0)])
    for split, expected in (("val", [0, 10, 20, 30, 40]), ("train_step", list(range(5, 41, 5)))):
        assert [m[0] for m in store.metrics(rid, split)] == expected


def test_resume_from_older_checkpoint_drops_newer_records(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 1), *_training(rid, 0, 10),
                      _write_ckpt(store, rid, 10), *_training(rid, 10, 20), _write_ckpt(store, rid, 20)])
    store.checkpoint_path(rid, 20).write_bytes(b"")  # corrupt: the trainer falls back to 10
    store.apply(Started(rid, 10, 40, 10, "cpu", "float32", 1))
    assert [s for s, _ in store.checkpoints(rid)] == [10]
    assert store.get(rid).checkpoint_step == 10
    assert max(m[0] for m in store.metrics(rid)) == 10


# -- concurrency and crashes ----------------------------------------------------------------


READER = """
    import sys, time
    from lab.store import Store
    s = Store.open(sys.argv[1])
    print("ready", flush=True)
    counts, deadline = [], time.time() + 20
    while time.time() < deadline:
        rows = s.runs()
        n = sum(len(s.metrics(r.run_id)) for r in rows)
        counts.append(n)
        if rows and rows[0].status == "finished":
            break
    print(len(counts), counts[0], counts[-1], flush=True)
"""


def test_second_process_reads_while_this_one_writes(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    reader = _python(READER, str(store.dir))
    assert _wait_line(reader) == "ready"
    store.apply(Started(rid, 0, 4000, 10, "cpu", "float32", 1))
    for step in range(1, 1001):  # one small transaction per event, as a busy driver might
        store.apply(StepLogged(rid, step, 2.0, 1e-3, 1.0))
    store.apply(Finished(rid, 1000, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0))
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert "locked" not in err
    loops, first, last = map(int, out.split())
    assert loops > 1 and last == 1000 and first <= last


WRITER = """
    import sys
    from lab.core.config import RunConfig
    from lab.core.events import StepLogged
    from lab.store import Store
    s = Store.open(sys.argv[1])
    rid = s.enqueue("s", "r", "r", RunConfig(), None).run_id
    step = 0
    while True:
        s.apply_many([StepLogged(rid, step + i, 1.0, 1e-3, 1.0) for i in range(50)])
        step += 50
        if step == 500:
            print("writing", flush=True)
"""


def test_store_opens_cleanly_after_sigkill_mid_write(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    writer = _python(WRITER, str(d))
    assert _wait_line(writer) == "writing"
    time.sleep(0.3)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    with Store.open(d) as s:
        assert s._read("PRAGMA integrity_check")[0][0] == "ok"
        (run,) = s.runs()
        n = len(s.metrics(run.run_id))
        assert n >= 500 and n % 50 == 0  # each batch is all or nothing
        s.apply(StepLogged(run.run_id, 10**6, 1.0, 1e-3, 1.0))  # and it is writable


# -- the driver lock --------------------------------------------------------------------------


HOLDER = """
    import os, sys, time
    from lab.store import DriverLock
    DriverLock(sys.argv[1]).acquire()
    child = ""
    if len(sys.argv) > 2:  # also fork a child that outlives us (like a forked worker)
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
    print(os.getpid(), child, flush=True)
    time.sleep(30)
"""


def test_lock_refuses_a_second_driver_and_takes_over_a_killed_one(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    holder = _python(HOLDER, str(d))
    try:
        pid = int(_wait_line(holder).split()[0])
        assert DriverLock.is_held(d)
        with pytest.raises(StoreError) as err:
            DriverLock(d).acquire()
        msg = str(err.value)
        assert f"pid {pid}" in msg and "in use by another driver" in msg and "\n" not in msg
        assert "--store DIR" in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    # the stale lock of a killed driver is taken over
    assert not DriverLock.is_held(d)
    with DriverLock(d) as lock:
        assert lock.held and DriverLock.is_held(d)
        assert lock.holder()[0] == os.getpid()
        with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
            DriverLock(d).acquire(wait_s=0.05)  # a second holder in the same process too
    assert not DriverLock.is_held(d)


def test_forked_children_do_not_keep_a_killed_drivers_lock(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    holder = _python(HOLDER, str(d), "fork")
    pid, child = map(int, _wait_line(holder).split())
    try:
        os.kill(pid, signal.SIGKILL)
        holder.wait(10)
        os.kill(child, 0)  # the forked child outlives its parent...
        with DriverLock(d):  # ...but does not hold the store
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_enqueue_treats_running_without_driver_as_interrupted(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 1), *_training(rid, 0, 10),
                      _write_ckpt(store, rid, 10)])
    with DriverLock(store.dir):  # a live driver: the run is really running
        assert store.enqueue("s", "r", "r", CFG, None).status == "running"
        with pytest.raises(StoreError, match="running"):
            store.enqueue("s", "r", "r", CFG, None, fresh=True)
    again = store.enqueue("s", "r", "r", CFG, None)  # no driver: interrupted -> requeued
    assert again.status == "queued" and again.step == 10


def test_mark_interrupted_and_fail_runs(store: Store) -> None:
    a = store.enqueue("s", "a", "a", CFG, None).run_id
    b = store.enqueue("s", "b", "b", CFG, None).run_id
    c = store.enqueue("s", "c", "c", CFG, None).run_id
    store.apply_many([Started(a, 0, 40, 10, "cpu", "float32", 2), Started(b, 0, 40, 10, "cpu", "float32", 2)])
    assert store.mark_interrupted() == [a, b]
    row = store.get(a)
    assert row.status == "stopped" and "interrupted" in row.error and row.ended_at
    assert store.get(c).status == "queued"

    store.apply_many([Started(a, 0, 40, 10, "cpu", "float32", 2), Started(b, 0, 40, 10, "cpu", "float32", 2),
                      Diverged(b, 3, "nan")])
    assert store.fail_runs([a, b], "worker killed (signal 9)") == [a]
    assert store.get(a).status == "failed" and store.get(a).error == "worker killed (signal 9)"
    assert store.get(b).status == "diverged"  # a group-mate's result is kept
    assert store.requeue([a, b]) == [a] and store.get(a).status == "queued"


# -- clients, requests, deletion ----------------------------------------------------------------


def test_requests_round_trip_and_driver_info(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    first = store.request(rid, "stop")
    second = store.request(None, "stop_all")
    store.request(rid, "cancel")
    pending = store.pending_requests()
    assert [(r.id, r.run_id, r.kind) for r in pending][:2] == [(first, rid, "stop"), (second, None, "stop_all")]
    store.ack_request(first)
    assert [r.kind for r in store.pending_requests()] == ["stop_all", "cancel"]
    assert store.clear_requests() == 2 and store.pending_requests() == []
    with pytest.raises(ValueError):
        store.request(rid, "explode")
    with pytest.raises(ValueError):
        store.request(None, "stop")
    with pytest.raises(ValueError):
        store.request(rid, "exit")  # addressed to the driver, not to a run
    exit_request = store.request(None, "exit")
    assert [(r.id, r.run_id, r.kind) for r in store.pending_requests()] == [(exit_request, None, "exit")]
    store.ack_request(exit_request)
    with pytest.raises(StoreError):
        store.request("0123456789abcdef", "stop")

    assert store.driver_info() is None
    with DriverLock(store.dir):
        store.set_driver_info(os.getpid(), accepting=True, kind="background")
        info = store.driver_info()
        assert info.pid == os.getpid() and info.accepting and info.alive and info.started_at
        assert info.kind == "background"
        store.set_driver_info(os.getpid(), accepting=False, kind="background")  # winding down
        assert not store.driver_info().accepting and store.driver_info().kind == "background"
        assert store.driver_info().started_at == info.started_at
    assert not store.driver_info().alive
    store.clear_driver_info()
    assert store.driver_info() is None
    with pytest.raises(ValueError):
        store.set_driver_info(os.getpid(), accepting=True, kind="foreground")


def test_delete_removes_rows_metrics_and_checkpoints(store: Store) -> None:
    keep = store.enqueue("s", "keep", "keep", CFG, None).run_id
    gone = store.enqueue("s", "gone", "gone", CFG, None).run_id
    for rid in (keep, gone):
        store.apply_many([Started(rid, 0, 40, 10, "cpu", "float32", 2), *_training(rid, 0, 10),
                          _write_ckpt(store, rid, 10)])
    store.request(gone, "stop")
    assert store.delete([gone]) == 1
    assert store.get(gone) is None and store.metrics(gone) == [] and store.pending_requests() == []
    assert not store.checkpoint_dir(gone).exists()
    assert store.checkpoint_dir(keep).exists() and store.metrics(keep)
    store.apply(StepLogged(gone, 15, 1.0, 1e-3, 1.0))  # late events of a deleted run are ignored
    assert store.get(gone) is None


# -- paths and failures -------------------------------------------------------------------------


def test_store_dir_resolution_and_a_file_in_the_way(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DROPRES_STORE", raising=False)
    assert resolve_store_dir(None) == tmp_path / "runs"
    monkeypatch.setenv("DROPRES_STORE", str(tmp_path / "env"))
    assert resolve_store_dir(None) == tmp_path / "env"
    assert resolve_store_dir("cli") == tmp_path / "cli"

    f = tmp_path / "afile"
    f.write_text("x")
    for attempt in (lambda: resolve_store_dir(str(f)), lambda: Store.open(f), lambda: DriverLock(f).acquire()):
        with pytest.raises(StoreError) as err:
            attempt()
        assert "is a file" in str(err.value) and "\n" not in str(err.value)
    assert f.read_text() == "x"


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    Store.open(d).close()
    with sqlite3.connect(d / "store.sqlite3") as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer dropres-lab"):
        Store.open(d)

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "store.sqlite3").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open the run store"):
        Store.open(junk)

    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "store.sqlite3") as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a dropres-lab store"):
        Store.open(other)


#: A store written by schema 1 (the first release), as SQL: stores that users already have.
SCHEMA_V1_FIXTURE = Path(__file__).parent / "fixtures" / "store_schema_v1.sql"
V1_FINISHED = "e36ab1f0e9f3706d"  # quick/skip1 in the fixture


def _v1_store(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn:
        conn.executescript(SCHEMA_V1_FIXTURE.read_text())
    return d


def _schema_of(d: Path) -> tuple[int, list[str]]:
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn:
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    return version, columns


def _dump(d: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn:
        return list(conn.iterdump())


def test_a_store_written_by_schema_1_opens_with_its_runs_metrics_and_queue(tmp_path: Path) -> None:
    d = _v1_store(tmp_path)
    with Store.open(d) as st:
        done = st.get(V1_FINISHED)
        assert (done.suite, done.name, done.status, done.step) == ("quick", "skip1", "finished", 20)
        assert (done.final_val, done.best_val, done.exact_val, done.reference) == (2.55, 2.55, 2.56, 1.556)
        assert done.config.n_embd == 16 and done.checkpoint_step == 20 and done.provenance["lab"] == "0.1.0"
        assert [m[0] for m in st.metrics(V1_FINISHED, "val")] == [0, 10, 20]
        assert st.metrics(V1_FINISHED, "val")[-1][2] == pytest.approx(2.55)
        assert [message for _, _, message in st.log(V1_FINISHED)][-1].startswith("finished: val 2.5500")
        assert [(r.suite, r.name) for r in st.queued()] == [("quick", "skip0")]
        assert [r.kind for r in st.pending_requests()] == ["stop_all"]
        again = st.enqueue("quick", "skip1", "skip1", done.config, 1.556)  # still a result
        assert again.run_id == V1_FINISHED and again.status == "finished"
    assert _schema_of(d)[0] == SCHEMA_VERSION
    Store.open(tmp_path / "new").close()
    assert _tables(d) == _tables(tmp_path / "new")  # upgraded in place = made new


def test_a_schema_1_store_upgrades_to_record_the_drivers_kind_and_exit_requests(tmp_path: Path) -> None:
    """Schema 2: a driver record written by an older driver reads with kind None (unknown), its
    pending requests survive the rebuilt requests table, and the new "exit" request is accepted."""
    d = _v1_store(tmp_path)
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn, conn:
        conn.execute("INSERT INTO driver (id, pid, started_at, accepting, updated_at) VALUES (1, 4242, 1.0, 0, 2.0)")
        before = conn.execute("SELECT id, run_id, kind, created_at FROM requests WHERE acked_at IS NULL").fetchall()
    with Store.open(d) as st:
        info = st.driver_info()
        assert (info.pid, info.accepting, info.alive, info.kind) == (4242, False, False, None)
        assert [(r.id, r.run_id, r.kind, r.created_at) for r in st.pending_requests()] == before
        later = st.request(None, "exit")
        assert later > max(r[0] for r in before)
        assert [r.kind for r in st.pending_requests()] == ["stop_all", "exit"]
        st.set_driver_info(4243, accepting=True, kind="headless")
        assert st.driver_info().kind == "headless"
    assert _schema_of(d)[0] == SCHEMA_VERSION


def test_an_old_store_upgrades_with_each_runs_group_in_its_own_column(tmp_path: Path) -> None:
    """Schema 3: the scheduler's light read of the queue (id, group, resume step) works on a
    store written before the column existed, filled from each run's settings."""
    d = _v1_store(tmp_path)
    with Store.open(d) as st:
        queued = st.queued()
        assert st.queued_runs() == [(r.run_id, r.config.group_text(), r.checkpoint_step) for r in queued]
        assert {r["run_id"]: r["group_text"] for r in st._read("SELECT run_id, group_text FROM runs")} == {
            r.run_id: r.config.group_text() for r in st.runs()}
        new = st.enqueue("quick", "skip2", "skip2", dataclasses.replace(queued[0].config, seed=7), None)
        assert st.queued_runs()[-1] == (new.run_id, queued[0].config.group_text(), None)


def test_enqueued_rows_and_refreshed_rows_are_what_the_store_reads_back(store: Store) -> None:
    """`enqueue_many` returns the rows it wrote without reading them back, and `refresh`
    re-reads rows without parsing their settings again: both as `get_many` would read them."""
    from lab.store import NewRun

    old = store.enqueue("s", "old", "old", CFG, None)
    store.apply(Finished(old.run_id, 40, 2.0, 1.9, 1.8, 2.0, 1.0, 100.0))
    runs = [NewRun("s", f"r{i}", "r", dataclasses.replace(CFG, seed=i), 1.5 if i else None) for i in range(3)]
    rows = store.enqueue_many(runs + [NewRun("s", "old", "old", CFG, 1.2)] + runs[:1],
                              provenance=[{"lab": "x", "n": i} for i in range(5)])
    assert rows == [store.get(r.run_id) for r in rows]
    store.apply(Started(rows[1].run_id, 0, 40, 1000, "cpu", "float32", 1))
    store.delete([rows[2].run_id])
    assert store.refresh(rows) == [store.get(r.run_id) for r in rows if r.run_id != rows[2].run_id]


def test_a_stop_marks_thousands_of_queued_runs_with_one_log_line_each(store: Store) -> None:
    from lab.store import NewRun

    rows = store.enqueue_many([NewRun("big", f"r{i}", f"r{i}", dataclasses.replace(CFG, seed=i), None)
                               for i in range(2000)])
    ids = [r.run_id for r in rows]
    store.apply(Started(ids[0], 0, 40, 1000, "cpu", "float32", 1))
    store.apply(Finished(ids[1], 40, 2.0, 1.9, 1.8, 2.0, 1.0, 100.0))
    order = ids[::-1]
    marked = store.stop_runs(order, "stopped before it started")
    assert marked == [rid for rid in order if rid != ids[1]]  # the finished run keeps its result
    assert store.stop_runs(ids, "again") == []
    counts = store._read("SELECT status, error, count(*) FROM runs GROUP BY status, error ORDER BY status")
    assert [tuple(r) for r in counts] == [("finished", None, 1), ("stopped", "stopped before it started", 1999)]
    assert store.log(ids[5])[-1][1:] == (None, "stopped: stopped before it started")
    assert store.log(ids[0])[-1][1:] == (None, "stopped: stopped before it started")  # it was running
    lines = store._read("SELECT count(*), count(DISTINCT run_id) FROM log WHERE message LIKE 'stopped: %'")
    assert tuple(lines[0]) == (1999, 1999)  # one line each
    assert store.fail_runs([ids[2]], "worker died") == []  # already stopped: not queued or running


def test_the_driver_records_what_its_executor_trains_on_for_the_lab_to_show(tmp_path: Path, monkeypatch) -> None:
    """Schema 5: a driver's record says what its executor trains on once it has said it; the
    record of a store upgraded from schema 2 has none yet. The same driver keeps it when it
    records itself again (winding down); a new driver starts without one."""
    import lab.store as store_module

    d = _v1_store(tmp_path)
    with monkeypatch.context() as schema_2:
        schema_2.setattr(store_module, "_MIGRATIONS", store_module._MIGRATIONS[:1])
        schema_2.setattr(store_module, "SCHEMA_VERSION", 2)
        Store.open(d).close()
    assert _schema_of(d)[0] == 2
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn, conn:  # as a schema-2 driver wrote it
        conn.execute("INSERT INTO driver (id, pid, started_at, accepting, updated_at, kind) "
                     "VALUES (1, 4242, 1.0, 1, 2.0, 'background')")
    with Store.open(d) as st:
        assert st.driver_info().executor is None and st.driver_info().kind == "background"
        st.set_driver_executor(4242, "ray: 3 nodes, 8 GPUs, 96 CPUs; 8 cuda groups at a time")
        assert st.driver_info().executor == "ray: 3 nodes, 8 GPUs, 96 CPUs; 8 cuda groups at a time"
        st.set_driver_info(4242, accepting=False, kind="background")  # the same driver, winding down
        assert st.driver_info().executor == "ray: 3 nodes, 8 GPUs, 96 CPUs; 8 cuda groups at a time"
        st.set_driver_executor(4241, "local: 1 worker (cpu, 1 thread each)")  # not the driver on record
        assert st.driver_info().executor.startswith("ray: 3 nodes")
        st.set_driver_info(4243, accepting=True, kind="headless")  # another driver
        assert st.driver_info().executor is None


def _tables(d: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn:
        return sorted(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_migrations_upgrade_an_old_store_in_one_transaction(tmp_path: Path, monkeypatch) -> None:
    """The mechanism future schema changes go through, with migrations local to this test:
    SQL and Python steps applied in order on open, all or nothing."""
    import lab.store as store_module

    def fill_width(c: sqlite3.Connection) -> None:  # a step that needs Python: read the config JSON
        for run_id, config in c.execute("SELECT run_id, config FROM runs").fetchall():
            c.execute("UPDATE runs SET width = ? WHERE run_id = ?", (json.loads(config)["n_embd"], run_id))

    broken = tmp_path / "broken"
    broken.mkdir()
    d = _v1_store(broken)
    monkeypatch.setattr(store_module, "_MIGRATIONS", ["ALTER TABLE runs ADD COLUMN width INTEGER",
                                                      "UPDATE no_such_table SET x = 1"])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 3)
    with pytest.raises(StoreError, match="no such table"):
        Store.open(d)
    version, columns = _schema_of(d)
    assert version == 1 and "width" not in columns  # rolled back: still a whole schema-1 store

    d = _v1_store(tmp_path)
    monkeypatch.setattr(store_module, "_MIGRATIONS", ["ALTER TABLE runs ADD COLUMN width INTEGER", fill_width])
    with Store.open(d) as st:
        assert st.get(V1_FINISHED).status == "finished" and len(st.metrics(V1_FINISHED, "val")) == 3
        widths = {r["run_id"]: r["width"] for r in st._read("SELECT run_id, width FROM runs")}
    assert set(widths.values()) == {16} and len(widths) == 2
    version, columns = _schema_of(d)
    assert version == 3 and "width" in columns
    with Store.open(tmp_path / "new") as st:  # a new store is built by the same steps
        assert st._read("SELECT width FROM runs") == []
    assert _schema_of(tmp_path / "new") == (3, columns)


def test_a_store_of_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    d = _v1_store(tmp_path)
    with contextlib.closing(sqlite3.connect(d / "store.sqlite3")) as conn, conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    before = _dump(d)
    with pytest.raises(StoreError) as err:
        Store.open(d)
    assert str(err.value) == (f"the store at {d} was made by a newer dropres-lab (schema {SCHEMA_VERSION + 1}, "
                              f"this version reads up to {SCHEMA_VERSION}); upgrade dropres-lab or use --store DIR")
    assert _dump(d) == before  # not one row or table touched


def test_disk_full_raises_a_clear_error_and_keeps_what_was_written(store: Store) -> None:
    rid = store.enqueue("s", "r", "r", CFG, None).run_id
    store.apply_many(_training(rid, 0, 20))
    before = store.metrics(rid)
    pages = store._read("PRAGMA page_count")[0][0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own SQLITE_FULL path
    with pytest.raises(StoreError) as err:
        store.apply_many(StepLogged(rid, s, 1.0, 1e-3, 1.0) for s in range(100, 20000))
    msg = str(err.value)
    assert "full" in msg and "free some disk space" in msg and "\n" not in msg
    assert store.metrics(rid) == before  # the failed batch was rolled back as a whole
    with Store.open(store.dir) as again:
        assert again._read("PRAGMA integrity_check")[0][0] == "ok"
        assert again.metrics(rid) == before
