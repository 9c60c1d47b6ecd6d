"""Ray is optional: the lab never imports it unless `--executor ray` is chosen, and without it
that choice is one line saying how to install it (exit code 2, nothing written)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_ray_executor_module_imports_ray() -> None:
    importers = []
    for path in (ROOT / "lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["lab/workers/ray_cluster.py"]


def test_a_local_launch_and_its_driver_load_no_ray() -> None:
    probe = ("import lab.cli, lab.headless, lab.workers.startup, lab.workers.driver, lab.workers.background, lab.bench\n"
             "from lab.workers.startup import executor_for\n"
             "from lab.workers.scheduler import WorkerSpec\n"
             "executor_for([WorkerSpec('cpu', 1)])\n"
             "import json, sys; print(json.dumps(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_without_ray_the_ray_executor_is_one_line_saying_how_to_install_it(lab_dir: Path) -> None:
    blocker = lab_dir / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(lab_dir / "no-ray"), os.environ.get("PYTHONPATH", "")])}
    res = cli(lab_dir, "run", "--headless", "alpha", "--executor", "ray", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == ['error: the ray executor needs Ray: pip install "dropres-lab[ray]"']
    assert not (lab_dir / "runs").exists()


class FakeRay:
    """Just enough of the ray module to see what a RayExecutor asks for (no GPU node needed)."""

    def __init__(self, nodes: list[dict]) -> None:
        self._nodes = nodes
        self.requests: list[dict] = []

    def nodes(self) -> list[dict]:
        return self._nodes

    def remote_class(self):
        fake = self

        class Actor:
            @staticmethod
            def options(**resources):
                fake.requests.append(resources)
                return Actor

            @staticmethod
            def remote(*args):
                return object()
        return Actor


def executor_on(nodes: list[dict], device: str = "auto", gpu_share: float = 1.0, threads: int = 1):
    from lab.workers.ray_cluster import RayExecutor

    fake = FakeRay([{"Alive": True, "NodeID": f"{i:056x}", "Resources": r} for i, r in enumerate(nodes)])
    executor = RayExecutor(None, device, gpu_share, threads)
    executor._ray, executor._actor_class = fake, fake.remote_class()
    gpus = sum(r.get("GPU", 0) for r in nodes)
    executor.device = "cuda" if device.startswith("cuda") or (device == "auto" and gpus) else "cpu"
    return executor, fake


def placed(executor) -> list[int]:
    """Every slot the executor offers, each given its actor (as a submit there would)."""
    slots = executor.idle_slots()
    for slot in slots:
        executor.actor_for(slot)
    assert executor.idle_slots() == slots  # made, idle, and no more room
    return slots


def test_ray_groups_ask_for_a_whole_gpu_on_gpu_nodes_by_default() -> None:
    executor, fake = executor_on([{"CPU": 32, "GPU": 2}, {"CPU": 32, "GPU": 1}])
    assert len(placed(executor)) == 3  # one group per GPU
    assert fake.requests == [{"num_gpus": 1.0, "num_cpus": 1, "scheduling_strategy": "SPREAD"}] * 3
    assert executor.device_of(0) == "cuda"
    assert executor.describe() == "ray: 2 nodes, 3 GPUs, 64 CPUs; 3 cuda groups at a time"


def test_gpu_share_puts_several_groups_on_one_gpu() -> None:
    executor, fake = executor_on([{"CPU": 8, "GPU": 1}], gpu_share=0.25)
    assert len(placed(executor)) == 4
    assert {r["num_gpus"] for r in fake.requests} == {0.25}


def test_on_cpu_nodes_a_group_asks_for_as_many_cpus_as_its_torch_threads() -> None:
    executor, fake = executor_on([{"CPU": 4}, {"CPU": 2}], threads=2)
    assert len(placed(executor)) == 3 and executor.device_of(0) == "cpu"
    assert fake.requests == [{"num_gpus": 0, "num_cpus": 2, "scheduling_strategy": "SPREAD"}] * 3
    executor, fake = executor_on([{"CPU": 4, "GPU": 1}], device="cpu")  # --device cpu on a GPU node
    assert len(placed(executor)) == 4 and {r["num_gpus"] for r in fake.requests} == {0}


def test_the_executor_choice_is_checked_before_anything_starts() -> None:
    from lab.workers.settings import DriverSettings

    assert DriverSettings(executor="slurm").problem() == "--executor 'slurm': use local or ray"
    assert DriverSettings(address="auto").problem() == "--address and --gpu-share apply to --executor ray only"
    assert "above 0 and at most 1" in DriverSettings(executor="ray", gpu_share=0).problem()
    assert DriverSettings(executor="ray", address="auto", gpu_share=0.5).problem() is None


def test_without_an_address_a_new_local_ray_starts_quietly_never_one_left_on_this_machine(monkeypatch) -> None:
    """No --address: Ray's "local" (for None Ray would join the newest cluster `ray start` or a
    crashed program left here); the "ray" logger at ERROR, so Ray's notices (token
    authentication on every private start) stay off the terminal; --address is passed as given."""
    import lab.workers.ray_cluster as ray_cluster

    class StartingRay(FakeRay):
        def __init__(self) -> None:
            super().__init__([{"Alive": True, "NodeID": "0" * 56, "Resources": {"CPU": 2}}])
            self.inits: list[dict] = []

        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs) -> None:
            self.inits.append(kwargs)

        def remote(self, **options):
            return lambda cls: cls

    fake = StartingRay()
    monkeypatch.setattr(ray_cluster, "import_ray", lambda: fake)
    ray_cluster.RayExecutor(None, "cpu").start()
    ray_cluster.RayExecutor("auto", "cpu").start()
    assert [i["address"] for i in fake.inits] == ["local", "auto"]
    assert all(i["configure_logging"] and i["logging_level"] == "ERROR" and not i["include_dashboard"]
               for i in fake.inits)
