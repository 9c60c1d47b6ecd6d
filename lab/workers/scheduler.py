"""Which queued runs train together, and on how many workers.

Runs can share one batched model when they agree on every setting except their rates and seed
(`RunConfig.group_key`) and resume from the same step (they must see the same batches from
then on). The scheduler only decides; the driver dispatches and the workers train.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence, TypeVar

from ..formatting import counted

#: Largest group on a CPU when the user sets none: larger groups keep the matmuls busier,
#: and the paper's series (at most 5 configurations a group) always fit in one.
DEFAULT_CPU_GROUP_SIZE = 16
DEFAULT_GPU_GROUP_SIZE = 64


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: the device it trains on and its torch thread count."""

    device: str
    threads: int


class Queued(Protocol):
    """What the scheduler reads of a queued run: the store's light queue row (`QueuedRun`, what
    the driver plans from), a whole row (`RunRow`), or a stand-in for a run not queued yet
    (`lab.bench` plans a suite before anything is written)."""

    @property
    def group_text(self) -> str: ...

    @property
    def checkpoint_step(self) -> int | None: ...


Q = TypeVar("Q", bound=Queued)


def resume_step(run: Queued) -> int:
    """The step a queued run will start from: its newest recorded checkpoint, else 0."""
    return int(run.checkpoint_step or 0)


def plan_groups(runs: Sequence[Q], group_size: int) -> list[list[Q]]:
    """Split runs into compatible groups of at most `group_size`, keeping queue order.

    Compatible means equal group key (`RunConfig.group_key`, as text: `group_text`) and equal
    resume step. Groups are formed in the order their first run was queued, and each is cut
    into chunks no larger than `group_size`.
    """
    buckets: dict[tuple[str, int], list[Q]] = {}
    for run in runs:
        buckets.setdefault((run.group_text, resume_step(run)), []).append(run)
    groups: list[list[Q]] = []
    for members in buckets.values():
        for start in range(0, len(members), max(1, group_size)):
            groups.append(members[start:start + group_size])
    return groups


def spread_groups(groups: Sequence[list[Q]], idle_workers: int) -> list[list[Q]]:
    """The groups to hand to `idle_workers` idle workers, largest groups split to fill them.

    While there are more idle workers than groups, the largest group is cut in two halves
    (the first half one larger when odd), so no worker waits while another trains a group
    that could be shared. The driver dispatches with this rule and `lab.bench` simulates it,
    so a prediction splits groups exactly as a launch will.
    """
    out = list(groups)
    while len(out) < idle_workers and any(len(g) > 1 for g in out):
        big = max(out, key=len)
        out.remove(big)
        half = (len(big) + 1) // 2
        out += [big[:half], big[half:]]
    return out


def cpu_count() -> int:
    """Cores this process may use (respects CPU affinity, as in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def plan_workers(device: str, workers: int | None, n_runs: int, cuda_devices: int) -> list[WorkerSpec]:
    """Worker processes for a device choice ("auto", "cpu", "cuda", "cuda:N").

    GPUs: one worker per visible GPU ("auto" and "cuda") or on the one named. CPU: the cores
    are split evenly; by default one single-threaded worker per core (the driver splits
    groups to keep every worker busy), fewer only when there are fewer runs than cores.
    Measured on 2 cores (benchmarks/results/worker-split.md): two 1-thread workers beat one
    2-thread worker, and by far when anything else uses the CPU, because a small model's
    matmuls scale poorly over threads and intra-op threads stall when a core is taken.
    """
    if device == "auto":
        device = "cuda" if cuda_devices > 0 else "cpu"
    if device.startswith("cuda"):
        if device == "cuda":
            gpus = [f"cuda:{i}" for i in range(cuda_devices)]
        else:
            gpus = [device]
        count = workers or len(gpus)
        return [WorkerSpec(gpus[i % len(gpus)], 1) for i in range(count)]
    cores = cpu_count()
    count = workers or max(1, min(cores, n_runs))
    threads = max(1, cores // count)
    return [WorkerSpec("cpu", threads) for _ in range(count)]


def check_device(device: str, cuda_devices: int) -> str | None:
    """A one-line problem with a --device choice, or None when it can be used here."""
    if device in ("auto", "cpu"):
        return None
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if cuda_devices == 0:
            return f"--device {device}: CUDA is not available on this machine; use --device cpu or auto"
        if device.startswith("cuda:") and int(device[5:]) >= cuda_devices:
            return (f"--device {device}: only {counted(cuda_devices, 'CUDA device')} visible "
                    f"(cuda:0..cuda:{cuda_devices - 1})")
        return None
    return f"--device {device!r}: use auto, cpu, cuda or cuda:N"


def default_group_size(device: str) -> int:
    return DEFAULT_GPU_GROUP_SIZE if device.startswith("cuda") else DEFAULT_CPU_GROUP_SIZE


class ExecutionPlan(NamedTuple):
    """What `plan_execution` decides for a launch."""

    group_size: int  # the cap on a group's configurations
    n_groups: int  # groups the queued runs make under that cap (before splitting over idle workers)
    workers: list[WorkerSpec]


def plan_execution(device: str, workers: int | None, group_size: int | None, queued: Sequence[Queued],
                   cuda_devices: int) -> ExecutionPlan:
    """The group cap, the number of groups the queue makes, and the workers to start.

    Workers are sized for the runs queued now; the driver splits groups to fill them.

    `device` may be "auto"; it resolves to every visible GPU, else the CPU.
    """
    resolved = device if device != "auto" else ("cuda" if cuda_devices else "cpu")
    cap = group_size or default_group_size(resolved)
    n_groups = max(1, len(plan_groups(queued, cap)))
    return ExecutionPlan(cap, n_groups, plan_workers(resolved, workers, len(queued), cuda_devices))


def cuda_device_count() -> int:
    """Visible CUDA devices; 0 on a CPU-only build of torch.

    A CPU-only build is recognised from its version file without importing torch: that import
    takes 1.5 s, and a driver on a CPU needs torch for nothing else once dtype "auto" is
    decided (its workers import it for themselves)."""
    if "torch" not in sys.modules and torch_build_has_gpu() is False:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torch_build_has_gpu(version_file: Path | None = None) -> bool | None:
    """Whether the installed torch was built for CUDA or ROCm, read from `torch/version.py`
    (its `cuda` and `hip` values, None in a CPU-only build) without importing torch; None
    when that cannot be told (no torch, a file of another form): then ask torch itself.
    `version_file`: another such file to read (the tests')."""
    path = version_file
    if path is None:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            continue
        try:
            values[name] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            values[name] = True  # computed, so not the plain None of a CPU-only build
    if "cuda" not in values or "hip" not in values:
        return None
    return bool(values["cuda"] or values["hip"])
