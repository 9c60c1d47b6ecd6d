"""Issue 6, fault 9, on real processes: the interactive lab in a real pseudo-terminal.

`python -m lab --store DIR --file experiments.toml` runs as the session leader of its own
pseudo-terminal (TERM=xterm-256color, 120x36), exactly as a terminal emulator would start it.
The test presses the Experiments screen's "Launch suite" key (L) by writing it to the
terminal, so the lab itself enqueues the runs and starts its detached background driver.
Then:

* closing the terminal (the master side of the pty closes: the kernel hangs up the session
  and sends SIGHUP) ends the lab, while the driver, in its own session, keeps training and
  finishes the runs; a reopened lab shows them finished;
* closing the terminal with unsaved edits of experiments.toml leaves them in a recovery copy
  that the next lab offers to restore;
* SIGKILL of the detached driver mid-run (pid from `Store.driver_info()`) takes its workers
  with it, leaves the runs resumable, and `run --headless` resumes them from their last
  checkpoint with every evaluation step exactly once.

Every process started here (the lab, the driver, its workers) is killed by process group in
a `finally`, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from lab.experiments import load_experiments
from lab.experiments_document import recovery_path
from lab.store import DriverLock, Store
from lab.tui.app import LabApp
from lab.tui.screens.quit import RecoveredEditsScreen
from lab.tui.widgets.runs_table import RunsTable

from conftest import SUITES, cli, metric_steps, rows, wait_for

ROWS, COLS = 36, 120
#: Two runs of different shapes (two groups, so two workers on two cores), each long enough
#: (several seconds on a busy machine) to still be training when the terminal closes.
HANGUP_SUITE = """
[suites.hangup]
max_iters = 4000
eval_interval = 200
runs = [ {{ name = "a" }}, {{ name = "b", n_embd = 32 }} ]
"""
EVALS = list(range(0, 4001, 200))


@pytest.fixture
def hangup_lab(lab_dir: Path) -> Path:
    """lab_dir with the tiny suites plus `hangup`, the default suite (the one the lab selects first)."""
    text = SUITES.replace('default_suite = "alpha"', 'default_suite = "hangup"') + HANGUP_SUITE
    corpus = lab_dir / "corpus.txt"
    (lab_dir / "experiments.toml").write_text(text.format(corpus=corpus), encoding="utf-8")
    return lab_dir


def _as_a_terminal_emulator_starts_it() -> None:
    """In the child: the pty becomes the controlling terminal, and SIGHUP has its default
    action even if the test run itself ignores it (e.g. started under nohup)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class PtyLab:
    """The lab running in a pseudo-terminal; a thread drains what it draws."""

    def __init__(self, lab_dir: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS)}
        env.pop("TEXTUAL", None)  # no devtools
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lab", "--store", str(lab_dir / "runs"), "--file", "experiments.toml"],
                cwd=lab_dir, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                start_new_session=True,  # its own session, whose controlling terminal is the pty ...
                preexec_fn=_as_a_terminal_emulator_starts_it,
            )
        finally:
            os.close(slave)
        self.output = bytearray()
        self._closed = False
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        # select with a timeout, never a blocking read: a read in progress holds the master
        # open, and closing the fd from another thread would then not hang up the terminal.
        while not self._closing.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                data = os.read(self.master, 65536) if ready else None
            except OSError:  # EIO once the lab has gone
                return
            if data == b"":
                return
            if data:
                self.output += data

    def shows(self, text: str) -> bool:
        return text.encode() in self.output

    def press(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def hang_up(self) -> None:
        """Close the terminal: the master side goes away, the kernel sends the session SIGHUP."""
        self._closing.set()
        self._reader.join(timeout=5)
        if not self._closed:
            self._closed = True
            os.close(self.master)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.hang_up()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by whoever adopted it) is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group: a detached driver's group is itself,
    its workers and multiprocessing's helpers."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def driver_pid(store_dir: Path) -> int | None:
    if not (store_dir / "store.sqlite3").exists():
        return None
    with Store.open(store_dir) as store:
        info = store.driver_info()
    return info.pid if info is not None and info.alive else None


def launch_from_the_lab(lab: PtyLab, lab_dir: Path) -> int:
    """Press L (Launch suite) once the lab has drawn its Experiments screen; returns the pid
    of the background driver the lab started."""
    wait_for(lambda: lab.shows("Launch") or lab.proc.poll() is not None, timeout=60, what="the lab to draw")
    assert lab.proc.poll() is None, lab.output.decode(errors="replace")[-2000:]
    time.sleep(0.5)  # let it settle after the first paint
    deadline = time.time() + 60
    while not (lab_dir / "runs" / "store.sqlite3").exists() or len(rows(lab_dir, "hangup")) < 2:
        assert time.time() < deadline, "pressing L did not launch the suite"
        lab.press("L")
        for _ in range(50):
            if len(rows(lab_dir, "hangup")) == 2:
                break
            time.sleep(0.1)
    wait_for(lambda: driver_pid(lab_dir / "runs") is not None, timeout=60, what="the lab to start a driver")
    pid = driver_pid(lab_dir / "runs")
    assert pid is not None and pid != lab.proc.pid
    assert os.getsid(pid) != lab.proc.pid  # detached: a session of its own, not the terminal's
    return pid


def training(lab_dir: Path, min_checkpoint: int = 0) -> bool:
    got = rows(lab_dir, "hangup").values()
    return len(got) == 2 and all(r.status == "running" and r.step > 0 and (r.checkpoint_step or 0) >= min_checkpoint
                                 for r in got)


def reopened_lab(lab_dir: Path) -> tuple[dict[str, tuple[str, str]], str]:
    """Open the lab again (Textual's pilot) on the store: (run name -> (status, step) as its
    Runs table shows them, its subtitle)."""
    async def go() -> tuple[dict[str, tuple[str, str]], str]:
        app = LabApp(lab_dir / "runs", lab_dir / "experiments.toml", start_mode="runs")
        try:
            async with app.run_test(size=(COLS, ROWS)) as pilot:
                await pilot.pause(0.5)
                table = app.screen.query_one(RunsTable)
                shown = {live.row.name: (str(table.get_cell(rid, "status")), str(table.get_cell(rid, "step")))
                         for rid, live in app.live.items() if live.row.suite == "hangup"}
                subtitle = str(app.sub_title)
                await pilot.press("q")
                await pilot.pause()
            return shown, subtitle
        finally:
            app.store.close()

    return asyncio.run(go())


def test_closing_the_terminal_leaves_the_driver_training_and_a_reopened_lab_shows_the_runs(hangup_lab: Path) -> None:
    lab = PtyLab(hangup_lab)
    driver = None
    try:
        driver = launch_from_the_lab(lab, hangup_lab)
        wait_for(lambda: training(hangup_lab), timeout=90, what="both runs to train")
        lab.hang_up()
        lab.proc.wait(timeout=15)  # the lab ends with its terminal ...
        assert not alive(lab.proc.pid)
        in_flight = rows(hangup_lab, "hangup")
        assert {r.status for r in in_flight.values()} <= {"running", "finished"}
        assert any(r.status == "running" for r in in_flight.values()), "the runs ended before the terminal closed"
        assert alive(driver)  # ... the driver does not
        wait_for(lambda: all(r.status == "finished" for r in rows(hangup_lab, "hangup").values()),
                 timeout=180, what="the driver to finish the runs")
        for run in rows(hangup_lab, "hangup").values():
            assert metric_steps(hangup_lab, run.run_id, "val") == EVALS
        log = (hangup_lab / "runs" / "driver.log").read_text()
        assert "Traceback" not in log and "stopped" not in log

        shown, _ = reopened_lab(hangup_lab)
        assert shown == {"a": ("finished", "4000/4000"), "b": ("finished", "4000/4000")}
    finally:
        lab.kill()
        kill_group(driver)


def test_killing_the_detached_driver_leaves_the_runs_resumable(hangup_lab: Path) -> None:
    lab = PtyLab(hangup_lab)
    driver = None
    try:
        driver = launch_from_the_lab(lab, hangup_lab)
        wait_for(lambda: training(hangup_lab, min_checkpoint=400), timeout=120, what="both runs to checkpoint")
        workers = {r.provenance["worker_pid"] for r in rows(hangup_lab, "hangup").values()}
        assert workers and driver not in workers
        os.kill(driver, signal.SIGKILL)
        wait_for(lambda: not alive(driver) and not any(alive(pid) for pid in workers), timeout=15,
                 what="the driver's workers to die with it")
        wait_for(lambda: not group_members(driver), timeout=15, what="no orphan of the driver to remain")
        assert not DriverLock.is_held(hangup_lab / "runs")
        time.sleep(1.0)
        assert lab.proc.poll() is None  # the lab outlives the driver it started
        lab.hang_up()
        lab.proc.wait(timeout=15)

        db = sqlite3.connect(hangup_lab / "runs" / "store.sqlite3")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        left = rows(hangup_lab, "hangup")
        assert all(r.status == "running" and 0 < (r.checkpoint_step or 0) < 4000 for r in left.values())

        shown, subtitle = reopened_lab(hangup_lab)  # the reopened lab shows where they stopped
        assert "no driver" in subtitle
        assert set(shown) == {"a", "b"}
        for name, (status, step) in shown.items():
            assert status in ("running", "stopped")
            assert step == f"{left[name].step}/4000"

        res = cli(hangup_lab, "run", "--headless", "hangup", "--workers", "2", timeout=240)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "resumed at step" in res.stdout
        for run in rows(hangup_lab, "hangup").values():
            assert run.status == "finished"
            assert metric_steps(hangup_lab, run.run_id, "val") == EVALS  # every evaluation exactly once
    finally:
        lab.kill()
        kill_group(driver)


def test_closing_the_terminal_keeps_unsaved_edits_for_the_next_start(hangup_lab: Path) -> None:
    """Issue 10, fault 2: edits not yet saved when the terminal closes are in a recovery copy
    beside the file; the next lab offers them, and saving them removes the copy."""
    path = hangup_lab / "experiments.toml"
    before = path.read_text(encoding="utf-8")
    copy = recovery_path(path)
    lab = PtyLab(hangup_lab)
    try:
        wait_for(lambda: lab.shows("Launch") or lab.proc.poll() is not None, timeout=60, what="the lab to draw")
        assert lab.proc.poll() is None, lab.output.decode(errors="replace")[-2000:]
        time.sleep(0.5)
        lab.press("\r")  # enter on hangup/a: into its form, the name field
        time.sleep(0.5)
        lab.press("z")  # the name is now "az", not saved
        wait_for(lambda: copy.exists() and 'name = "az"' in copy.read_text(encoding="utf-8"), timeout=30,
                 what="the recovery copy of the edit")
        lab.hang_up()
        lab.proc.wait(timeout=15)
        assert not alive(lab.proc.pid)
    finally:
        lab.kill()
    assert path.read_text(encoding="utf-8") == before  # nothing saved unasked ...
    assert 'name = "az"' in copy.read_text(encoding="utf-8")  # ... and nothing lost

    async def reopen() -> None:
        app = LabApp(hangup_lab / "runs", path)
        try:
            async with app.run_test(size=(COLS, ROWS)) as pilot:
                await pilot.pause(0.5)
                assert isinstance(app.screen, RecoveredEditsScreen)
                await pilot.click("#restore")
                await pilot.pause()
                assert app.screen.dirty
                await pilot.press("ctrl+s")
                await pilot.pause()
                assert not app.screen.dirty
        finally:
            app.store.close()

    asyncio.run(reopen())
    assert {r.name for r in load_experiments(path).suites["hangup"].runs} == {"az", "b"}
    assert not copy.exists()
