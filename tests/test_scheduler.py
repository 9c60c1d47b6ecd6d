"""Which runs train together and on how many workers."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from lab.core.config import RunConfig
from lab.workers import scheduler
from lab.workers.scheduler import check_device, plan_groups, plan_workers, spread_groups


def row(name: str, step: int = 0, **settings):
    cfg = RunConfig.from_dict({"n_layer": 2, **settings})
    return SimpleNamespace(run_id=name, config=cfg, group_text=cfg.group_text(), checkpoint_step=step or None)


def test_runs_differing_only_in_rates_and_seed_share_a_group():
    runs = [row("a", skips={1: 0.025}), row("b", skips={1: 0.5}, seed=7, dropout=0.0), row("c", skips={1: 0.1})]
    assert [[r.run_id for r in g] for g in plan_groups(runs, 16)] == [["a", "b", "c"]]


def test_shapes_skip_depths_schedules_and_resume_steps_split_groups():
    runs = [row("a"), row("b", n_layer=4), row("c", skips={1: 0.0, 2: 0.5}), row("d", lr=3e-4),
            row("e", step=500), row("f")]
    groups = [[r.run_id for r in g] for g in plan_groups(runs, 16)]
    assert groups == [["a", "f"], ["b"], ["c"], ["d"], ["e"]]


def test_the_group_size_caps_groups_in_queue_order():
    runs = [row(str(i), skips={1: i / 10}) for i in range(5)]
    assert [[r.run_id for r in g] for g in plan_groups(runs, 2)] == [["0", "1"], ["2", "3"], ["4"]]


def test_cpu_cores_are_split_between_single_threaded_workers(monkeypatch):
    monkeypatch.setattr(scheduler, "cpu_count", lambda: 8)
    assert plan_workers("cpu", None, 20, 0) == [scheduler.WorkerSpec("cpu", 1)] * 8
    assert plan_workers("cpu", None, 1, 0) == [scheduler.WorkerSpec("cpu", 8)]
    assert plan_workers("auto", 2, 20, 0) == [scheduler.WorkerSpec("cpu", 4)] * 2


def test_one_worker_per_gpu():
    assert [w.device for w in plan_workers("auto", None, 20, 2)] == ["cuda:0", "cuda:1"]
    assert [w.device for w in plan_workers("cuda:1", None, 20, 2)] == ["cuda:1"]


def test_device_choices_are_checked():
    assert check_device("cpu", 0) is None and check_device("auto", 0) is None
    assert "CUDA is not available" in check_device("cuda", 0)
    assert "only 1 CUDA device" in check_device("cuda:3", 1)
    assert "use auto, cpu, cuda or cuda:N" in check_device("gpu", 1)


def test_idle_workers_split_the_largest_groups_in_halves():
    groups = [[row(str(i)) for i in range(5)], [row("x", n_layer=4)]]
    spread = scheduler.spread_groups(groups, 4)
    assert [[r.run_id for r in g] for g in spread] == [["x"], ["3", "4"], ["0", "1"], ["2"]]  # 5 -> 3 + 2 -> 2 + 1
    assert scheduler.spread_groups(groups, 2) == groups  # as many groups as workers: unchanged
    assert len(scheduler.spread_groups([[row("a")]], 3)) == 1  # a single run is never split


CPU_BUILD = """from typing import Optional
__version__ = '2.13.0+cpu'
cuda: Optional[str] = None
hip: Optional[str] = None
"""


def test_a_cpu_only_torch_is_told_from_its_version_file(tmp_path):
    """The driver counts CUDA devices without importing torch (1.5 s) on a CPU-only build."""
    cases = {"cpu": (CPU_BUILD, False), "cuda": (CPU_BUILD.replace("cuda: Optional[str] = None", "cuda = '12.8'"), True),
             "rocm": (CPU_BUILD.replace("hip: Optional[str] = None", "hip: Optional[str] = '6.3'"), True),
             "unreadable": ("cuda = (", None), "other form": ("__version__ = '3.0'\n", None)}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert scheduler.torch_build_has_gpu(tmp_path / name) is expected, name
    assert scheduler.torch_build_has_gpu(tmp_path / "missing") is None


def test_counting_cuda_devices_imports_torch_only_for_a_gpu_build():
    code = ("import sys; from lab.workers.scheduler import cuda_device_count, torch_build_has_gpu; "
            "n = cuda_device_count(); print(torch_build_has_gpu(), n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    gpu_build, count, imported = out
    assert imported == str(gpu_build != "False")
    assert gpu_build != "False" or count == "0"


class Recording:
    """An executor with two idle workers that records the groups handed to them."""

    def __init__(self) -> None:
        self.tasks: list = []

    def idle_slots(self) -> list[int]: return [0, 1]
    def device_of(self, slot: int) -> str: return "cpu"
    def busy(self) -> bool: return False
    def submit(self, slot: int, task) -> None: self.tasks.append(task)


def test_the_driver_groups_the_queue_from_its_light_read_as_from_whole_rows(tmp_path):
    """The driver plans from (id, group, resume step) and reads whole rows only for the groups
    it dispatches: the same groups, with the same settings, as planning from whole rows."""
    from lab.core.config import TrainOptions
    from lab.store import NewRun, Store
    from lab.workers.driver import Driver

    def cfg(**settings):
        return RunConfig.from_dict({"n_layer": 1, "n_head": 2, "n_embd": 16, "dtype": "float32", **settings})

    runs = [NewRun("s", f"r{i}", f"r{i}", cfg(skips={1: i / 100}, seed=i), None) for i in range(7)]
    runs += [NewRun("s", "wide", "wide", cfg(n_embd=32), None), NewRun("s", "deep", "deep", cfg(n_layer=2), None)]
    runs.insert(3, NewRun("s", "lr", "lr", cfg(lr=3e-4), None))
    with Store.open(tmp_path / "runs") as store:
        store.enqueue_many(runs)
        whole = spread_groups(plan_groups(store.queued(), 4), 2)[:2]
        executor = Recording()
        driver = Driver(store, executor, group_size=4, options=TrainOptions(), kind="background")
        driver._dispatch()
    assert [task.run_ids for task in executor.tasks] == [[r.run_id for r in g] for g in whole]
    assert [task.configs for task in executor.tasks] == [[r.config.to_dict() for r in g] for g in whole]
    assert len(whole[0]) == 4 and len({r.config.group_key() for r in whole[0]}) == 1
