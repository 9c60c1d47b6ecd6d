"""Groups trained on a Ray cluster: the second `Executor`, for sweeps that outgrow one machine.

Ray places the work; the driver, the store and the events stay as they are. Each group is
one Ray actor (`GroupActor`), asking for one GPU (or `gpu_share` of one) on GPU clusters and
for its torch threads' CPUs otherwise (`placement`). Slots come from the resources of the
cluster's live nodes, so they grow and shrink as nodes join and leave.

Nothing assumes a shared filesystem: the corpus is put once into Ray's object store and
verified by SHA-256 on the node, for the groups a sweep trains and the ones `bench` measures
alike (`Shipped`, `shipped_corpus`); a group resumes from checkpoint bytes the driver sends with
it; and every checkpoint travels home in the event stream (`ShippingCheckpointSink`), where
this executor, in the driver's process, writes it into the store's folder of the run before
the driver reads the `Checkpointed` that follows. Events stream back while a group trains:
each busy actor always has one `drain` call outstanding, which returns as soon as it holds
events. An actor that dies (its node removed, its process killed) is `WorkerDied` with
`retry_elsewhere`, and the driver requeues its runs once.

Ray is imported only here, and this module only when `--executor ray` is chosen.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.checkpoint import list_checkpoints, write_checkpoint_file
from ..formatting import counted
from .executor import Executor, ExecutorUnavailable, GroupTask, Task, TaskDone, WorkerDied, WorkerReady
from .scheduler import WorkerSpec

RAY_MISSING = 'the ray executor needs Ray: pip install "dropres-lab[ray]"'
#: How long an actor's `drain` waits for events before it answers empty (seconds).
DRAIN_WAIT_S = 0.5
#: Checkpoints of a run sent with a resumed group: the newest, and one to fall back on if damaged.
RESUME_CHECKPOINTS = 2
#: How often the cluster's nodes are read for its slots (seconds).
NODES_EVERY_S = 1.0
#: How long a node whose actor died is left out of the slots, unless Ray reports it gone sooner.
LOST_NODE_S = 60.0


def import_ray() -> Any:
    """The ray module, or ExecutorUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorUnavailable(RAY_MISSING) from None
    return ray


def versions() -> dict[str, str]:
    """What must match between the driver and a node for their runs to agree."""
    import torch

    from .. import __version__

    return {"lab": __version__, "torch": torch.__version__.split("+")[0]}


def version_refusal(node: str, mine: dict[str, str], drivers: dict[str, str]) -> str | None:
    """Why `node` refuses the driver's work (its lab or torch differs: runs could not agree), or None."""
    if mine == drivers:
        return None
    return (f"node {node} runs lab {mine['lab']} with torch {mine['torch']}, the driver lab {drivers['lab']} "
            f"with torch {drivers['torch']}; install the same versions on every node")


def placement(device: str, gpu_share: float, threads: int) -> dict[str, float]:
    """The resources one group's actor asks Ray for: a GPU (or `gpu_share` of one) and a CPU
    on GPU work; its torch threads' CPUs on CPU work."""
    if device == "cuda":
        return {"num_gpus": gpu_share, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": threads}


def node_slots(resources: dict[str, float], device: str, gpu_share: float, threads: int) -> int:
    """How many groups one node's resources hold at once."""
    if device == "cuda":
        return int(resources.get("GPU", 0) / gpu_share + 1e-9)
    return int(resources.get("CPU", 0) // threads)


@dataclass(frozen=True)
class CheckpointBytes:
    """A checkpoint on its way home: the driver writes it before the Checkpointed after it."""

    run_id: str
    step: int
    data: bytes


@dataclass(frozen=True)
class Refused:
    """The node refused the group (its lab or torch differs from the driver's)."""

    reason: str


@dataclass(frozen=True)
class Shipped:
    """A task as it travels: what the node lacks comes along (the corpus's SHA-256 beside its
    bytes in Ray's object store; for a group, the checkpoints to resume from)."""

    task: Task
    corpus_sha256: str
    resume: dict[str, list[tuple[int, bytes]]]


def shipped_corpus(shipped: Shipped, raw: bytes) -> Any:
    """The task's corpus from the bytes that came with it, verified by SHA-256 (a node has
    no copy of the file): what a group trains on and what `bench` measures with."""
    from ..core.data import corpus_from_bytes

    return corpus_from_bytes(raw, shipped.task.configs[0]["data"], shipped.corpus_sha256)  # type: ignore[attr-defined]


class GroupActor:
    """One Ray worker process that trains one group at a time (made a Ray actor in `start`)."""

    def __init__(self, threads: int, device: str) -> None:
        import ray
        import torch

        from ..core import train  # noqa: F401  loaded now, so a group's time is its own

        torch.set_num_threads(threads)
        self.device = device
        self.node = ray.get_runtime_context().get_node_id()[:12]
        self.pending: list[tuple[str, object]] = []
        self.cond = threading.Condition()
        self.stop_flag = threading.Event()
        self.finished: set[str] = set()  # task ids whose `run` has returned
        self.ready_told = False

    def run(self, shipped: Shipped, corpus_raw: bytes, driver_versions: dict[str, str]) -> None:
        """Train the group (or measure one, for `bench`) on the corpus that came with it; its
        events (and checkpoints) wait in `pending` for `drain`."""
        from ..core.events import Started

        task = shipped.task
        self.stop_flag.clear()

        def emit(event: object) -> None:
            if isinstance(event, Started):
                event = replace(event, node=self.node)
            with self.cond:
                self.pending.append((task.task_id, event))
                self.cond.notify_all()

        if not self.ready_told:  # up, torch loaded: what `bench` counts as a worker's start-up
            self.ready_told = True
            emit(WorkerReady())
        try:
            refusal = version_refusal(self.node, versions(), driver_versions)
            if refusal:
                emit(Refused(refusal))
            elif isinstance(task, GroupTask):
                self._train(shipped, task, corpus_raw, emit)
            else:  # `bench` measures: on the shipped corpus, its timed checkpoint in a folder of this node's
                import tempfile

                with tempfile.TemporaryDirectory(prefix="dropres-bench-") as scratch:
                    replace(task, checkpoint_dir=scratch).perform(
                        emit, self.stop_flag.is_set, lambda: shipped_corpus(shipped, corpus_raw))
        finally:
            with self.cond:
                self.finished.add(task.task_id)
                self.cond.notify_all()

    def _train(self, shipped: Shipped, task: GroupTask, corpus_raw: bytes, emit: Any) -> None:
        from ..core.checkpoint import ShippingCheckpointSink
        from ..core.config import RunConfig
        from ..core.train import train_group

        configs = [RunConfig.from_dict(c) for c in task.configs]
        sink = ShippingCheckpointSink(dict(zip(task.run_ids, task.checkpoint_dirs)),
                                      lambda rid, step, data: emit(CheckpointBytes(rid, step, data)), shipped.resume)
        # dtype "auto" is this node's to decide for its own hardware, not the driver's machine's
        options = replace(task.options, device=self.device, dtype_choice=None)
        train_group(configs, task.run_ids, emit, options, sink, should_stop=self.stop_flag.is_set,
                    corpus=shipped_corpus(shipped, corpus_raw))

    def drain(self, task_id: str, wait_s: float) -> tuple[str, list[tuple[str, object]], bool]:
        """(node, the events so far, whether task `task_id` has ended and sent them all), waiting
        up to `wait_s` for either."""
        with self.cond:
            self.cond.wait_for(lambda: self.pending or task_id in self.finished, timeout=wait_s)
            out, self.pending = self.pending, []
            return self.node, out, task_id in self.finished

    def stop(self) -> None:
        self.stop_flag.set()


@dataclass
class _Slot:
    actor: Any
    device: str
    node: str = ""
    task: Task | None = None
    run_ref: Any = None  # the running `run` call, whose failure says the actor died
    drain_ref: Any = None
    home: dict[str, str] | None = None  # run id -> the store's folder for its checkpoints


class RayExecutor(Executor):
    """Groups as Ray actors on a cluster (`address`: None starts a private Ray here, "auto"
    joins `ray start --head`'s, HOST:PORT or ray://HOST:PORT another's)."""

    def __init__(self, address: str | None = None, device: str = "auto", gpu_share: float = 1.0,
                 threads: int = 1) -> None:
        self.address = address
        self.wanted_device = device
        self.gpu_share = gpu_share
        self.threads = threads
        self.device = "cpu"  # "cuda" once the cluster is seen to have GPUs (device auto)
        self.slots: dict[int, _Slot] = {}
        self._ids = itertools.count()
        self._ray: Any = None
        self._actor_class: Any = None
        self._corpora: dict[str, tuple[Any, str]] = {}  # data setting -> (object ref, sha256)
        self._nodes: list[dict] = []
        self._nodes_at = 0.0
        self._versions: dict[str, str] = {}
        self._owns_ray = False
        self._lost_nodes: dict[str, float] = {}  # node id prefix -> until when it is not counted
        self._grace_until = 0.0  # after a death: no new actors until the nodes are read afresh

    # -- the cluster -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._ray is not None:
            return
        ray = import_ray()
        self._owns_ray = not ray.is_initialized()  # a caller that joined Ray itself keeps it
        if self._owns_ray:
            # No address: a new local instance ("local"), never one that `ray start` or another
            # program left on this machine (Ray joins the newest of those for None). The "ray"
            # logger at ERROR (applied with configure_logging=True): Ray's warnings, such as
            # "Token authentication is enabled..." on every private start, stay off the terminal.
            try:
                ray.init(address=self.address or "local", include_dashboard=False, configure_logging=True,
                         log_to_driver=False, logging_level="ERROR")
            except Exception as exc:  # Ray raises plain Exception too (a node that timed out starting)
                where = self.address or "a new local instance"
                raise ExecutorUnavailable(f"--address {where}: no Ray cluster could be reached or started "
                                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        self._ray = ray
        self._actor_class = ray.remote(max_concurrency=3, max_restarts=0)(GroupActor)
        self._versions = versions()
        nodes = self.nodes(fresh=True)
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        want = self.wanted_device
        self.device = "cuda" if want.startswith("cuda") or (want == "auto" and gpus > 0) else "cpu"
        if self.device == "cuda" and gpus == 0:
            raise ExecutorUnavailable(f"--device {want}: the Ray cluster has no GPUs; use --device cpu or auto")

    def nodes(self, fresh: bool = False) -> list[dict]:
        """The cluster's live nodes (re-read at most every NODES_EVERY_S)."""
        now = time.monotonic()
        if fresh or now - self._nodes_at >= NODES_EVERY_S:
            self._nodes = [n for n in self._ray.nodes() if n.get("Alive")]
            self._nodes_at = now
        return self._nodes

    def describe(self) -> str:
        nodes = self.nodes()
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
        return (f"ray: {counted(len(nodes), 'node')}, {counted(int(gpus), 'GPU')}, {counted(int(cpus), 'CPU')}"
                f"; {self.capacity()} {self.device} groups at a time")

    def capacity(self) -> int:
        """Groups the live nodes hold at once. A node whose actor just died is not counted for
        a while: Ray may take its health checks' time (tens of seconds) to see a node gone."""
        now = time.monotonic()
        return sum(node_slots(n["Resources"], self.device, self.gpu_share, self.threads) for n in self.nodes()
                   if self._lost_nodes.get(n["NodeID"][:12], 0.0) < now)

    # -- the Executor interface ----------------------------------------------------------------------
    def idle_slots(self) -> list[int]:
        """Idle actors, and new slot ids for the room left on the live nodes (their actor is
        made when a task is submitted there, so an unused slot costs nothing)."""
        idle = [i for i, s in self.slots.items() if s.task is None]
        if time.monotonic() < self._grace_until:
            return idle
        room = self.capacity() - len(self.slots)
        unplaced = any(s.task is not None and not s.node for s in self.slots.values())
        while idle and (room < 0 or unplaced):  # the cluster shrank, or a group waits for a place:
            self._ray.kill(self.slots.pop(idle.pop()).actor, no_restart=True)  # idle actors give theirs back
            room += 1
        return idle + [next(self._ids) for _ in range(max(0, room))]

    def actor_for(self, slot: int) -> _Slot:
        """The slot's actor, made now for a new slot: a GPU (or a share) or its threads' CPUs."""
        if slot not in self.slots:
            resources = placement(self.device, self.gpu_share, self.threads)
            actor = self._actor_class.options(**resources, scheduling_strategy="SPREAD").remote(self.threads, self.device)
            self.slots[slot] = _Slot(actor, self.device)
        return self.slots[slot]

    def device_of(self, slot: int) -> str:
        return self.slots[slot].device if slot in self.slots else self.device

    def worker_specs(self) -> list[WorkerSpec]:
        """The cluster's slots as the scheduler's workers (what `bench` plans with)."""
        return [WorkerSpec(self.device, self.threads)] * self.capacity()

    def submit(self, slot: int, task: Task) -> None:
        """Send `task` to the slot's actor with what its node lacks: the corpus (a group or a
        `bench` measurement alike) and, for a group, its runs' newest checkpoints."""
        s = self.actor_for(slot)
        corpus_ref, sha256 = self._corpus(task.configs[0]["data"])  # type: ignore[attr-defined]
        if isinstance(task, GroupTask):
            home = dict(zip(task.run_ids, task.checkpoint_dirs))
            resume = {rid: _newest_checkpoints(Path(d)) for rid, d in home.items()}
        else:
            home, resume = {}, {}
        s.task, s.home = task, home
        s.run_ref = s.actor.run.remote(Shipped(task, sha256, resume), corpus_ref, self._versions)
        s.drain_ref = s.actor.drain.remote(task.task_id, DRAIN_WAIT_S)

    def _corpus(self, data: str) -> tuple[Any, str]:
        """The corpus's bytes in Ray's object store (put once per sweep) and their SHA-256."""
        if data not in self._corpora:
            import hashlib

            from ..core.corpus import locate_corpus

            raw = locate_corpus(data).read_bytes()
            self._corpora[data] = (self._ray.put(raw), hashlib.sha256(raw).hexdigest())
        return self._corpora[data]

    def poll(self, timeout: float) -> list[tuple[int, str, object]]:
        ray = self._ray
        out: list[tuple[int, str, object]] = []
        waiting = {s.drain_ref: i for i, s in self.slots.items() if s.drain_ref is not None}
        if not waiting:
            time.sleep(timeout)
            return out
        ready, _ = ray.wait(list(waiting), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        for ref in ready:
            slot = waiting[ref]
            out.extend(self._collect(slot, ref))
        return out

    def _collect(self, slot: int, ref: Any) -> list[tuple[int, str, object]]:
        ray = self._ray
        s = self.slots[slot]
        try:
            s.node, events, ended = ray.get(ref)
        except ray.exceptions.RayError as exc:
            return [self._died(slot, _death_reason(exc, s.node))]
        out: list[tuple[int, str, object]] = []
        for task_id, event in events:
            if isinstance(event, CheckpointBytes):  # home before the Checkpointed that follows it
                write_checkpoint_file(Path(s.home[event.run_id]), event.step, event.data)
            elif isinstance(event, Refused):
                self.slots.pop(slot)
                ray.kill(s.actor, no_restart=True)
                return out + [(slot, task_id, WorkerDied(slot, s.task, event.reason, node=s.node))]
            else:
                out.append((slot, task_id, event))
        if ended:
            try:
                ray.get(s.run_ref)
            except ray.exceptions.RayError as exc:
                return out + [self._died(slot, _death_reason(exc, s.node))]
            out.append((slot, s.task.task_id, TaskDone(s.task.task_id)))
            s.task = s.run_ref = s.drain_ref = s.home = None
        else:
            s.drain_ref = s.actor.drain.remote(s.task.task_id, DRAIN_WAIT_S)
        return out

    def _died(self, slot: int, reason: str) -> tuple[int, str, object]:
        s = self.slots.pop(slot)
        self._grace_until = time.monotonic() + 2 * NODES_EVERY_S
        self._nodes_at = 0.0
        if s.node:
            self._lost_nodes[s.node] = time.monotonic() + LOST_NODE_S
        try:
            self._ray.kill(s.actor, no_restart=True)
        except Exception:  # already gone with its node
            pass
        task_id = s.task.task_id if s.task else ""
        return (slot, task_id, WorkerDied(slot, s.task, reason, retry_elsewhere=True, node=s.node))

    def busy(self) -> bool:
        return any(s.task is not None for s in self.slots.values())

    def stop(self, slot: int | None = None) -> None:
        targets = list(self.slots.values()) if slot is None else [self.slots[slot]] if slot in self.slots else []
        for s in targets:
            if s.task is not None:
                s.actor.stop.remote()

    def kill(self) -> None:
        for s in self.slots.values():
            self._ray.kill(s.actor, no_restart=True)
        for s in self.slots.values():
            s.task = None
        self.slots.clear()

    def shutdown(self) -> None:
        """End the actors and leave Ray if this executor joined it (a private instance ends with
        it; a cluster keeps running)."""
        if self._ray is None:
            return
        for s in self.slots.values():
            try:
                self._ray.kill(s.actor, no_restart=True)
            except Exception:
                pass
        self.slots.clear()
        if self._owns_ray:
            self._ray.shutdown()
        self._ray = None


def _newest_checkpoints(folder: Path) -> list[tuple[int, bytes]]:
    """A run's newest checkpoint files as (step, bytes), to travel with its group."""
    from ..core.checkpoint import checkpoint_step

    return [(int(checkpoint_step(p.name)), p.read_bytes()) for p in list_checkpoints(folder)[:RESUME_CHECKPOINTS]]


def _death_reason(exc: BaseException, node: str) -> str:
    where = f"node {node}" if node else "its node"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "node" in first.lower() and ("died" in first.lower() or "dead" in first.lower() or "removed" in first.lower()):
        return f"the Ray worker on {where} was lost with its node ({type(exc).__name__})"
    return f"the Ray worker on {where} died ({type(exc).__name__})"
