"""AdamW as one fused kernel call, without torch.optim's start-up cost.

`torch.optim.AdamW(fused=True)` runs `torch._fused_adamw_`, but the first optimiser a process
builds or steps imports `torch._dynamo` (for its compile guards), about 2 s of a worker's
start on a 2-core CPU: longer than the whole training of a short trial group. The lab never
compiles its optimiser, so `FusedAdamW` calls the same kernel with the same arguments and
keeps the same state (`step`, `exp_avg`, `exp_avg_sq` per parameter, `lr` in each param
group), so its updates are bit-identical to `torch.optim.AdamW(fused=True)` (tests/test_train.py)
and checkpoints keep their format.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class FusedAdamW:
    """Decoupled-weight-decay Adam over param groups, updated by `torch._fused_adamw_`.

    Only what the trainer uses: `param_groups` (dicts with "params", "lr", "betas",
    "weight_decay", "eps"), `state` (per parameter), `zero_grad(set_to_none=True)` and `step()`.
    """

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        self.param_groups: list[dict[str, Any]] = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update of every parameter that has a gradient (as torch's fused path:
        state created at the first step, the step counters advanced before the kernel)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:
                    self.state[p] = {
                        "step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], steps, lr=float(group["lr"]), beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                eps=group["eps"], amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
            )
