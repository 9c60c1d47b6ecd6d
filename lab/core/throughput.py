"""How close training comes to the machine's limit: model FLOPs against the matmul peak.

A training step's useful work is its matrix multiplies, so "how fast could this be" is
answered by the fastest square matmul the device does in the dtype in use, measured here
(CPUs differ by more than their flags say: bf16 is 2.7x fp32 on one Xeon with avx512_bf16
and half of it on another). `dropres-lab bench` and benchmarks/ report a group's achieved
FLOP/s as a fraction of that peak.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from .config import RunConfig
from .model import count_params


def train_flop_per_token(cfg: RunConfig, vocab_size: int) -> float:
    """Training FLOPs per token of one configuration: 6 per weight (forward 2, backward 4)
    plus causal attention computed in full, 12 x layers x block_size x n_embd (nanoGPT's
    estimate_mfu, PaLM appendix B). Position embeddings are a lookup, not a multiply."""
    weights = count_params(cfg, vocab_size) - cfg.block_size * cfg.n_embd
    return 6.0 * weights + 12.0 * cfg.n_layer * cfg.block_size * cfg.n_embd


def train_flop_per_step(cfg: RunConfig, vocab_size: int, n_configs: int = 1) -> float:
    """Training FLOPs of one optimiser step of a group of `n_configs` configurations."""
    return n_configs * cfg.batch_size * cfg.block_size * train_flop_per_token(cfg, vocab_size)


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 1024, repeats: int = 10,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """FLOP/s of the fastest of `repeats` square n x n matmuls in `dtype`, with this process's
    torch threads: the device's practical peak (about 0.5 s on a CPU core). `clock` may be
    time.process_time: per CPU-second of this process, which other load disturbs far less."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(2):
        a @ b
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        a @ b
        sync()
        best = min(best, clock() - t0)
    return 2 * n**3 / best


def native_matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 1024) -> float | None:
    """`matmul_peak`, or None for bf16 where `device` has no native bf16: emulated, it is no
    peak to compare with, and measuring it took 40 s at 1024^2 and over 7 minutes at 2048^2
    on a 2-core AVX2 EPYC."""
    from .precision import native_bf16

    if dtype == torch.bfloat16 and not native_bf16(device):
        return None
    return matmul_peak(dtype, device, n=n)
