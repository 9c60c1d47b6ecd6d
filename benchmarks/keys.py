"""Timing a key press in the lab under Textual's pilot, as the soak and latency benchmarks do."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

#: Characters of the keys pressed (those without one are None), as a terminal would send them.
KEY_CHARS = {"escape": "\x1b"}


def run_queue_wait() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def timed_press(pilot, key: str) -> tuple[float, float]:
    """Seconds from a key event reaching the app until it has been handled, the screen it
    leads to has processed its pending messages, and that screen has refreshed once more;
    and the seconds of that this thread waited for a CPU.

    Not `pilot.press`: after each key it waits for the whole process to look idle
    (`wait_for_idle`, sleeps of 20 ms until process CPU time stops advancing, up to 1 s, twice),
    which in this process (the lab's store-polling thread, the results reader) measures the
    heuristic, not the app: about 60 ms even for a bare DataTable.
    """
    from textual import events

    app = pilot.app
    loop = asyncio.get_running_loop()
    event = events.Key(key, KEY_CHARS.get(key))
    event.set_sender(app)
    wait0 = run_queue_wait()
    t0 = time.perf_counter()
    app.post_message(event)  # what the terminal driver does with a key press
    await pilot._wait_for_screen()  # the app handled the key (an action may switch the screen) ...
    await pilot._wait_for_screen()  # ... and the screen now shown processed what that queued
    refreshed = loop.create_future()
    app.screen.call_after_refresh(lambda: refreshed.done() or refreshed.set_result(None))
    await asyncio.wait_for(refreshed, timeout=30)
    elapsed = time.perf_counter() - t0
    wait1 = run_queue_wait()
    return elapsed, (wait1 - wait0) if wait0 is not None and wait1 is not None else 0.0
