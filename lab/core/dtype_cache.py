"""Measured bf16 and fp32 step times, kept per machine so dtype "auto" measures only once.

Measuring takes about two seconds and must not run while workers train (they would slow it,
and a wrong answer would be kept), so its result is cached: one JSON file in the user cache
folder beside the downloaded corpus, or where $DROPRES_DTYPE_CACHE says (the tests point it
at a temporary folder). It is keyed by the machine (CPU model), the device and torch's
version, which together decide the speed, then by the model shape measured. Writes are
atomic; a damaged file is ignored with a one-line warning, and the next measurement
replaces it. No torch here: a cached answer costs no torch import.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .atomic import write_atomic
from .corpus import cache_dir

#: Environment variable naming the cache file (a path), instead of the user cache folder's.
ENV_VAR = "DROPRES_DTYPE_CACHE"
FILE_NAME = "dtype-timings.json"
FORMAT = 1


@dataclass(frozen=True)
class StepTimings:
    """Seconds per training step of one model shape in each precision, on one machine."""

    fp32_s: float
    bf16_s: float
    threads: int | None = None  # torch threads during the measurement (None: torch's default)
    measured_at: str = ""  # UTC, ISO 8601


def cache_path() -> Path:
    """Where the measurements are kept: $DROPRES_DTYPE_CACHE, else the user cache folder."""
    return Path(os.environ.get(ENV_VAR) or cache_dir() / FILE_NAME)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(device_name: str) -> str:
    """"AMD EPYC | cpu | torch 2.13.0+cpu": what a measurement holds for."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{cpu_model()} | {device_name} | torch {version}"


def _load(path: Path, warn: Callable[[str], None]) -> dict:
    """The cache's machines table; {} when it does not exist or is damaged (with a warning)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        warn(f"cannot read the dtype cache {path} ({exc.strerror}); measuring again")
        return {}
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("machines"), dict):
            raise ValueError("not a dtype cache of format 1")
        return doc["machines"]
    except ValueError as exc:
        warn(f"ignoring the damaged dtype cache {path} ({str(exc).splitlines()[0]}); measuring again")
        return {}


def read_timings(machine: str, shape: str, path: Path | None = None,
                 warn: Callable[[str], None] = lambda m: None) -> StepTimings | None:
    """The cached measurement of `shape` on `machine`, or None (never measured, or damaged)."""
    path = path or cache_path()
    shapes = _load(path, warn).get(machine)
    entry = shapes.get(shape) if isinstance(shapes, dict) else None
    if entry is None:
        return None
    try:
        timings = StepTimings(float(entry["fp32_s"]), float(entry["bf16_s"]), entry.get("threads"),
                              str(entry.get("measured_at", "")))
    except (TypeError, KeyError, ValueError, AttributeError):
        warn(f"ignoring the damaged dtype cache {path} (an entry without its timings); measuring again")
        return None
    if not (timings.fp32_s > 0 and timings.bf16_s > 0):
        warn(f"ignoring the damaged dtype cache {path} (a timing that is not positive); measuring again")
        return None
    return timings


def write_timings(machine: str, shape: str, timings: StepTimings, path: Path | None = None,
                  warn: Callable[[str], None] = lambda m: None) -> Path | None:
    """Add a measurement to the cache (atomically; other machines' entries are kept). Where
    the cache cannot be written, a warning, and None: the next run measures again."""
    path = path or cache_path()
    machines = _load(path, lambda m: None)  # a damaged cache was reported when read; replace it
    entry = {"fp32_s": timings.fp32_s, "bf16_s": timings.bf16_s, "threads": timings.threads,
             "measured_at": timings.measured_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    shapes = machines.get(machine) if isinstance(machines.get(machine), dict) else {}
    machines[machine] = {**shapes, shape: entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, json.dumps({"format": FORMAT, "machines": machines}, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        warn(f"cannot write the dtype cache {path} ({exc.strerror}); the next run measures again")
        return None
