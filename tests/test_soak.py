"""The functional core of benchmarks/soak.py (issue 6, "Load") with fewer, shorter runs: the lab
open under Textual's pilot launches them into a background driver with 2 workers, keys are
pressed and `dropres-lab results --format json` reads the store in a loop meanwhile; every run
finishes with every evaluation step exactly once, nothing is lost, every read succeeds.
Latency and memory are the benchmark's business, not asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak import run_soak  # noqa: E402
from lab.store import DriverLock  # noqa: E402


def test_a_dozen_runs_on_two_workers_with_the_lab_open_all_finish(tmp_path: Path) -> None:
    out = run_soak(runs=12, iters=100, eval_interval=50, workers=2, group_size=4, key_interval=0.1,
                   sample_every=1.0, timeout=180, folder=tmp_path / "soak")
    assert not out.timed_out, out.notes
    assert out.statuses == {"finished": 12}
    assert out.finished == out.complete_histories == 12 and out.lost == 0
    assert out.integrity == "ok"
    assert out.reader_ok > 0 and out.reader_errors == []
    assert out.latencies  # the lab answered keys throughout
    assert out.driver_exited in ("exited by itself", "stopped with SIGTERM")
    assert not DriverLock.is_held(tmp_path / "soak" / "runs")
    assert "Traceback" not in (tmp_path / "soak" / "runs" / "driver.log").read_text()
