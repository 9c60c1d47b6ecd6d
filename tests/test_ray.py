"""`--executor ray` on a small local Ray cluster: same results as local workers, groups spread
over the nodes, a node removed mid-training costs nothing, stop requests reach the actors, a
node whose lab or torch differs from the driver's is refused.

The cluster is two nodes of one CPU on loopback only (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`
makes Ray bind its services to 127.0.0.1), with usage statistics and the dashboard off,
started once for the module and shut down at its end. Select these tests with `-m ray`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from lab.core.config import TrainOptions  # noqa: E402
from lab.store import Store  # noqa: E402
from lab.workers.driver import Driver  # noqa: E402
from lab.workers.ray_cluster import RayExecutor  # noqa: E402

from conftest import SUITES, cli, tiny_config, write_corpus  # noqa: E402

pytestmark = pytest.mark.ray

NODE_RE = re.compile(r"of node ([0-9a-f]+)")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def drive(store: Store, address: str, **kwargs) -> tuple[Driver, threading.Thread]:
    """A headless-style driver on `store`'s queued runs, training on the cluster, in a thread."""
    driver = Driver(store, RayExecutor(address, "cpu"), options=TrainOptions(), kind="headless",
                    scope=[r.run_id for r in store.queued()], **{"group_size": 1, **kwargs})
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    return driver, thread


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def nodes_in_log(store: Store, run_id: str) -> list[str]:
    return [m.group(1) for _, _, line in store.log(run_id) if (m := NODE_RE.search(line))]


def losses_as_a_local_worker_trains(store: Store, row) -> list[float]:
    """The val losses a local worker gets for this run alone in its group (as `--workers 2`
    splits the suite), performed here on one torch thread as a worker does, to spare the
    test the start-up of worker processes."""
    import torch

    from lab.workers.executor import GroupTask

    got: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        GroupTask("g", [row.run_id], [row.config.to_dict()], [str(store.dir / "local" / row.run_id)]).perform(
            lambda e: got.append(e.val_loss) if type(e).__name__ == "Evaluated" else None, lambda: False)
    finally:
        torch.set_num_threads(threads)
    return got


def test_a_suite_gives_the_same_losses_on_ray_as_on_local_workers(tmp_path: Path, cluster) -> None:
    c, _ = cluster
    corpus = write_corpus(tmp_path / "corpus.txt")
    (tmp_path / "experiments.toml").write_text(SUITES.format(corpus=corpus), encoding="utf-8")
    on_ray = cli(tmp_path, "run", "--headless", "alpha", "--executor", "ray", "--address", c.address,
                 env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    assert on_ray.returncode == 0, on_ray.stderr
    assert "with ray: 2 nodes, 0 GPUs, 2 CPUs" in on_ray.stdout  # the header names what it sees
    with Store.open(tmp_path / "runs") as store:
        rows = store.runs()
        assert len(rows) == 2
        for row in rows:
            assert row.status == "finished" and nodes_in_log(store, row.run_id)
            on_cluster = [m[2] for m in store.metrics(row.run_id, "val")]
            local = losses_as_a_local_worker_trains(store, row)
            assert len(local) == len(on_cluster) == 4
            assert max(abs(a - b) for a, b in zip(local, on_cluster)) < 1e-5
            assert store.checkpoints(row.run_id)[0][1].is_file()  # shipped home into the store's checkpoints/


def test_runs_spread_over_both_nodes_and_a_removed_node_costs_nothing(tmp_path: Path, cluster) -> None:
    c, worker = cluster
    corpus = write_corpus(tmp_path / "corpus.txt")
    with Store.open(tmp_path / "runs") as store:
        ids = [store.enqueue("s", f"r{i}", f"r{i}", tiny_config(corpus, seed=i, max_iters=300, eval_interval=50),
                             None).run_id for i in range(4)]
        driver, thread = drive(store, c.address)
        worker_node = worker.node_id[:12]

        def on_worker_with_a_checkpoint() -> bool:
            return any(worker_node in nodes_in_log(store, rid) and (store.get(rid).checkpoint_step or 0) > 0
                       and store.get(rid).status == "running" for rid in ids)
        wait_for(on_worker_with_a_checkpoint, what="a group checkpointed on the second node")
        moved = [rid for rid in ids if worker_node in nodes_in_log(store, rid) and store.get(rid).status == "running"]
        c.remove_node(worker)
        thread.join(timeout=240)
        assert not thread.is_alive()
        rows = {rid: store.get(rid) for rid in ids}
        assert all(r.status == "finished" for r in rows.values()), {r.name: (r.status, r.error) for r in rows.values()}
        everywhere = {n for rid in ids for n in nodes_in_log(store, rid)}
        assert len(everywhere) == 2 and worker_node in everywhere  # both nodes trained
        for rid in moved:
            log = [line for _, _, line in store.log(rid)]
            assert any("retrying once on another node" in line and worker_node in line for line in log), log
            resumed = [line for line in log if line.startswith("resumed at step")]
            assert resumed and worker_node not in resumed[-1] and not resumed[-1].startswith("resumed at step 0 ")
        for rid in ids:  # every evaluation recorded exactly once, none lost
            assert [m[0] for m in store.metrics(rid, "val")] == list(range(0, 301, 50))


def test_a_stop_request_from_the_store_stops_and_checkpoints_a_ray_group(tmp_path: Path, cluster) -> None:
    c, _ = cluster
    corpus = write_corpus(tmp_path / "corpus.txt")
    with Store.open(tmp_path / "runs") as store:
        rid = store.enqueue("s", "long", "long", tiny_config(corpus, max_iters=1_000_000, eval_interval=100000),
                            None).run_id
        driver, thread = drive(store, c.address)
        wait_for(lambda: store.get(rid).status == "running" and store.get(rid).step > 20, what="training")
        store.request(rid, "stop")  # as the TUI writes it
        thread.join(timeout=120)
        assert not thread.is_alive()
        row = store.get(rid)
        assert row.status == "stopped" and row.step > 20
        assert row.checkpoint_step == row.step and store.checkpoints(rid)[0][1].is_file()  # sent home on the way out


def test_a_node_whose_versions_differ_from_the_drivers_refuses_the_group_naming_both(tmp_path: Path, cluster) -> None:
    """The check with injected versions: the driver's are made to differ from the nodes' (the
    same install here), as a node with another lab or torch would see it."""
    import torch

    from lab import __version__

    c, _ = cluster
    corpus = write_corpus(tmp_path / "corpus.txt")
    with Store.open(tmp_path / "runs") as store:
        rid = store.enqueue("s", "a", "a", tiny_config(corpus, max_iters=20), None).run_id
        executor = RayExecutor(c.address, "cpu")
        executor.start()
        executor._versions = {"lab": "0.0.1", "torch": "1.0.0"}  # what the driver runs, as the nodes see it
        driver = Driver(store, executor, group_size=1, options=TrainOptions(), kind="headless", scope=[rid])
        thread = threading.Thread(target=driver.run, daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert not thread.is_alive()
        row = store.get(rid)
        assert row.status == "failed" and row.step == 0 and store.metrics(rid, "val") == []
        node = re.search(r"node ([0-9a-f]{12}) runs", row.error or "")
        assert node and "\n" not in row.error, row.error
        assert row.error.startswith(f"node {node.group(1)} runs lab {__version__} with torch "
                                    f"{torch.__version__.split('+')[0]}, the driver lab 0.0.1 with torch 1.0.0; "
                                    "install the same versions on every node")


def test_bench_measures_on_the_nodes_with_the_corpus_shipped_through_ray(tmp_path: Path, cluster) -> None:
    """`bench --executor ray` ships the corpus as `run` does: the file is gone once it is in
    Ray's object store, and the nodes still measure (they never read it from a disk)."""
    from lab.bench import measure_groups, shape_key

    c, _ = cluster
    corpus = write_corpus(tmp_path / "corpus.txt")
    configs = [tiny_config(corpus)]
    executor = RayExecutor(c.address, "cpu")
    executor.start()
    executor._corpus(str(corpus))  # put once into the object store, as the first submit does
    corpus.unlink()  # no node has a copy now
    costs, _ = measure_groups({shape_key(configs): configs}, executor, steps_budget_s=0.05)
    cost = costs[shape_key(configs)]
    assert cost.steps_timed >= 3 and cost.step_s > 0 and cost.checkpoint_s > 0
