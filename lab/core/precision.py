"""Which floating-point precision a run trains in when its dtype is "auto".

bf16 autocast only pays where the hardware multiplies bf16 matrices natively: on this
project's 2-core test machine (AMD EPYC with avx512_bf16) a 4-block training step ran 2.5x
faster in bf16 than in fp32 (benchmarks/results/sweep.md), and the final validation losses
agreed with fp32 within seed-to-seed noise. Without native support PyTorch emulates bf16 and
is slower than fp32, so "auto" falls back to float32 there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

#: CPU feature flags (Linux /proc/cpuinfo) that mean native bf16 matrix multiplies.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


def native_bf16(device: torch.device) -> bool:
    """True when `device` multiplies bf16 matrices natively (tensor cores, AVX512-BF16, AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The precision a run with setting `dtype` trains in on `device`: "float32" or "bfloat16"."""
    if dtype == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return dtype
