"""Which floating-point precision a run trains in when its dtype is "auto": decided by measuring.

CPU flags do not tell speed. On this project's 2-core AMD EPYC (avx512_bf16) a training step
ran 1.5-2.5x faster in bf16 autocast than in fp32; on an Intel Xeon with the same flag and
the same torch, bf16 matrix multiplies ran at half the fp32 speed and every step was slower
(issue 12). So on a CPU "auto" times the model's own training step in both precisions
(`lab.core.dtype_timing`, about two seconds) and takes bf16 only when it is at least
`BF16_MIN_SPEEDUP` faster; the answer is cached per machine, device and torch version
(`lab.core.dtype_cache`). Without native bf16 (no avx512_bf16/amx_bf16 flag) bf16 is
emulated and slow, so float32 is chosen without measuring; a CUDA device with bf16 uses it.

Whether bf16 changes the losses: benchmarks/results/dtype_agreement.md compares both
precisions at every rate of paper-skip1 against seed-to-seed noise.

The measurement must run while nothing else trains (two measurements side by side on two
cores slow each other, and a wrong answer would be cached): the driver and `bench` resolve
"auto" before their workers start and hand the answer to the workers (`TrainOptions.
dtype_choice`); a trainer given no answer resolves on its own device with `choose_dtype`,
which is also what a remote worker calls for its own hardware. A run keeps the precision it
started in: a resume takes it from the checkpoint, never from a new resolution.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from . import dtype_cache

if TYPE_CHECKING:
    import torch

    from .config import RunConfig

#: CPU feature flags (Linux /proc/cpuinfo) that mean native bf16 matrix multiplies.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: bf16 is used only when a training step is at least this much faster than in fp32: a small
#: gain is not worth a precision whose losses differ from fp32's.
BF16_MIN_SPEEDUP = 1.10

#: A measured speed-up within this fraction of BF16_MIN_SPEEDUP is not cached: a few per cent
#: of noise could have chosen the other precision, so the next launch measures again.
UNSURE_MARGIN = 0.05

#: (fp32 seconds, bf16 seconds) per training step of a configuration on a device.
Measure = Callable[["RunConfig", str, "int | None"], "tuple[float, float]"]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, empty where /proc/cpuinfo does not exist (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(device: "str | torch.device") -> bool:
    """True when `device` multiplies bf16 matrices natively (tensor cores, AVX512-BF16, AMX)."""
    kind = _device_type(device)
    if kind == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def choose_from_timings(fp32_step_s: float, bf16_step_s: float) -> str:
    """"bfloat16" when its step is at least BF16_MIN_SPEEDUP times faster, else "float32"."""
    return "bfloat16" if fp32_step_s >= BF16_MIN_SPEEDUP * bf16_step_s else "float32"


@dataclass(frozen=True)
class DtypeChoice:
    """What a run's dtype setting resolved to, and why: recorded in its provenance and log."""

    setting: str  # the run's dtype setting: "auto", "float32" or "bfloat16"
    dtype: str  # the precision it trains in: "float32" or "bfloat16"
    reason: str  # "set", "measured", "no native bf16", "cuda", "checkpoint"
    fp32_step_s: float | None = None  # measured seconds per training step ("measured" only)
    bf16_step_s: float | None = None
    shape: str = ""  # the measured model shape
    cached: bool = False  # the timings came from the cache, not from a measurement now
    not_cached: str = ""  # why a measurement now was not cached ("" when it was, or was not asked to be)

    @property
    def bf16_speedup(self) -> float | None:
        """fp32 step time / bf16 step time: above 1 bf16 is faster."""
        if self.fp32_step_s is None or self.bf16_step_s is None:
            return None
        return self.fp32_step_s / self.bf16_step_s

    def describe(self) -> str:
        """One line: "dtype auto: float32, bf16 measured 0.62x on this CPU (fp32 28.5 ms, ...)"."""
        if self.reason == "set":
            return f"dtype {self.dtype} (set)"
        head = f"dtype {self.setting}: {self.dtype}"
        if self.reason == "measured":
            when = "cached measurement" if self.cached else "measured now"
            if self.not_cached:
                when += f", not cached: {self.not_cached}"
            return (f"{head}, bf16 measured {self.bf16_speedup:.2f}x on this CPU (fp32 {self.fp32_step_s * 1000:.1f} ms, "
                    f"bf16 {self.bf16_step_s * 1000:.1f} ms per training step of {self.shape}; {when})")
        if self.reason == "no native bf16":
            return f"{head}, this CPU has no native bf16 (not measured)"
        if self.reason == "cuda":
            return f"{head}, {'CUDA device with bf16' if self.dtype == 'bfloat16' else 'CUDA device without bf16'}"
        if self.reason == "checkpoint":
            return f"{head}, kept from the checkpoint (the precision the run started in)"
        return f"{head} ({self.reason})"

    def kept(self, dtype: str) -> "DtypeChoice":
        """The choice of a resumed run: the checkpoint's precision, whatever resolving says now."""
        return DtypeChoice(self.setting, dtype, "checkpoint")


def shape_text(cfg: "RunConfig") -> str:
    """The cache's key for a model shape: "4 x 128, 4 heads, batch 8 x 64"."""
    return f"{cfg.n_layer} x {cfg.n_embd}, {cfg.n_head} heads, batch {cfg.batch_size} x {cfg.block_size}"


def choose_dtype(setting: str, device: "str | torch.device", cfg: "RunConfig | None" = None, *,
                 threads: int | None = None, measure: Measure | None = None, cache_result: bool = True,
                 cache_file: Path | None = None, warn: Callable[[str], None] | None = None,
                 busy: Callable[[], str | None] | None = None) -> DtypeChoice:
    """Resolve `setting` for a run of `cfg` on `device`, measuring on a CPU when needed.

    A measurement (`measure`, by default `dtype_timing.time_training_steps` with `threads`)
    is looked up in the cache first and stored there after, unless `cache_result` is False
    (measured while other work shared the machine), `busy()` (asked just before measuring)
    says the machine is too loaded for a fair measurement (`machine_busy`), or the speed-up
    is within UNSURE_MARGIN of the threshold. An answer not cached serves this caller only.
    `warn` gets a damaged cache's one line.
    """
    if setting != "auto":
        return DtypeChoice(setting, setting, "set")
    kind = _device_type(device)
    if kind == "cuda":
        return DtypeChoice(setting, "bfloat16" if native_bf16(device) else "float32", "cuda")
    if not native_bf16(device):
        return DtypeChoice(setting, "float32", "no native bf16")
    if cfg is None:
        from .config import RunConfig

        cfg = RunConfig()
    shape = shape_text(cfg)
    machine = dtype_cache.machine_key(kind)
    warn = warn or _warn_stderr
    found = dtype_cache.read_timings(machine, shape, cache_file, warn)
    not_cached = ""
    if found is None:
        if measure is None:
            from .dtype_timing import time_training_steps as measure
        loaded = busy() if busy is not None else None
        fp32_s, bf16_s = measure(cfg, kind, threads)
        found = dtype_cache.StepTimings(fp32_s, bf16_s, threads)
        if cache_result:
            not_cached = loaded or unsure(fp32_s, bf16_s) or ""
            if not not_cached:
                dtype_cache.write_timings(machine, shape, found, cache_file, warn)
        cached = False
    else:
        cached = True
    return DtypeChoice(setting, choose_from_timings(found.fp32_s, found.bf16_s), "measured",
                       found.fp32_s, found.bf16_s, shape, cached, not_cached)


def unsure(fp32_step_s: float, bf16_step_s: float) -> str | None:
    """Why timings are too close to the threshold to keep ("1.12x is within 5% of the 1.10x
    threshold"), or None."""
    speedup = fp32_step_s / bf16_step_s
    if abs(speedup / BF16_MIN_SPEEDUP - 1) < UNSURE_MARGIN:
        return f"{speedup:.2f}x is within {UNSURE_MARGIN:.0%} of the {BF16_MIN_SPEEDUP:.2f}x threshold"
    return None


def machine_busy(load_1min: float | None = None, cores: int | None = None) -> str | None:
    """Why a measurement now would not be fair ("load 7.3 on 2 cores": the 1-minute load
    average above the cores this process may use, so other work shares them), or None.
    On a loaded 2-core machine a bf16 speed-up of 1.55x once measured as 0.87x (issue 12)."""
    if load_1min is None:
        try:
            load_1min = os.getloadavg()[0]
        except OSError:  # pragma: no cover - not on this platform
            return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"load {load_1min:.1f} on {cores} core{'' if cores == 1 else 's'}" if load_1min > cores else None


def choice_before_workers(choices: dict[tuple[str, str], DtypeChoice], cfg: "RunConfig", device: str, *,
                          cache_result: bool = True) -> DtypeChoice | None:
    """What dtype "auto" means for `cfg`'s shape on a CPU `device`, decided once per (shape,
    device) into `choices` by whoever starts the workers (the driver, `bench`): a measurement
    beside training workers would be slowed by them and cached wrong. None where the worker
    decides itself: a dtype set explicitly, or a GPU (bf16 where supported, no measuring)."""
    if cfg.dtype != "auto" or not device.startswith("cpu"):
        return None
    key = (shape_text(cfg), device)
    if key not in choices:
        choices[key] = choose_dtype("auto", device, cfg, cache_result=cache_result, busy=machine_busy)
    return choices[key]


def needs_measuring(cfg: "RunConfig", device: str) -> bool:
    """Whether deciding dtype "auto" for `cfg` on `device` would time training steps now (a
    CPU with native bf16 whose cache has no answer for the shape): then no worker may start
    before the decision. The same path as `choose_dtype`, with a measurement that only notes
    it was asked for (and nothing cached or warned)."""
    asked: list[str] = []

    def note(cfg: "RunConfig", device: str, threads: "int | None") -> tuple[float, float]:
        asked.append(device)
        return 1.0, 1.0

    choose_dtype(cfg.dtype, device, cfg, measure=note, cache_result=False, warn=lambda message: None)
    return bool(asked)


def choices_before_workers(configs: "Iterable[RunConfig]", devices: Iterable[str],
                           choices: dict[tuple[str, str], DtypeChoice] | None = None) -> dict[tuple[str, str], DtypeChoice]:
    """`choice_before_workers` for every configuration on every device, into `choices` (a new
    dict by default): what the driver's start-up and `bench` call before any worker exists."""
    out = {} if choices is None else choices
    targets = sorted(set(devices))
    for cfg in configs:
        for device in targets:
            choice_before_workers(out, cfg, device)
    return out


def resolve_dtype(setting: str, device: "str | torch.device", cfg: "RunConfig | None" = None,
                  threads: int | None = None) -> str:
    """The precision a run with dtype `setting` trains in on `device`: "float32" or "bfloat16".

    The one entry point for any process deciding for its own hardware (the driver, `bench`,
    a remote worker); `choose_dtype` gives the reason and timings as well."""
    return choose_dtype(setting, device, cfg, threads=threads).dtype


def _device_type(device: "str | torch.device") -> str:
    return getattr(device, "type", None) or str(device).partition(":")[0]


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
