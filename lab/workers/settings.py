"""How a driver trains: the choices `run --headless` offers and the TUI hands its background driver.

Kept apart from the rest of `lab.workers` on purpose: the TUI builds these settings without
training anything, so importing this module must not pull in worker processes or torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriverSettings:
    """Device, worker count, group cap, and how long an idle driver waits for new work.

    `workers` and `group_size` None mean the scheduler's defaults (`plan_execution`).
    `linger_s`: 0 for a driver that trains only its own runs (headless); the background
    driver waits this long after its queue empties before it exits.
    """

    device: str = "auto"
    workers: int | None = None
    group_size: int | None = None
    linger_s: float = 30.0
