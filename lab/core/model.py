"""The batched decoder of DESIGN.md section 2, readable top to bottom.

One model trains N configurations at once: every weight carries a leading configuration
dimension N (a Linear is `[N, in, out]`, applied with batched matmuls) and every dropout rate
is one number per configuration. The configurations share the input batch and nothing else:
each one's loss depends only on its own slice of the weights, so summing the N losses and
back-propagating once gives every configuration exactly the gradient it would get alone.
A single run is simply N = 1.

Shapes in comments: N configurations, B batch, T time, C n_embd, H heads, D = C // H,
V vocabulary, L = 2 * n_layer sub-layers. Activations flow as [N, B*T, C].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig


# -- dropout with one rate per configuration --------------------------------------------------


class Rates(nn.Module):
    """Dropout rates of one site, one per configuration, decided once for the life of a group.

    All rates zero means nothing is ever drawn, which keeps zero-dropout runs bit-identical
    however they are grouped. Otherwise masks come from `keep_mask`, which realises each keep
    probability to the nearest 1/65536 (a rate of exactly 0 keeps everything, exactly 1 drops
    everything); scales and evaluation use the exact 1 - rate.
    """

    def __init__(self, rates: list[float]):
        super().__init__()
        self.values = [float(r) for r in rates]
        keep = [1.0 - r for r in self.values]
        # keep element iff its 16 random bits (as int16) <= threshold: P = (threshold + 32769) / 65536
        levels = [round(k * 65536) if 0.0 < k < 1.0 else (65536 if k >= 1.0 else 0) for k in keep]
        thresholds = [min(max(lv - 32769, -32768), 32767) for lv in levels]
        self.register_buffer("keep", torch.tensor(keep), persistent=False)
        self.register_buffer("threshold", torch.tensor(thresholds, dtype=torch.int16), persistent=False)
        self.register_buffer("inverse", torch.tensor([1.0 / k if k > 0 else 0.0 for k in keep]), persistent=False)
        self.register_buffer("present", torch.tensor([1.0 if k > 0 else 0.0 for k in keep]), persistent=False)
        self.uniform = self.values[0] if len(set(self.values)) == 1 else None
        self.any = any(r > 0 for r in self.values)
        self.removes_all = any(k <= 0 for k in keep)  # some configuration has rate 1 (mask all 0)

    def per_config(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A per-configuration buffer shaped [N, 1, ...] to broadcast over x [N, ...]."""
        return values.view(-1, *([1] * (x.dim() - 1)))

    def keep_view(self, x: torch.Tensor) -> torch.Tensor:
        """Keep probabilities shaped [N, 1, ...] in x's dtype."""
        return self.per_config(self.keep, x).to(x.dtype)


def keep_mask(x: torch.Tensor, rates: Rates, factor: torch.Tensor | None) -> torch.Tensor:
    """A dropout mask for x [N, ...] in x's dtype: factor[n] where kept (1 if factor is None),
    0 where dropped.

    Why not F.dropout or `rand_like(x) < keep`: on CPU those draw one 32-bit random number per
    element and make a float of it, which took a quarter of a bf16 training step. Here one
    64-bit draw gives four 16-bit lanes, compared as int16 against a threshold per
    configuration; the comparison's bytes multiply the factor straight into x's dtype.
    """
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:n].view(x.shape)
    kept = (lanes <= rates.per_config(rates.threshold, x)).view(torch.uint8)
    if factor is None:
        return kept.to(x.dtype)
    factor = rates.per_config(factor, x).to(x.dtype)
    if x.dtype == torch.bfloat16:  # uint8 * bf16 is vectorised; uint8 * fp32 is 50x slower (torch 2.13 CPU)
        return kept * factor
    return kept.to(x.dtype).mul_(factor)


def dropout(x: torch.Tensor, rates: Rates, training: bool) -> torch.Tensor:
    """Inverted dropout on x [N, ...], per element, with each configuration's own rate."""
    if not training or not rates.any:
        return x
    return x * keep_mask(x, rates, rates.inverse)


def skip_path(s: torch.Tensor, rates: Rates, convention: str, training: bool) -> torch.Tensor:
    """S_k: dropout on an identity (skip) path, in the "paper" or the "inverted" convention.

    paper:    training keeps each element with probability 1-r, unscaled; evaluation (1-r)*s.
    inverted: training mask/(1-r); evaluation is the identity.
    """
    if not rates.any:
        return s
    if convention == "paper":
        if not training:
            return s * rates.keep_view(s)
        return s * keep_mask(s, rates, unscaled(rates))
    if not training:
        return s
    return s * keep_mask(s, rates, rates.inverse)


def unscaled(rates: Rates) -> torch.Tensor | None:
    """The paper convention's mask factor: 1 where kept (None, nothing to multiply), unless a
    configuration has rate 1 and must drop every element (then 1 or 0 per configuration)."""
    return rates.present if rates.removes_all else None


def add_skip(h: torch.Tensor, s: torch.Tensor, rates: Rates, convention: str, training: bool) -> torch.Tensor:
    """h + S_k(s), adding into h in place when a mask is drawn.

    `h.addcmul_(s, mask)` reads h, s and the mask once and writes h, where `h + s * mask` makes
    and reads back a temporary the size of the stream. In the paper convention the mask is 0
    or 1, so the sum is bit-for-bit the same; h is always a fresh sub-layer output that
    autograd has not saved. Without a mask (evaluation, rate 0) it is the plain sum.
    """
    if not training or not rates.any:
        return h + skip_path(s, rates, convention, training)
    factor = unscaled(rates) if convention == "paper" else rates.inverse
    return h.addcmul_(s, keep_mask(s, rates, factor))


# -- layers -------------------------------------------------------------------------------------


class BatchedLinear(nn.Module):
    """N independent Linear layers: weight [N, in, out], bias [N, out]."""

    def __init__(self, n: int, fan_in: int, fan_out: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(n, fan_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, M, in] -> [N, M, out]
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class BatchedLayerNorm(nn.Module):
    """N LayerNorms over the last dimension: gain [N, C], optional bias [N, C].

    Always normalise-then-scale, even at N = 1 where PyTorch's fused affine LayerNorm would
    do: the fused kernel rounds differently, and a run must compute the same numbers alone
    as in any group.
    """

    def __init__(self, n: int, dim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, dim))
        self.bias = nn.Parameter(torch.zeros(n, dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, M, C]
        y = F.layer_norm(x, x.shape[-1:], None, None, 1e-5) * self.weight.unsqueeze(1)
        return y if self.bias is None else y + self.bias.unsqueeze(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: RunConfig, n: int, attn_rates: Rates, out_rates: Rates):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = BatchedLinear(n, cfg.n_embd, 3 * cfg.n_embd, cfg.bias)
        self.c_proj = BatchedLinear(n, cfg.n_embd, cfg.n_embd, cfg.bias)
        self.attn_rates = attn_rates
        self.out_rates = out_rates

    def forward(self, u: torch.Tensor, B: int, T: int) -> torch.Tensor:
        N, _, C = u.shape
        H = self.n_head
        # one copy lays q, k and v out by head: [N, B*T, 3C] -> 3 x [N*B, H, T, D], each contiguous
        q, k, v = self.c_attn(u).view(N * B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).contiguous()
        rates = self.attn_rates
        dropping = self.training and rates.any
        if u.is_cuda and (not dropping or rates.uniform is not None):
            # GPU: fused attention (flash or memory-efficient kernels), with one group-wide rate
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=rates.uniform if dropping else 0.0, is_causal=True)
        else:
            # CPU, or a rate per configuration: explicit probabilities. On CPU this beats
            # PyTorch's flash kernel (measured 1.9x on a bf16 training step, 1.2x in bf16
            # evaluation) and lets keep_mask draw each configuration's attention mask.
            D = C // H
            causal = torch.full((T, T), float("-inf"), device=u.device).triu(1)
            att = torch.baddbmm(causal, q.reshape(-1, T, D), k.reshape(-1, T, D).transpose(1, 2), alpha=1.0 / math.sqrt(D))
            att = dropout(att.softmax(dim=-1).view(N, B * H, T, T), rates, self.training)
            y = torch.bmm(att.view(-1, T, T).to(v.dtype), v.reshape(-1, T, D)).view(N * B, H, T, D)
        y = y.transpose(1, 2).reshape(N, B * T, C)
        return dropout(self.c_proj(y), self.out_rates, self.training)


class MLP(nn.Module):
    def __init__(self, cfg: RunConfig, n: int, out_rates: Rates):
        super().__init__()
        self.c_fc = BatchedLinear(n, cfg.n_embd, 4 * cfg.n_embd, cfg.bias)
        self.c_proj = BatchedLinear(n, 4 * cfg.n_embd, cfg.n_embd, cfg.bias)
        self.out_rates = out_rates

    def forward(self, u: torch.Tensor, B: int, T: int) -> torch.Tensor:
        return dropout(self.c_proj(F.gelu(self.c_fc(u))), self.out_rates, self.training)


class SubLayer(nn.Module):
    """LN_i then f_i: attention when i is even, MLP when i is odd."""

    def __init__(self, f: nn.Module, ln: BatchedLayerNorm):
        super().__init__()
        self.ln = ln
        self.f = f


# -- the decoder ------------------------------------------------------------------------------


class Decoder(nn.Module):
    """Character-level decoder for N configurations that share every shape.

    h_0 = Dropout_embd(tok + pos);  u_i = LN_i(h_i);  s_j = u_j ("stream") or h_j ("pre");
    h_{i+1} = f_i(u_i) + sum_{k : (i+1) % k == 0} S_k(s_{i+1-k});  logits = LN_f(h_L) @ wte^T.
    """

    def __init__(self, configs: list[RunConfig], vocab_size: int):
        super().__init__()
        cfg = configs[0]
        n = len(configs)
        self.configs = list(configs)
        self.cfg = cfg
        self.vocab_size = vocab_size
        C, L = cfg.n_embd, cfg.n_sublayers

        def rates(site: str) -> Rates:
            return Rates([getattr(c, site) for c in configs])

        self.wte = nn.Parameter(torch.empty(n, vocab_size, C))  # tied with the output head
        self.wpe = nn.Parameter(torch.empty(n, cfg.block_size, C))
        self.embd_rates = rates("embd_dropout")
        attn, attn_out, mlp_out = rates("attn_dropout"), rates("attn_out_dropout"), rates("mlp_dropout")
        self.sublayers = nn.ModuleList()
        for i in range(L):
            f = CausalSelfAttention(cfg, n, attn, attn_out) if i % 2 == 0 else MLP(cfg, n, mlp_out)
            self.sublayers.append(SubLayer(f, BatchedLayerNorm(n, C, cfg.bias)))
        self.ln_f = BatchedLayerNorm(n, C, cfg.bias)
        # Skip paths: depth k -> rates; into[i+1] lists the depths that land after sub-layer i.
        depths = sorted(cfg.skip_map)
        self.skip_rates = nn.ModuleDict({str(k): Rates([c.skip_map[k] for c in configs]) for k in depths})
        self.skips_into = [[k for k in depths if (i + 1) % k == 0] for i in range(L)]
        self.register_buffer("_vocab_offsets", torch.arange(n) * vocab_size, persistent=False)
        self.init_weights([c.seed for c in configs])

    # -- initialisation: each configuration from its own seed, independent of its group --
    @torch.no_grad()
    def init_weights(self, seeds: list[int]) -> None:
        L = self.cfg.n_sublayers
        proj_std = 0.02 / math.sqrt(L)
        for n, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p[n].zero_()
                elif ".ln." in name or name.startswith("ln_f"):
                    p[n].fill_(1.0)
                else:
                    std = proj_std if name.endswith("c_proj.weight") else 0.02
                    p[n].copy_(torch.randn(p.shape[1:], generator=g) * std)

    @property
    def n_configs(self) -> int:
        return self.wte.shape[0]

    def n_params(self) -> int:
        """Trainable parameters of one configuration (tied weights once, positions included)."""
        return sum(p.numel() for p in self.parameters()) // self.n_configs

    def decay_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight matrices and embeddings ([N, a, b]) decay; gains and biases not."""
        params = list(self.parameters())
        return [
            {"params": [p for p in params if p.dim() >= 3], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 3], "weight_decay": 0.0},
        ]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx [B, T] token ids shared by all configurations -> logits [N, B, T, V]."""
        B, T = idx.shape
        N, C = self.n_configs, self.cfg.n_embd
        ids = idx.unsqueeze(0) + self._vocab_offsets.view(N, 1, 1)  # [N, B, T] into the stacked table
        tok = F.embedding(ids, self.wte.view(N * self.vocab_size, C))  # [N, B, T, C]
        h = dropout(tok + self.wpe[:, None, :T], self.embd_rates, self.training).view(N, B * T, C)
        stream = self.cfg.norm == "stream"
        sources: list[torch.Tensor] = []
        for i, layer in enumerate(self.sublayers):
            u = layer.ln(h)
            sources.append(u if stream else h)
            out = layer.f(u, B, T)
            for k in self.skips_into[i]:
                out = add_skip(out, sources[i + 1 - k], self.skip_rates[str(k)], self.cfg.skip_dropout, self.training)
            h = out
        h = self.ln_f(h)
        logits = torch.bmm(h, self.wte.transpose(1, 2))  # [N, B*T, V]
        return logits.view(N, B, T, self.vocab_size)


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position: logits [N, B, T, V], targets [B, T] -> [N, B, T] (fp32)."""
    N, B, T, V = logits.shape
    flat = F.cross_entropy(logits.float().reshape(N * B * T, V), targets.reshape(1, B * T).expand(N, -1).reshape(-1), reduction="none")
    return flat.view(N, B, T)


def config_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per configuration: [N]."""
    return token_losses(logits, targets).mean(dim=(1, 2))


@torch.no_grad()
def generate(model: Decoder, prompt: torch.Tensor, new_tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample continuations of prompt [T0] from configuration 0 of the model -> [T0 + new_tokens]."""
    model.eval()
    idx = prompt.view(1, -1)
    T = model.cfg.block_size
    for _ in range(new_tokens):
        logits = model(idx[:, -T:])[0, 0, -1].float()  # [V]
        if temperature <= 0:
            nxt = logits.argmax().view(1, 1)
        else:
            probs = F.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).view(1, 1).to(idx.device)
        idx = torch.cat([idx, nxt], dim=1)
    return idx[0]


# -- architecture, for `dropres-lab inspect` ----------------------------------------------------


@dataclass(frozen=True)
class SkipPath:
    depth: int
    source: int  # s_source: the input of sub-layer `source` (normalised under norm="stream")
    target: int  # added to h_target, the output of sub-layer target - 1
    rate: float


def skip_paths(cfg: RunConfig) -> list[SkipPath]:
    """Every skip path of a configuration, in the order the forward pass adds them."""
    L = cfg.n_sublayers
    rates = cfg.skip_map
    return [
        SkipPath(k, i + 1 - k, i + 1, rates[k])
        for i in range(L)
        for k in sorted(rates)
        if (i + 1) % k == 0
    ]


def count_params(cfg: RunConfig, vocab_size: int) -> int:
    """Trainable parameters of one configuration, without building the model."""
    C = cfg.n_embd
    ln = C * (2 if cfg.bias else 1)
    attn = C * 3 * C + C * C + ((3 * C + C) if cfg.bias else 0)
    mlp = C * 4 * C + 4 * C * C + ((4 * C + C) if cfg.bias else 0)
    per_block = 2 * ln + attn + mlp
    return vocab_size * C + cfg.block_size * C + cfg.n_layer * per_block + ln
