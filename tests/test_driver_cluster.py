"""How the driver works with a cluster executor, on fake executors (no Ray, no training):
it records what the executor trains on, for the lab's status line, and keeps it current as
nodes come and go; a run whose node dies is retried once elsewhere, and one that loses its
node twice fails for good, with a one-line reason. (On a real 2-node Ray cluster: test_ray.py.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import lab.workers.driver as driver_module
from lab.core.config import TrainOptions
from lab.store import Store
from lab.workers.driver import Driver
from lab.workers.executor import Executor, WorkerDied

from conftest import tiny_config


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class GrowingCluster(Executor):
    """A cluster that trains nothing and says what it has; `description` changes as nodes join."""

    def __init__(self) -> None:
        self.description = "ray: 1 node, 0 GPUs, 1 CPU; 1 cpu group at a time"

    def describe(self) -> str:
        return self.description

    def start(self) -> None: ...
    def idle_slots(self) -> list[int]: return []
    def device_of(self, slot: int) -> str: return "cpu"
    def submit(self, slot: int, task) -> None: raise AssertionError("nothing is dispatched here")
    def poll(self, timeout: float) -> list:
        time.sleep(min(timeout, 0.02))
        return []
    def busy(self) -> bool: return False
    def stop(self, slot: int | None = None) -> None: ...
    def kill(self) -> None: ...
    def shutdown(self) -> None: ...


def recorded(store: Store) -> str | None:
    info = store.driver_info()
    return info.executor if info is not None else None


def test_the_driver_records_what_its_executor_trains_on_and_keeps_it_current(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(driver_module, "DESCRIBE_EVERY_S", 0.05)
    with Store.open(tmp_path / "runs") as store:
        cluster = GrowingCluster()
        driver = Driver(store, cluster, group_size=1, options=TrainOptions(), kind="background", linger_s=600)
        thread = threading.Thread(target=driver.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: recorded(store) == "ray: 1 node, 0 GPUs, 1 CPU; 1 cpu group at a time",
                     what="the description recorded")
            cluster.description = "ray: 2 nodes, 0 GPUs, 2 CPUs; 2 cpu groups at a time"  # a node joined
            wait_for(lambda: recorded(store) == "ray: 2 nodes, 0 GPUs, 2 CPUs; 2 cpu groups at a time",
                     what="the new description recorded")
        finally:
            store.request(None, "exit")
            thread.join(timeout=10)
        assert not thread.is_alive() and store.driver_info() is None  # gone with the driver's record


class LosingNodes(Executor):
    """A cluster whose every node dies under the group it was given: each group lands on a new
    node, which is reported dead at the next poll (Ray's WorkerDied, retry elsewhere)."""

    def __init__(self) -> None:
        self.slots: dict[int, object] = {}
        self.submitted: list[tuple[str, list[str]]] = []  # (node, run ids)
        self._next = 0

    def node(self, slot: int) -> str:
        return f"{0xa0 + slot:012x}"

    def start(self) -> None: ...
    def idle_slots(self) -> list[int]:
        if self.slots:
            return []
        self._next += 1
        return [self._next]
    def device_of(self, slot: int) -> str: return "cpu"
    def submit(self, slot: int, task) -> None:
        self.slots[slot] = task
        self.submitted.append((self.node(slot), list(task.run_ids)))
    def poll(self, timeout: float) -> list:
        time.sleep(min(timeout, 0.02))
        dead = [(slot, task.task_id, WorkerDied(slot, task, f"the Ray worker on node {self.node(slot)} was lost "
                                                "with its node (NodeDiedError)", retry_elsewhere=True,
                                                node=self.node(slot)))
                for slot, task in self.slots.items()]
        self.slots.clear()
        return dead
    def busy(self) -> bool: return bool(self.slots)
    def stop(self, slot: int | None = None) -> None: ...
    def kill(self) -> None: ...
    def shutdown(self) -> None: ...


def test_a_run_that_loses_its_node_twice_fails_for_good_with_a_one_line_reason(tmp_path: Path, corpus_file) -> None:
    with Store.open(tmp_path / "runs") as store:
        rid = store.enqueue("s", "a", "a", tiny_config(corpus_file), None).run_id
        cluster = LosingNodes()
        Driver(store, cluster, group_size=1, options=TrainOptions(), kind="headless", scope=[rid]).run()
        first, second = cluster.node(1), cluster.node(2)
        assert cluster.submitted == [(first, [rid]), (second, [rid])]  # retried once elsewhere, then never again
        run = store.get(rid)
        assert run.status == "failed" and "\n" not in run.error
        assert run.error == (f"the Ray worker on node {second} was lost with its node (NodeDiedError), the second "
                             "time it lost its worker; rerun to resume from its last checkpoint")
        log = [message for _, _, message in store.log(rid)]
        assert any(f"node {first}" in m and "retrying once on another node from its last checkpoint" in m for m in log)
