"""How a driver trains: the choices `run --headless` offers and the TUI hands its background driver.

Kept apart from the rest of `lab.workers` on purpose: the TUI builds these settings without
training anything, so importing this module must not pull in worker processes or torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriverSettings:
    """Device, worker count, group cap, how long an idle driver waits for new work, and where
    groups train.

    `workers` and `group_size` None mean the scheduler's defaults (`plan_execution`).
    `linger_s`: 0 for a driver that trains only its own runs (headless); the background
    driver waits this long after its queue empties before it exits. `executor`: "local"
    (worker processes here) or "ray" (a Ray cluster: `address` None starts a private one,
    "auto" joins `ray start --head`'s, or HOST:PORT / ray://HOST:PORT); `gpu_share`: the
    fraction of a GPU one Ray group asks for (0.25: four groups per GPU).
    """

    device: str = "auto"
    workers: int | None = None
    group_size: int | None = None
    linger_s: float = 30.0
    executor: str = "local"
    address: str | None = None
    gpu_share: float = 1.0

    def problem(self) -> str | None:
        """A one-line mistake in the executor choice, or None."""
        if self.executor not in EXECUTORS:
            return f"--executor {self.executor!r}: use {' or '.join(EXECUTORS)}"
        if self.executor != "ray" and (self.address is not None or self.gpu_share != 1.0):
            return "--address and --gpu-share apply to --executor ray only"
        if not 0 < self.gpu_share <= 1:
            return f"--gpu-share {self.gpu_share:g}: give a fraction of one GPU, above 0 and at most 1"
        return None


#: The executors a driver can train with (lab/workers/local.py, lab/workers/ray_cluster.py).
EXECUTORS = ("local", "ray")
