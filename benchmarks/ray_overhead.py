"""What `--executor ray` costs over `--executor local` on one machine.

Each sweep is driven in this process by the lab's own Driver, as `run --headless` drives it
(same scheduler, same store writes), once with local workers and once with Ray actors:

- wall time of the sweep, with Ray already up and (for `quick`) with Ray's start-up included;
- event latency: a StepLogged's creation in the worker to its write into the store;
- checkpoint transfer: the trainer handing a checkpoint to its sink, to the store recording
  it (local: an atomic file write; Ray: the bytes travel home and are written there). The
  final checkpoint is shown apart: it is written while the exact validation pass runs and
  reported after it, so its lag is mostly that pass.

Worker-side times come from an import hook (a `sitecustomize` on PYTHONPATH, inherited by
local workers and by the Ray instance started here) that stamps events and checkpoint saves.
Run under `nice -n -15`; the machine's load average is printed beside the numbers.

    python benchmarks/ray_overhead.py [--skip1-iters 500] [--deep-iters 60]   (0: that sweep is left out)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOOK = r'''
import importlib.abc, importlib.util, os, sys, time

STAMPS = os.environ.get("RAY_BENCH_STAMPS")


def _patch(train):
    from lab.core import events as ev

    out = open(os.path.join(STAMPS, f"w{os.getpid()}.txt"), "a", buffering=1)
    init = train.GroupTrainer.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        emit, sink = self.emit, self.checkpoints

        def stamped(event):
            if isinstance(event, ev.StepLogged):
                out.write(f"step {event.run_id} {event.step} {time.time()!r} 0\n")
            emit(event)
        self.emit = stamped
        if sink is not None:
            save = sink.save

            def timed_save(run_id, step, data):
                out.write(f"save {run_id} {step} {time.time()!r} {len(data)}\n")
                return save(run_id, step, data)
            sink.save = timed_save
    train.GroupTrainer.__init__ = __init__


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "lab.core.train":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)
        spec.loader.exec_module = exec_module
        return spec


if STAMPS:
    sys.meta_path.insert(0, _Hook())
'''


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sweep(kind: str, suites: list[str], max_iters: int | None, stamps: Path, store_dir: Path) -> dict:
    """Drive `suites` to the end with `kind` workers; wall time, event latencies, checkpoint transfers."""
    from lab.core import events as ev
    from lab.core.config import TrainOptions
    from lab.experiments import load_experiments
    from lab.headless import override_specs
    from lab.launch import check_corpora, enqueue_specs
    from lab.store import Store
    from lab.workers.driver import Driver
    from lab.workers.scheduler import cuda_device_count, plan_execution
    from lab.workers.settings import DriverSettings
    from lab.workers.startup import executor_for

    for f in stamps.glob("w*.txt"):
        f.unlink()
    specs = override_specs(load_experiments(ROOT / "experiments.toml").select(suites), max_iters, None)
    seen: dict[tuple[str, str, int], float] = {}
    last_step: dict[str, int] = {}

    def on_event(event: object) -> None:
        if isinstance(event, (ev.StepLogged, ev.Checkpointed)):
            seen[(type(event).__name__, event.run_id, event.step)] = time.time()

    with Store.open(store_dir) as store:
        rows = enqueue_specs(store, specs, check_corpora(specs), fresh=True)
        last_step = {r.run_id: r.max_iters for r in rows}
        plan = plan_execution("cpu", None, None, rows, cuda_device_count())
        executor = executor_for(plan.workers, DriverSettings(device="cpu", executor=kind))
        driver = Driver(store, executor, group_size=plan.group_size, options=TrainOptions(), kind="headless",
                        scope=[r.run_id for r in rows], on_event=on_event)
        t0 = time.perf_counter()
        driver.run()
        wall = time.perf_counter() - t0
        assert all(store.get(r.run_id).status == "finished" for r in rows), [store.get(r.run_id).status for r in rows]
    latency, transfer, final, sizes = [], [], [], []
    for f in stamps.glob("w*.txt"):
        for line in f.read_text().splitlines():
            what, rid, step, t, size = line.split()
            key = ("StepLogged" if what == "step" else "Checkpointed", rid, int(step))
            if key in seen:
                if what == "step":
                    latency.append(seen[key] - float(t))
                else:
                    (final if int(step) == last_step.get(rid) else transfer).append(seen[key] - float(t))
                    sizes.append(int(size))
    return {"wall": wall, "latency": latency, "transfer": transfer, "final": final,
            "size": max(sizes) if sizes else 0}


def summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1000:.0f} ms, p95 {xs[int(0.95 * (len(xs) - 1))] * 1000:.0f} ms (n={len(xs)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip1-iters", type=int, default=500)
    parser.add_argument("--deep-iters", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(HOOK)
    os.environ["RAY_BENCH_STAMPS"] = str(tmp)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(tmp / "hook"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(ROOT))
    print(f"load average at start: {load()}")
    results = []

    def record(label: str, r: dict) -> None:
        results.append((label, r))
        print(f"{label}: wall {r['wall']:.1f} s; event latency {summary(r['latency'])}; "
              f"checkpoint {r['size'] / 1e6:.1f} MB, save to recorded {summary(r['transfer'])}, "
              f"final one (after the exact pass) {summary(r['final'])}; load {load()}", flush=True)

    record("quick local", sweep("local", ["quick"], None, tmp, tmp / "s1"))
    t0 = time.perf_counter()
    record("quick ray, Ray start-up included", sweep("ray", ["quick"], None, tmp, tmp / "s2"))
    cold = time.perf_counter() - t0
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, configure_logging=True, log_to_driver=False, logging_level="ERROR")
    print(f"ray.init of a private instance: {time.perf_counter() - t0:.1f} s (cold quick sweep total {cold:.1f} s)")
    record("quick ray, Ray up", sweep("ray", ["quick"], None, tmp, tmp / "s3"))
    if args.skip1_iters:
        record(f"paper-skip1 --max-iters {args.skip1_iters} local", sweep("local", ["paper-skip1"], args.skip1_iters, tmp, tmp / "s4"))
        record(f"paper-skip1 --max-iters {args.skip1_iters} ray, Ray up", sweep("ray", ["paper-skip1"], args.skip1_iters, tmp, tmp / "s5"))
    if args.deep_iters:
        record(f"paper-deep --max-iters {args.deep_iters} local", sweep("local", ["paper-deep"], args.deep_iters, tmp, tmp / "s6"))
        record(f"paper-deep --max-iters {args.deep_iters} ray, Ray up", sweep("ray", ["paper-deep"], args.deep_iters, tmp, tmp / "s7"))
    ray.shutdown()
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
