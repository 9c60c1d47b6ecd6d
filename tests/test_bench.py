"""`dropres-lab bench`: the plan matches a launch's, the schedule replay, measuring, the CLI."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, cli, tiny_config
from lab.bench import (
    GroupCost,
    PlannedRun,
    evaluations,
    exact_windows,
    group_time,
    makespan,
    measure_group,
    measure_groups,
    plan_suite,
    shape_key,
    simulate_schedule,
)
from lab.core import events as ev
from lab.core.config import RunConfig
from lab.core.data import get_corpus
from lab.core.train import train_group
from lab.experiments import RunSpec
from lab.formatting import fmt_duration
from lab.workers.executor import Executor, TaskDone, WorkerReady


def specs(data, *settings: dict) -> list[RunSpec]:
    return [RunSpec("s", f"r{i}", tiny_config(data, **s)) for i, s in enumerate(settings)]


def test_five_runs_of_one_shape_on_two_workers_split_three_and_two(corpus_file):
    runs = [PlannedRun(s) for s in specs(corpus_file, *({"skips": {1: r / 10}} for r in range(5)))]
    schedule = simulate_schedule(runs, 2, 16, lambda group: 10.0 * len(group))
    assert [(len(s.group), s.worker, s.start_s, s.end_s) for s in schedule] == [(3, 0, 0.0, 30.0), (2, 1, 0.0, 20.0)]
    assert makespan(schedule) == 30.0


def test_a_worker_takes_the_next_group_when_it_goes_idle(corpus_file):
    # Three shapes (different depths): three groups on two workers; no split after the start.
    runs = [PlannedRun(s) for s in specs(corpus_file, {"n_layer": 1}, {"n_layer": 2}, {"n_layer": 2}, {"n_layer": 3})]
    cost = {1: 10.0, 2: 20.0, 3: 5.0}
    schedule = simulate_schedule(runs, 2, 16, lambda group: cost[group[0].config.n_layer])
    assert [(s.group[0].config.n_layer, len(s.group), s.worker, s.start_s, s.end_s) for s in schedule] == [
        (1, 1, 0, 0.0, 10.0), (2, 2, 1, 0.0, 20.0), (3, 1, 0, 10.0, 15.0)]
    assert makespan(schedule) == 20.0
    # The group cap cuts groups as the driver does: 2 + 2 + 1 on one worker, one after another.
    same = [PlannedRun(s) for s in specs(corpus_file, *({"seed": i} for i in range(5)))]
    capped = simulate_schedule(same, 1, 2, lambda group: float(len(group)))
    assert [(len(s.group), s.start_s) for s in capped] == [(2, 0.0), (2, 2.0), (1, 4.0)]


def test_the_plan_is_the_launch_plan(corpus_file):
    plan = plan_suite(specs(corpus_file, *({"skips": {1: r / 10}} for r in range(5))), "cpu", 2, None, 0)
    assert [w.device for w in plan.workers] == ["cpu", "cpu"] and plan.group_size == 16
    assert [len(g) for g in plan.groups] == [3, 2]
    one = plan_suite(specs(corpus_file, {}, {"seed": 2}), "cpu", 1, 1, 0)
    assert [len(g) for g in one.groups] == [1, 1] and len(one.workers) == 1


def test_evaluation_and_exact_window_counts_match_the_trainer(corpus_file):
    cfg = tiny_config(corpus_file, max_iters=25, eval_interval=10)
    events: list = []
    train_group([cfg], ["x"], events.append)
    assert evaluations(cfg) == sum(isinstance(e, ev.Evaluated) for e in events) == 4  # 0, 10, 20, 25
    assert evaluations(tiny_config(corpus_file, max_iters=20, eval_interval=10)) == 3  # 0, 10, 20
    assert exact_windows(1 + 64, 16) == 4 and exact_windows(1 + 70, 16) == 5  # 4 full windows, then the rest
    cost = GroupCost(step_s=0.01, window_s=0.001, setup_s=2.0, checkpoint_s=0.5, exact_windows=100)
    t = group_time(cfg, cost)
    assert t.train_s == pytest.approx(0.25) and t.per_eval_s == pytest.approx(2 * 2 * 4 * 0.001)
    assert t.total_s == pytest.approx(0.25 + 4 * 0.016 + 0.1 + 3 * 0.5 + 2.0)


def test_measure_group_times_real_steps_and_evaluation(corpus_file, tmp_path):
    configs = [tiny_config(corpus_file, seed=s) for s in (1, 2)]
    # a budget that a loaded machine cannot exhaust before every evaluation chunk is timed
    cost = measure_group(configs, "cpu", 1, get_corpus(str(corpus_file)), steps_budget_s=0.5, checkpoint_dir=tmp_path)
    assert cost.steps_timed >= 3 and cost.windows_timed >= 64
    assert 0 < cost.step_s < 1 and 0 < cost.window_s < cost.step_s and cost.checkpoint_s > 0
    assert cost.dtype in ("float32", "bfloat16") and cost.exact_windows > 0


class ThreadExecutor(Executor):
    """Another executor, to show any Executor can be benchmarked: each worker is a thread of
    this process that performs its tasks as a worker process would."""

    def __init__(self, n: int):
        self.n, self.events = n, queue.Queue()
        self.stops = [threading.Event() for _ in range(n)]
        self.threads: list[threading.Thread | None] = [None] * n
        self.tasks: list = []
        self.started: list[threading.Thread] = []

    def start(self) -> None:
        for slot in range(self.n):
            self.events.put((slot, "", WorkerReady()))

    def idle_slots(self) -> list[int]:
        return [s for s, t in enumerate(self.threads) if t is None]

    def device_of(self, slot: int) -> str:
        return "cpu"

    def submit(self, slot: int, task) -> None:
        self.stops[slot].clear()
        self.tasks.append(task)

        def work() -> None:
            task.perform(lambda event: self.events.put((slot, task.task_id, event)), self.stops[slot].is_set)
            self.events.put((slot, task.task_id, TaskDone(task.task_id)))

        self.threads[slot] = threading.Thread(target=work, daemon=True)
        self.threads[slot].start()
        self.started.append(self.threads[slot])

    def poll(self, timeout: float) -> list:
        out = []
        try:
            out.append(self.events.get(timeout=timeout))
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        for slot, _, event in out:
            if isinstance(event, TaskDone):
                self.threads[slot] = None
        return out

    def busy(self) -> bool:
        return any(t is not None for t in self.threads)

    def stop(self, slot: int | None = None) -> None:
        for s in range(self.n) if slot is None else [slot]:
            self.stops[s].set()

    def kill(self) -> None:
        self.stop()

    def shutdown(self) -> None:
        for t in self.threads:
            if t is not None:
                t.join(timeout=30)


def test_any_executor_measures_every_shape_side_by_side(corpus_file):
    # Three shapes on two workers: each measured once, the first worker free takes the third;
    # one shape on two workers: measured twice side by side and averaged.
    shapes = {shape_key([c]): [c] for c in (tiny_config(corpus_file, n_layer=d) for d in (1, 2, 3))}
    executor, progress = ThreadExecutor(2), []
    costs, startup_s = measure_groups(shapes, executor, steps_budget_s=0.05,
                                      on_measured=lambda done, total: progress.append((done, total)))
    assert set(costs) == set(shapes) and all(c.steps_timed >= 3 and c.step_s > 0 for c in costs.values())
    assert progress == [(1, 3), (2, 3), (3, 3)] and startup_s >= 0
    assert len(executor.tasks) == 3 and not any(t.is_alive() for t in executor.started)  # all stopped at the end

    one = {shape_key([tiny_config(corpus_file)]): [tiny_config(corpus_file)]}
    executor = ThreadExecutor(2)
    costs, _ = measure_groups(one, executor, steps_budget_s=0.05)
    assert len(executor.tasks) == 2 and [c.steps_timed >= 6 for c in costs.values()] == [True]


def test_durations_read_naturally():
    assert [fmt_duration(s, "long") for s in (0.44, 42, 750, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "0.4 s", "42 s", "12 min 30 s", "3 h 05 min", "2 d 4 h"]


def test_bench_prints_a_prediction_for_a_tiny_suite(lab_dir):
    res = cli(lab_dir, "bench", "alpha", "--budget", "0.1", "--device", "cpu", "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "skips.1=0 +1" in res.stdout and "ms/step" in res.stdout
    assert re.search(r"alpha: 2 runs in 1 group on 1 worker \(CPU, \d+ threads? each\): predicted wall time "
                     r"[\d.]+ s", res.stdout), res.stdout


@pytest.mark.parametrize("args, message", [
    (["bench", "nope"], "nope"),
    (["bench", "alpha", "--workers", "0"], "--workers 0"),
    (["bench", "alpha", "--device", "gpu"], "use auto, cpu, cuda or cuda:N"),
    (["bench", "alpha", "--file", "missing.toml"], "missing.toml"),
])
def test_bench_mistakes_are_one_line_and_exit_2(lab_dir, args, message):
    res = cli(lab_dir, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_lab_and_bench_import_without_torch():
    code = "import sys, lab.bench, lab.tui.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_bench_and_driver_settings_start_no_workers_when_imported():
    # The TUI imports both; worker processes (and torch) load only once something is measured.
    code = ("import sys, lab.bench, lab.launch, lab.workers.settings; "
            "loaded = {'torch', 'lab.workers.local', 'lab.workers.startup'} & set(sys.modules); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_training_flops_count_six_per_weight_per_token_plus_attention():
    from lab.core.model import count_params
    from lab.core.throughput import train_flop_per_step, train_flop_per_token

    cfg = RunConfig(n_layer=4, n_embd=128, block_size=64, batch_size=8)
    weights = count_params(cfg, 65) - 64 * 128  # position embeddings are a lookup
    assert train_flop_per_token(cfg, 65) == 6 * weights + 12 * 4 * 64 * 128
    assert train_flop_per_step(cfg, 65, 3) == 3 * 8 * 64 * train_flop_per_token(cfg, 65)
    cost = GroupCost(step_s=0.5, window_s=0.01, setup_s=0.1, flop_per_step=2e9, peak_flops=8e9)
    assert cost.achieved_flops == 4e9 and cost.peak_fraction == 0.5


def test_an_emulated_bf16_peak_is_not_measured(monkeypatch):
    """Without native bf16 the CPU emulates it: bench shows "-" for its share of peak instead
    of spending most of a minute on 1024^2 bf16 matmuls (2-core AVX2 EPYC); fp32 is measured."""
    from lab.core import precision, throughput
    from lab.workers import measure

    timed: list[str] = []
    monkeypatch.setattr(measure, "_peaks", {})
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(throughput, "matmul_peak", lambda dtype, device, n: timed.append(str(dtype)) or 1e11)
    assert measure._matmul_peak("cpu", "bfloat16") == 0.0
    assert measure._matmul_peak("cpu", "float32") == 1e11
    assert timed == ["torch.float32"]
    assert GroupCost(step_s=0.5, window_s=0.01, setup_s=0.1, flop_per_step=2e9, peak_flops=0.0).peak_fraction == 0.0
