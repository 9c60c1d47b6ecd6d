"""A plain nanoGPT-style baseline: one model, eager PyTorch, the authors' modified block.

This is what a user without dropres-lab runs, one configuration at a time: nanoGPT's GPT with
standard nn.Linear / nn.LayerNorm(bias=False) / nn.Embedding, a tied head, fused attention
with dropout, a GELU MLP, and the block of arXiv 2410.01019's released code, in which the
residual stream is replaced by its normalised value and every skip path carries it:

    u = ln_1(x);  x = attn(u) + S(u);  u = ln_2(x);  x = mlp(u) + S(u)

S is dropout on the identity path ("paper": unscaled mask kept with probability 1-r in
training, (1-r) * u in evaluation). Deeper skips (skip-k spans k sub-layers, DESIGN.md
section 2) are added the same way, so the baseline covers every paper series.

The training loop is nanoGPT's train.py reduced to one process: AdamW (weight decay on
>= 2-D parameters only), clip_grad_norm_, linear warm-up then cosine decay, random batches
drawn like nanoGPT's get_batch, and its evaluation schedule (eval_iters random batches per
split, every eval_interval steps, in eval mode). It shares nothing with lab.core except the
RunConfig (settings) and the Corpus (token ids), so it is an independent yardstick for the
core's speed (benchmarks/throughput.py) and, later, for whole sweeps.

Shapes in comments: B batch, T time, C n_embd, H heads, D = C // H, V vocabulary.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.core.config import RunConfig
from lab.core.data import Corpus


# -- the model ----------------------------------------------------------------------------------


class SkipDropout(nn.Module):
    """Dropout on an identity path with rate r, in the "paper" or the "inverted" convention."""

    def __init__(self, rate: float, convention: str):
        super().__init__()
        self.rate = rate
        self.convention = convention

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0:
            return s
        if self.convention == "inverted":
            return F.dropout(s, self.rate, self.training)
        keep = 1.0 - self.rate
        if not self.training:
            return s * keep
        return s * (torch.rand_like(s) < keep)  # unscaled mask


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.attn_out_dropout)
        self.n_head = cfg.n_head
        self.attn_dropout = cfg.attn_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()  # exact (erf)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.mlp_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Attention then MLP. The skips are added by GPT.forward, which sees every sub-layer."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def sublayers(self):
        return ((self.ln_1, self.attn), (self.ln_2, self.mlp))


class GPT(nn.Module):
    def __init__(self, cfg: RunConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.embd_dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        # skip-k adds S_k(s_{i+1-k}) to the output of sub-layer i when (i + 1) % k == 0
        self.skips = nn.ModuleDict({str(k): SkipDropout(r, cfg.skip_dropout) for k, r in cfg.skips})
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def n_params(self) -> int:
        """Trainable parameters, tied weights once, position embeddings included."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        stream = self.cfg.norm == "stream"
        sources = []  # s_j: the input of sub-layer j, normalised under norm = "stream"
        for block in self.transformer.h:
            for ln, f in block.sublayers():
                u = ln(x)
                sources.append(u if stream else x)
                x = f(u)
                i = len(sources)  # x is now h_i
                for k, skip in self.skips.items():
                    if i % int(k) == 0:
                        x = x + skip(sources[i - int(k)])
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.AdamW:
        """nanoGPT's: decay >= 2-D tensors (matrices, embeddings), not gains or biases."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


def build_baseline(cfg: RunConfig, vocab_size: int) -> GPT:
    """One baseline model for cfg, initialised from the global RNG (seed it first)."""
    return GPT(cfg, vocab_size)


@torch.no_grad()
def copy_from_core(model: GPT, decoder, index: int = 0) -> None:
    """Load configuration `index` of a lab.core Decoder into the baseline (for equivalence checks).

    The core stores Linear weights as [N, in, out]; nn.Linear wants [out, in].
    """
    core = {name: p[index] for name, p in decoder.named_parameters()}
    t = model.transformer
    t.wte.weight.copy_(core["wte"])
    t.wpe.weight.copy_(core["wpe"])
    for b, block in enumerate(t.h):
        for j, (ln, f) in enumerate(block.sublayers()):
            i = 2 * b + j
            ln.weight.copy_(core[f"sublayers.{i}.ln.weight"])
            if ln.bias is not None:
                ln.bias.copy_(core[f"sublayers.{i}.ln.bias"])
            for lin_name in ("c_attn", "c_proj") if j == 0 else ("c_fc", "c_proj"):
                lin = getattr(f, lin_name)
                lin.weight.copy_(core[f"sublayers.{i}.f.{lin_name}.weight"].t())
                if lin.bias is not None:
                    lin.bias.copy_(core[f"sublayers.{i}.f.{lin_name}.bias"])
    t.ln_f.weight.copy_(core["ln_f.weight"])
    if t.ln_f.bias is not None:
        t.ln_f.bias.copy_(core["ln_f.bias"])


# -- the training loop --------------------------------------------------------------------------


def get_lr(cfg: RunConfig, it: int) -> float:
    """nanoGPT (the authors' version): linear warm-up lr * it / warmup_iters, then cosine to min_lr."""
    if it < cfg.warmup_iters or cfg.max_iters <= cfg.warmup_iters:
        return cfg.lr * it / cfg.warmup_iters
    if it >= cfg.max_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / (cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch: batch_size random windows of block_size + 1 characters."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + block_size] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
    if device != "cpu":
        x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x, y


def autocast_for(cfg: RunConfig, device: str):
    """nanoGPT's dtype policy, whatever the config says: fp32 on CPU; on a GPU, bf16 autocast
    where supported (else fp16 there; the baseline uses bf16 or fp32 only)."""
    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def baseline_step(model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  lr: float, grad_clip: float, ctx=None) -> torch.Tensor:
    """One training step: set lr, forward, backward, clip, AdamW step. Returns the loss tensor."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with ctx or contextlib.nullcontext():
        _, loss = model(x, y)
    loss.backward()
    if grad_clip != 0.0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


class BaselineRun:
    """One baseline model with its optimiser and batch stream, ready to step (benchmarks reuse it).

    Training batches come from a generator seeded with cfg.data_seed and drawn exactly as the
    core draws them, so baseline and core see the same batches; evaluation windows come from
    their own generator.
    """

    def __init__(self, cfg: RunConfig, corpus: Corpus, device: str = "cpu"):
        self.cfg, self.corpus, self.device = cfg, corpus, device
        torch.manual_seed(cfg.seed)  # initialisation and dropout masks
        self.model = build_baseline(cfg, corpus.vocab_size).to(device)
        self.optimizer = self.model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                                        torch.device(device).type)
        self.data_gen = torch.Generator().manual_seed(cfg.data_seed)
        self.eval_gen = torch.Generator().manual_seed(cfg.data_seed + 1)
        self.ctx = autocast_for(cfg, device)
        self.iter_num = 0
        self.model.train()

    def step(self, lr: float | None = None) -> torch.Tensor:
        cfg = self.cfg
        x, y = get_batch(self.corpus.train, cfg.batch_size, cfg.block_size, self.data_gen, self.device)
        lr = get_lr(cfg, self.iter_num) if lr is None else lr
        loss = baseline_step(self.model, self.optimizer, x, y, lr, cfg.grad_clip, self.ctx)
        self.iter_num += 1
        return loss

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """nanoGPT's estimate_loss: the mean of eval_iters random batches per split, eval mode."""
        cfg = self.cfg
        self.model.eval()
        out = {}
        for split, data in (("train", self.corpus.train), ("val", self.corpus.val)):
            losses = torch.zeros(cfg.eval_iters)
            for k in range(cfg.eval_iters):
                x, y = get_batch(data, cfg.batch_size, cfg.block_size, self.eval_gen, self.device)
                with self.ctx:
                    _, loss = self.model(x, y)
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        self.model.train()
        return out


@torch.no_grad()
def exact_val_loss(model: GPT, corpus: Corpus, block_size: int, device: str = "cpu", windows: int = 32) -> float:
    """Validation loss with every position of the split predicted exactly once.

    Not something nanoGPT does: the sweep benchmark computes it after the timed loop, so the
    lab's and the baseline's final models can be compared without the sampling noise of 200
    random evaluation batches. Consecutive windows of block_size, then one last window for
    the positions they leave over.
    """
    model.eval()
    val, T = corpus.val, block_size
    targets = len(val) - 1
    starts = list(range(0, targets - T + 1, T))
    total = 0.0
    for i in range(0, len(starts), windows):
        chunk = starts[i:i + windows]
        x = torch.stack([val[s:s + T] for s in chunk]).to(device)
        y = torch.stack([val[s + 1:s + 1 + T] for s in chunk]).to(device)
        logits, _ = model(x, y)
        total += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
    rest = targets - (starts[-1] + T)
    if rest > 0:
        s = targets - T
        logits, _ = model(val[s:s + T].view(1, -1).to(device), val[s + 1:s + 1 + T].view(1, -1).to(device))
        total += F.cross_entropy(logits.float()[0, -rest:], val[s + 1 + T - rest:s + 1 + T].to(device), reduction="sum").item()
    model.train()
    return total / targets


def train_baseline(cfg: RunConfig, corpus: Corpus, iters: int | None = None, eval: bool = True,
                   device: str = "cpu", log_interval: int = 10, exact: bool = False,
                   init_from_core: bool = False) -> dict:
    """Train one configuration the way nanoGPT's train.py does; returns losses and wall time.

    `iters` training steps (default cfg.max_iters) on cfg's schedule. With `eval`, evaluations
    at step 0, every cfg.eval_interval steps and after the last step (nanoGPT evaluates at
    iter_num % eval_interval == 0; it also takes one extra step after its last evaluation,
    which is left out here so the step count equals the lab's). The loss is read to the host
    every `log_interval` steps, as nanoGPT's logging does.

    Returns {"steps", "train_loss", "val_loss" (last evaluation, or None without eval),
    "last_step_loss", "evals" ([step, train, val] list), "wall_s", "eval_s", "exact_val" (with
    `exact`, computed after the timed loop; else None)}. With `init_from_core` the model starts
    from the weights the lab would initialise cfg with (nanoGPT's scheme, the lab's draw), so
    a comparison with the lab differs only in dropout masks and dtype.
    """
    iters = cfg.max_iters if iters is None else iters
    run = BaselineRun(cfg, corpus, device)
    if init_from_core:  # the same initial weights as the lab's run of cfg (untimed)
        from lab.core.model import Decoder

        copy_from_core(run.model, Decoder([cfg], corpus.vocab_size), 0)
    evals: list[list[float]] = []
    eval_s = 0.0
    lossf = float("nan")

    def evaluate() -> None:
        nonlocal eval_s
        t = time.perf_counter()
        losses = run.estimate_loss()
        eval_s += time.perf_counter() - t
        evals.append([run.iter_num, losses["train"], losses["val"]])

    t0 = time.perf_counter()
    while run.iter_num < iters:
        if eval and run.iter_num % cfg.eval_interval == 0:
            evaluate()
        loss = run.step()
        if run.iter_num % log_interval == 0 or run.iter_num == iters:
            lossf = loss.item()
    if eval:
        evaluate()
    wall = time.perf_counter() - t0
    return {
        "exact_val": exact_val_loss(run.model, corpus, cfg.block_size, device) if exact else None,
        "steps": run.iter_num,
        "train_loss": evals[-1][1] if evals else None,
        "val_loss": evals[-1][2] if evals else None,
        "last_step_loss": lossf,
        "evals": evals,
        "wall_s": wall,
        "eval_s": eval_s,
    }


# -- self-check: `python benchmarks/baseline.py` ---------------------------------------------------


def check_against_core(n_layer: int = 2, steps: int = 30, corpus: Corpus | None = None) -> float:
    """Largest loss difference between the baseline and the core (N = 1) at zero dropout.

    Both start from the core's initial weights and see the same batches, so they must agree to
    float rounding; this is what makes the baseline a fair yardstick.
    """
    from lab.core.data import get_corpus
    from lab.core.train import GroupTrainer, TrainOptions, lr_at

    corpus = corpus or get_corpus()
    cfg = RunConfig.from_dict({"n_layer": n_layer, "dropout": 0.0, "skips": {1: 0.0, 2: 0.0}, "max_iters": 200,
                               "dtype": "float32"})
    trainer = GroupTrainer([cfg], ["check"], lambda event: None, TrainOptions(), None)
    trainer.setup(corpus)
    run = BaselineRun(cfg, corpus)
    copy_from_core(run.model, trainer.model, 0)
    worst = 0.0
    for _ in range(steps):
        lr = lr_at(cfg, trainer.step)
        worst = max(worst, abs(float(trainer.train_step(lr)[0]) - float(run.step(lr))))
    return worst


if __name__ == "__main__":
    for n_layer in (2, 4, 16):
        cfg = RunConfig.from_dict({"n_layer": n_layer})
        print(f"{n_layer:>2} blocks: {build_baseline(cfg, 65).n_params():,} parameters")
    print(f"max |core - baseline| training loss over 30 steps at zero dropout: {check_against_core():.2e}")
