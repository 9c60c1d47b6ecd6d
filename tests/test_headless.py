"""`dropres-lab run --headless` end to end, on real worker processes and signals."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from conftest import cli, metric_steps, rows, start, wait_for
from lab.store import Store


def test_two_suites_on_two_workers_finish_and_results_reports_them(lab_dir):
    res = cli(lab_dir, "run", "--headless", "alpha", "beta", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stdout  # not a terminal: no escape codes
    assert "finished: val" in res.stdout
    got = rows(lab_dir)
    assert {n: r.status for n, r in got.items()} == {"skips.1=0": "finished", "skips.1=0.1": "finished",
                                                     "deep": "finished", "wide": "finished"}
    for run in got.values():
        assert metric_steps(lab_dir, run.run_id, "val") == [0, 20, 40, 60]
        assert run.exact_val is not None and run.wall_s > 0 and run.tokens_per_s > 0
        assert run.provenance["corpus_sha256"] and run.provenance["torch"]

    as_json = json.loads(cli(lab_dir, "results", "--format", "json").stdout)
    assert {(r["suite"], r["name"]) for r in as_json} == {("alpha", "skips.1=0"), ("alpha", "skips.1=0.1"),
                                                          ("beta", "deep"), ("beta", "wide")}
    assert all(r["status"] == "finished" and r["step"] == 60 and r["config"]["n_head"] == 2 for r in as_json)
    assert [r["reference"] for r in as_json if r["name"] == "skips.1=0"] == [3.0]
    for fmt, marker in [("csv", "suite,"), ("markdown", "| "), ("table", "skips.1=0.1")]:
        res = cli(lab_dir, "results", "--format", fmt)
        assert res.returncode == 0 and marker in res.stdout, (fmt, res.stdout, res.stderr)

    again = cli(lab_dir, "run", "--headless", "alpha", "beta")
    assert again.returncode == 0
    assert "4 of 4 runs already have results" in again.stdout


def test_a_diverging_run_exits_1_and_its_neighbour_finishes(lab_dir):
    res = cli(lab_dir, "run", "--headless", "boom")
    assert res.returncode == 1
    got = rows(lab_dir, "boom")
    assert got["ok"].status == "finished"
    assert got["nan"].status == "diverged" and "NaN" in got["nan"].error


@pytest.mark.parametrize("args, message", [
    (["run", "--headless", "nosuch"], "nosuch"),
    (["run", "--headless", "--device", "cuda"], "CUDA is not available"),
    (["run", "--headless", "--workers", "0"], "--workers 0"),
    (["run", "--headless", "--file", "missing.toml"], "missing.toml"),
    (["run", "--headless", "--data", "nope.txt"], "nope.txt"),
    (["run", "alpha"], "--headless"),
    (["run", "--headless", "--data", "empty.txt"], "is empty"),
    (["run", "--headless", "--data", "binary.bin"], "looks binary"),
    (["run", "--headless", "--data", "short.txt"], "too short for block_size 16"),
    (["run", "--headless", "--data", "latin1.txt"], "not UTF-8"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(lab_dir, args, message):
    (lab_dir / "empty.txt").write_bytes(b"")
    (lab_dir / "binary.bin").write_bytes(bytes(range(256)) * 10)
    (lab_dir / "short.txt").write_text("to be or not")
    (lab_dir / "latin1.txt").write_bytes("café au lait ".encode("latin-1") * 100)
    res = cli(lab_dir, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (lab_dir / "runs").exists()


def test_a_store_path_that_is_a_file_is_refused(lab_dir):
    (lab_dir / "runs").write_text("not a folder")
    res = cli(lab_dir, "run", "--headless")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "runs" in res.stderr


def test_a_second_driver_on_the_same_store_is_refused_with_the_first_ones_pid(lab_dir):
    first = start(lab_dir, "run", "--headless", "long")
    try:
        wait_for(lambda: (lab_dir / "runs" / "store.sqlite3").exists() and any(
            r.status == "running" for r in rows(lab_dir, "long").values()), what="first driver to start")
        second = cli(lab_dir, "run", "--headless", "alpha")
        assert first.poll() is None, "the first driver must still be running"
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert "a headless run" in second.stderr and "training long/x" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def _background_driver(lab_dir, *suites: str):
    """The lab's background driver on `suites` (queued as the lab queues them), lingering a minute."""
    from lab.experiments import load_experiments
    from lab.launch import check_corpora, enqueue_specs

    specs = load_experiments(lab_dir / "experiments.toml").select(list(suites)) if suites else []
    with Store.open(lab_dir / "runs") as store:
        enqueue_specs(store, specs, check_corpora(specs))
    proc = start(lab_dir, "driver", "--store", "runs", "--linger", "60")

    def up() -> bool:
        with Store.open(lab_dir / "runs") as store:
            info = store.driver_info()
            return info is not None and info.alive and info.kind == "background"
    wait_for(up, what="the background driver to start")
    return proc


def test_a_headless_run_asks_the_labs_idle_background_driver_to_exit_and_proceeds(lab_dir):
    background = _background_driver(lab_dir)  # lingering: nothing to train
    try:
        res = cli(lab_dir, "run", "--headless", "alpha")
        assert res.returncode == 0, res.stderr
        assert f"asked the lab's idle background driver (pid {background.pid}) to exit" in res.stdout
        log, _ = background.communicate(timeout=30)  # it made way and exited, long before its linger ran out
        assert background.returncode == 0 and "asked to make way for another driver while idle" in log
        assert {r.status for r in rows(lab_dir, "alpha").values()} == {"finished"}
    finally:
        if background.poll() is None:
            background.kill()
        background.communicate(timeout=30)


def test_a_headless_run_is_refused_by_a_busy_background_driver_naming_what_it_trains(lab_dir):
    background = _background_driver(lab_dir, "long")
    try:
        wait_for(lambda: rows(lab_dir, "long")["x"].status == "running", what="long/x to train")
        res = cli(lab_dir, "run", "--headless", "alpha")
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # one line
        assert f"the lab's background driver (pid {background.pid}), training long/x;" in res.stderr
        assert background.poll() is None and rows(lab_dir, "long")["x"].status == "running"  # undisturbed
        assert rows(lab_dir, "alpha") == {}  # nothing written
    finally:
        background.send_signal(signal.SIGTERM)
        background.communicate(timeout=60)


def test_a_killed_worker_fails_only_its_runs_and_a_rerun_resumes_them(lab_dir):
    proc = start(lab_dir, "run", "--headless", "slow", "--workers", "2")

    def a_checkpointed():
        got = rows(lab_dir, "slow")
        return "a" in got and (got["a"].checkpoint_step or 0) >= 100 and got["a"].provenance.get("worker_pid")

    wait_for(a_checkpointed, what="run a to checkpoint")
    victim = rows(lab_dir, "slow")["a"]
    os.kill(victim.provenance["worker_pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    got = rows(lab_dir, "slow")
    assert got["a"].status == "failed" and "killed by signal SIGKILL" in got["a"].error
    assert got["b"].status == "finished"

    res = cli(lab_dir, "run", "--headless", "slow")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 of 2 runs already has results" in res.stdout
    assert "slow/a resumed at step" in res.stdout
    got = rows(lab_dir, "slow")
    assert got["a"].status == "finished" and got["a"].step == 1000
    assert metric_steps(lab_dir, got["a"].run_id, "val") == list(range(0, 1001, 50))
    train_steps = metric_steps(lab_dir, got["a"].run_id, "train_step")
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 1000


def test_ctrl_c_stops_gracefully_and_a_rerun_resumes(lab_dir):
    proc = start(lab_dir, "run", "--headless", "slow")
    wait_for(lambda: (lab_dir / "runs" / "store.sqlite3").exists() and all(
        (r.checkpoint_step or 0) >= 50 for r in rows(lab_dir, "slow").values()) and len(rows(lab_dir, "slow")) == 2,
        what="both runs to checkpoint")
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 15
    assert proc.returncode == 1 and "Traceback" not in err
    got = rows(lab_dir, "slow")
    assert {r.status for r in got.values()} == {"stopped"}
    stopped_at = {n: r.step for n, r in got.items()}
    res = cli(lab_dir, "run", "--headless", "slow")
    assert res.returncode == 0
    for name in ("a", "b"):
        assert f"slow/{name} resumed at step" in res.stdout
    got = rows(lab_dir, "slow")
    assert all(r.status == "finished" and r.step == 1000 for r in got.values())
    assert all(stopped_at[n] > 0 for n in stopped_at)


def test_the_live_view_of_a_resumed_run_shows_its_recorded_val_until_the_next_evaluation(tmp_path):
    """A resumed run's row starts from the store's record: its val and val curve up to the
    checkpoint it resumes from, not blank (a later evaluation replaces them)."""
    from rich.console import Console

    from lab.core import events as ev
    from lab.core.config import RunConfig
    from lab.headless import ProgressView
    from lab.store import Store

    with Store.open(tmp_path / "runs") as store:
        rid = store.enqueue("s", "a", "a", RunConfig.from_dict({"data": "tinyshakespeare", "max_iters": 400}),
                            None).run_id
        store.apply(ev.Started(rid, 0, 400, 1000, "cpu", "float32", 1))
        store.apply_many([ev.StepLogged(rid, 100, 2.5, 1e-3, 100.0), ev.Evaluated(rid, 100, 2.4, 2.3456, 1e-3),
                          ev.StepLogged(rid, 200, 2.2, 1e-3, 100.0), ev.Evaluated(rid, 200, 2.1, 2.1234, 1e-3)])
        store.apply(ev.Stopped(rid, 200))
        resumed = store.get(rid)
        assert resumed is not None and resumed.step == 200
        recorded = {rid: [loss for _, _, loss, _ in store.metrics(rid, "val")]}
    console = Console(record=True, width=120, force_terminal=False)
    view = ProgressView(console, [resumed], plain=True, recorded_vals=recorded)
    console.print(view.render())
    assert "2.1234" in console.export_text()
    view.on_event(ev.Evaluated(rid, 300, 2.0, 1.9876, 1e-3))
    console.print(view.render())
    text = console.export_text()
    assert "1.9876" in text and view.runs[rid].vals == [2.3456, 2.1234, 1.9876]
