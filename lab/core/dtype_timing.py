"""Time the model's own training step in fp32 and in bf16 autocast: what dtype "auto" decides by.

Peak matmul speeds do not predict a step (issue 12: bf16 matmuls at half the fp32 speed on
one Xeon, 2.7x faster on an EPYC, both with avx512_bf16), so the step itself is timed: the
real `GroupTrainer` (forward, backward, gradient clipping, fused AdamW, dropout masks) on one
configuration of the run's shape, with random tokens of Tiny Shakespeare's vocabulary size
so no corpus is read. Steps of the two precisions alternate, so load that comes and goes
slows both alike, and the fastest step of each counts. About two seconds in all.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig

#: Seconds of timed steps (both precisions together), after setup and one warm-up step each.
TIMED_BUDGET_S = 1.2
MIN_PAIRS = 2  # timed steps of each precision, at least
MAX_PAIRS = 20
VOCAB = 65  # Tiny Shakespeare's characters
TOKENS = 20_000


def time_training_steps(cfg: "RunConfig", device: str = "cpu", threads: int | None = None,
                        budget_s: float = TIMED_BUDGET_S) -> tuple[float, float]:
    """Fastest seconds per training step of one configuration shaped like `cfg` on `device`:
    (fp32, bf16 autocast), with `threads` torch threads (None: as set)."""
    import torch

    from .config import TrainOptions
    from .data import Corpus
    from .train import GroupTrainer

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ids = torch.randint(0, VOCAB, (TOKENS,), generator=torch.Generator().manual_seed(0))
        corpus = Corpus("<random tokens>", "", tuple(chr(33 + i) for i in range(VOCAB)), ids[: TOKENS * 9 // 10],
                        ids[TOKENS * 9 // 10:])
        trainers = []
        for dtype in ("float32", "bfloat16"):
            one = dataclasses.replace(cfg, dtype=dtype)
            trainer = GroupTrainer([one], ["dtype-timing"], lambda event: None, TrainOptions(device=device), None)
            trainer.setup(corpus)
            trainer.train_step(one.lr)  # warm-up: allocations, first-call costs
            trainers.append(trainer)
        sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
        best = [float("inf"), float("inf")]
        pairs, spent = 0, 0.0
        while pairs < MIN_PAIRS or (spent < budget_s and pairs < MAX_PAIRS):
            for i, trainer in enumerate(trainers):
                t = time.perf_counter()
                trainer.train_step(cfg.lr)
                sync()
                took = time.perf_counter() - t
                best[i] = min(best[i], took)
                spent += took
            pairs += 1
        return best[0], best[1]
    finally:
        torch.set_num_threads(before)
