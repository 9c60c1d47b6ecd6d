"""Fault injection on real processes: the lab keeps every result it has earned.

Faults inside a worker are injected with a `sitecustomize` module on PYTHONPATH, which every
spawned worker imports at start-up: it raises exactly what torch or the OS would raise.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

from conftest import cli, metric_steps, rows, start, wait_for

OOM_IN_GROUPS = """
import torch
from lab.core import train

_step = train.GroupTrainer.train_step

def train_step(self, lr):
    if self.n >= {min_group}:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return _step(self, lr)

train.GroupTrainer.train_step = train_step
"""

DISK_FULL_AFTER_STEP_20 = """
import errno, os
from lab.core import checkpoint

_write = checkpoint.write_checkpoint_file

def write_checkpoint_file(folder, step, data):
    if step > 20:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write(folder, step, data)

checkpoint.write_checkpoint_file = write_checkpoint_file
"""


def injected(tmp_path: Path, code: str) -> dict:
    folder = tmp_path / "inject"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_out_of_memory_in_a_group_retries_its_runs_in_smaller_groups(lab_dir, tmp_path):
    res = cli(lab_dir, "run", "--headless", "alpha", "--workers", "1",
              env=injected(tmp_path, OOM_IN_GROUPS.format(min_group=2)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "retrying in groups of at most 1" in res.stdout
    got = rows(lab_dir, "alpha")
    assert all(r.status == "finished" and r.group_size == 1 for r in got.values())


def test_out_of_memory_alone_fails_with_advice(lab_dir, tmp_path):
    res = cli(lab_dir, "run", "--headless", "alpha", "--group-size", "1",
              env=injected(tmp_path, OOM_IN_GROUPS.format(min_group=1)))
    assert res.returncode == 1
    got = rows(lab_dir, "alpha")
    assert all(r.status == "failed" and "smaller batch_size" in r.error for r in got.values())


def test_a_full_disk_fails_the_run_clearly_and_keeps_the_last_good_checkpoint(lab_dir, tmp_path):
    res = cli(lab_dir, "run", "--headless", "alpha", env=injected(tmp_path, DISK_FULL_AFTER_STEP_20))
    assert res.returncode == 1
    got = rows(lab_dir, "alpha")
    assert all(r.status == "failed" and "No space left on device" in r.error for r in got.values())
    assert all(r.checkpoint_step == 20 for r in got.values())
    res = cli(lab_dir, "run", "--headless", "alpha")
    assert res.returncode == 0 and "resumed at step 20" in res.stdout
    for run in rows(lab_dir, "alpha").values():
        assert metric_steps(lab_dir, run.run_id, "val") == [0, 20, 40, 60]


def _wait_checkpointed(lab_dir: Path) -> None:
    wait_for(lambda: (lab_dir / "runs" / "store.sqlite3").exists() and len(rows(lab_dir, "slow")) == 2 and all(
        (r.checkpoint_step or 0) >= 50 for r in rows(lab_dir, "slow").values()), what="both runs to checkpoint")


def test_killing_the_driver_kills_its_workers_and_a_rerun_completes_only_what_was_unfinished(lab_dir):
    finished = cli(lab_dir, "run", "--headless", "alpha")
    assert finished.returncode == 0
    proc = start(lab_dir, "run", "--headless", "slow", "--workers", "2")
    _wait_checkpointed(lab_dir)
    workers = {r.provenance["worker_pid"] for r in rows(lab_dir, "slow").values()}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15, what="workers to die with the driver")

    db = sqlite3.connect(lab_dir / "runs" / "store.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    res = cli(lab_dir, "run", "--headless", "alpha", "slow")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 of 4 runs already have results" in res.stdout
    for run in rows(lab_dir, "slow").values():
        assert run.status == "finished"
        assert metric_steps(lab_dir, run.run_id, "val") == list(range(0, 1001, 50))


def test_ctrl_c_twice_stops_at_once_without_corrupting_anything(lab_dir):
    proc = start(lab_dir, "run", "--headless", "slow")
    _wait_checkpointed(lab_dir)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 10 and "Traceback" not in err
    assert proc.returncode == 1
    assert {r.status for r in rows(lab_dir, "slow").values()} == {"stopped"}
    res = cli(lab_dir, "run", "--headless", "slow")
    assert res.returncode == 0, res.stdout + res.stderr
    for run in rows(lab_dir, "slow").values():
        assert metric_steps(lab_dir, run.run_id, "val") == list(range(0, 1001, 50))
