"""Run settings and the one rule set that checks them.

Every place that accepts settings (experiments.toml, the TUI forms, CLI options) checks them
with the functions here, so a rule and its message exist exactly once. The core imports
nothing from the rest of the lab, so this module lives in the core and the rest imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .precision import DtypeChoice

#: The four per-site dropout keys that the `dropout` shorthand expands into.
DROPOUT_SITES = ("embd_dropout", "attn_dropout", "attn_out_dropout", "mlp_dropout")

NORMS = ("stream", "pre")
SKIP_CONVENTIONS = ("paper", "inverted")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class FieldSpec:
    """What one setting is: its type, its allowed values, and a line of help."""

    name: str
    kind: str  # "int" | "float" | "bool" | "choice" | "str" | "skips"
    help: str
    minimum: float | None = None
    maximum: float | None = None
    max_inclusive: bool = True
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """The fully resolved settings of one training run.

    `skips` maps a skip depth (sub-layers spanned) to the dropout rate on that path, stored
    as a sorted tuple of pairs so the config is hashable and compares by value.
    """

    data: str = "tinyshakespeare"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 8
    bias: bool = False
    norm: str = "stream"
    skip_dropout: str = "paper"
    embd_dropout: float = 0.2
    attn_dropout: float = 0.2
    attn_out_dropout: float = 0.2
    mlp_dropout: float = 0.2
    skips: tuple[tuple[int, float], ...] = ((1, 0.0),)
    max_iters: int = 50000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    eval_interval: int = 250
    eval_iters: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    dtype: str = "auto"
    seed: int = 1337
    data_seed: int = 1337

    # -- derived views ------------------------------------------------------------------
    @property
    def n_sublayers(self) -> int:
        """Sub-layers L = 2 * n_layer (attention and MLP of each block)."""
        return 2 * self.n_layer

    @property
    def skip_map(self) -> dict[int, float]:
        return dict(self.skips)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready settings; skips become {"depth": rate} with string keys.

        Built field by field rather than with `dataclasses.asdict`, which deep-copies every
        value: this runs once or more per run, and a sweep has up to 100,000 of them."""
        d = {name: getattr(self, name) for name in _FIELD_NAMES}
        d["skips"] = {str(k): v for k, v in self.skips}
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a dict of already-validated settings (skips as a mapping)."""
        v = dict(values)
        if "dropout" in v:
            rate = v.pop("dropout")
            for site in DROPOUT_SITES:
                v.setdefault(site, rate)
        if "skips" in v:
            v["skips"] = normalise_skips(v["skips"])
        unknown = v.keys() - _FIELD_SET
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        for name in _FLOAT_FIELDS:
            if isinstance(v.get(name), int):
                v[name] = float(v[name])
        return cls(**v)

    @classmethod
    def stored_settings(cls, text: str) -> dict[str, Any]:
        """`from_dict(json.loads(text)).to_dict()` of settings as the run store keeps them,
        without building a RunConfig when they are complete and typed as `to_dict` wrote them
        (every run this version queued): an export of 100,000 runs reads them all, twice."""
        values = json.loads(text)
        if values.keys() == _FIELD_SET and set(map(type, map(values.__getitem__, _FLOAT_FIELDS))) == _FLOAT:
            skips = values["skips"]
            if set(map(type, skips.values())) <= _FLOAT and list(skips) == [str(d) for d in sorted(map(int, skips))]:
                return dict(zip(_FIELD_NAMES, map(values.__getitem__, _FIELD_NAMES)))
        return cls.from_dict(values).to_dict()

    def with_seed(self, seed: int) -> "RunConfig":
        """These settings with another seed: what a replicate is. A copy with one field set,
        because `dataclasses.replace` runs __init__ over every field again, and a grid with
        seeds makes up to 100,000 replicates."""
        twin = copy.copy(self)
        object.__setattr__(twin, "seed", seed)
        return twin

    def identity_hash(self) -> str:
        """Short stable hash of every setting: two runs with equal hashes train identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def group_key(self) -> tuple:
        """Settings that must agree for runs to train batched as one group (DESIGN.md s.2).

        Everything except the dropout rates, the skip rates and `seed`; the set of skip depths
        present is part of the key, their rates are not.
        """
        # Field by field (every value is a str, bool, int or float, all hashable): the driver
        # keys every queued run by this, up to 100,000 of them, whenever a worker goes idle.
        return tuple((name, getattr(self, name)) for name in _GROUP_FIELDS) + (
            ("skips", tuple(depth for depth, _ in self.skips)),)

    def group_text(self) -> str:
        """`group_key` as one line of text: equal texts, equal keys. The run store keeps it in
        its own column, so the driver groups a queue of 100,000 runs from a light read of
        (id, this text, checkpoint step) instead of parsing every run's settings."""
        return json.dumps(self.group_key(), separators=(",", ":"))


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig))
_FIELD_SET = frozenset(_FIELD_NAMES)
_GROUP_FIELDS = tuple(sorted(n for n in _FIELD_NAMES if n not in DROPOUT_SITES + ("seed", "skips")))
_FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.type == "float")
_FLOAT = {float}


def normalise_skips(skips: Any) -> tuple[tuple[int, float], ...]:
    """Mapping or pairs of depth -> rate as a sorted tuple of (int depth, float rate)."""
    items = skips.items() if isinstance(skips, dict) else skips
    return tuple(sorted((int(k), float(r)) for k, r in items))


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in [
        FieldSpec("data", "str", 'corpus: "tinyshakespeare" or a path to a UTF-8 text file'),
        FieldSpec("n_layer", "int", "transformer blocks (each is attention + MLP: 2 sub-layers)", 1, 256),
        FieldSpec("n_head", "int", "attention heads; must divide n_embd", 1, 1024),
        FieldSpec("n_embd", "int", "embedding width", 1, 65536),
        FieldSpec("block_size", "int", "context length in characters", 1, 65536),
        FieldSpec("batch_size", "int", "sequences per training step", 1, 65536),
        FieldSpec("bias", "bool", "biases in Linear and LayerNorm layers"),
        FieldSpec("norm", "choice", '"stream": the paper\'s code (skips carry normalised activations); "pre": standard pre-LN', choices=NORMS),
        FieldSpec("skip_dropout", "choice", '"paper": unscaled masks, eval scales by (1-r); "inverted": ordinary inverted dropout', choices=SKIP_CONVENTIONS),
        FieldSpec("embd_dropout", "float", "dropout on token + position embeddings", 0.0, 1.0, False),
        FieldSpec("attn_dropout", "float", "dropout on attention probabilities", 0.0, 1.0, False),
        FieldSpec("attn_out_dropout", "float", "dropout on the attention output projection", 0.0, 1.0, False),
        FieldSpec("mlp_dropout", "float", "dropout on the MLP output", 0.0, 1.0, False),
        FieldSpec("skips", "skips", "skip depth (sub-layers spanned) -> dropout rate on that residual path"),
        FieldSpec("max_iters", "int", "optimiser steps", 1, 10**9),
        FieldSpec("lr", "float", "peak learning rate", 0.0, None),
        FieldSpec("min_lr", "float", "learning rate at the end of the cosine decay", 0.0, None),
        FieldSpec("warmup_iters", "int", "linear warm-up steps (lr * it / warmup_iters)", 0, 10**9),
        FieldSpec("eval_interval", "int", "steps between evaluations", 1, 10**9),
        FieldSpec("eval_iters", "int", "batches per split in each evaluation", 1, 10**6),
        FieldSpec("weight_decay", "float", "AdamW weight decay on matrices and embeddings", 0.0, None),
        FieldSpec("grad_clip", "float", "per-configuration gradient-norm clip (0 disables)", 0.0, None),
        FieldSpec("beta1", "float", "AdamW beta1", 0.0, 1.0, False),
        FieldSpec("beta2", "float", "AdamW beta2", 0.0, 1.0, False),
        FieldSpec("dtype", "choice", '"auto": bf16 autocast where a measured training step is at least 10% faster in bf16 (a CUDA GPU with bf16: always), else fp32; or "float32" / "bfloat16"', choices=DTYPES),
        FieldSpec("seed", "int", "initialisation and dropout masks", 0, 2**63 - 1),
        FieldSpec("data_seed", "int", "training batches (shared by a group)", 0, 2**63 - 1),
    ]
}

#: Keys accepted in a settings table: every field plus the `dropout` shorthand.
SETTING_KEYS = tuple(FIELDS) + ("dropout",)

_DROPOUT_SPEC = FieldSpec("dropout", "float", "shorthand: sets embd_dropout, attn_dropout, attn_out_dropout and mlp_dropout", 0.0, 1.0, False)


def field_spec(name: str) -> FieldSpec | None:
    """The spec of a setting key, the `dropout` shorthand included."""
    if name == "dropout":
        return _DROPOUT_SPEC
    return FIELDS.get(name)


def _type_name(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "choice": "one of the listed strings", "skips": "a table of depth = rate"}[kind]


def _num(x: float) -> str:
    """A bound as written: integers in full (2**63 - 1 is not 9.22337e+18), others short."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range_text(spec: FieldSpec) -> str:
    lo = spec.minimum
    hi = spec.maximum
    if hi is None:
        return f">= {_num(lo)}"
    close = "]" if spec.max_inclusive else ")"
    return f"in [{_num(lo)}, {_num(hi)}{close}"


def check_value(name: str, value: Any) -> str | None:
    """Check one setting on its own. Returns a message (what is wrong and how to fix it) or None.

    Skip rates are checked here for range [0, 1]; whether 1 is allowed depends on the skip
    convention, which `check_config` decides.
    """
    spec = field_spec(name)
    if spec is None:
        return f"unknown setting {name!r}"
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {value!r}"
        return None
    if kind == "str":
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, got {value!r}"
        if "\x00" in value:
            return f"{name} must not contain NUL characters"
        return None
    if kind == "choice":
        if value not in spec.choices:
            opts = ", ".join(f'"{c}"' for c in spec.choices)
            return f"{name} must be one of {opts}, got {value!r}"
        return None
    if kind == "skips":
        if not isinstance(value, dict):
            return f"skips must be a table of depth = rate, e.g. {{ 1 = 0.025, 2 = 0.99 }}, got {value!r}"
        for depth, rate in value.items():
            d = depth
            if isinstance(d, str):
                if not (d.isascii() and d.isdigit()):  # "²".isdigit() is True, int("²") fails
                    return f"skip depth {depth!r} must be a positive integer (sub-layers spanned), e.g. 1, 2 or 4"
                d = int(d)
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                return f"skip depth {depth!r} must be a positive integer (sub-layers spanned), e.g. 1, 2 or 4"
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
                return f"skips.{depth} must be a number, got {rate!r}"
            if not 0.0 <= rate <= 1.0:
                return (f"skips.{depth} = {rate!r} is outside [0, 1]: use a rate from 0 up to 1 (1 only under "
                        f"skip_dropout = \"paper\", where it removes the path)")
        return None
    # numbers
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be {_type_name(kind)}, got {value!r}"
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} must be {_type_name(kind)}, got {value!r}"
    lo, hi = spec.minimum, spec.maximum
    if lo is not None and value < lo or (
        hi is not None and (value > hi or (not spec.max_inclusive and value >= hi))
    ):
        return f"{name} = {value!r} must be {_range_text(spec)}"
    return None


def value_from_text(name: str, text: str) -> Any:
    """A setting typed as text (a form field, a grid value list) as the value it means.

    `name` is a setting key, the `dropout` shorthand or "skips.N" (a rate). Numbers for int and
    float settings (an integer typed for a float setting becomes a float), true/false for bool,
    the text itself otherwise. Text that is not of the setting's kind comes back as the
    stripped text, so `check_value` reports it with its usual message.
    """
    spec = field_spec(name)
    kind = "float" if name.startswith("skips.") else spec.kind if spec else "str"
    text = text.strip()
    if kind == "bool":
        return {"true": True, "false": False}.get(text, text)
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            pass
    if kind in ("int", "float"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def check_config(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Check a complete, expanded settings dict. Returns (key, message) pairs, empty when valid.

    Per-key checks first; cross-key rules (n_embd divisible by n_head, skip depths within the
    sub-layer count, rate 1 only for paper skip paths, min_lr <= lr) only when their inputs
    are themselves valid, so one mistake gives one message.
    """
    problems: list[tuple[str, str]] = []
    bad: set[str] = set()
    for name, value in values.items():
        msg = check_value(name, value)
        if msg:
            problems.append((name, msg))
            bad.add(name)
    return problems + cross_key_problems(values, bad)


def cross_key_problems(values: dict[str, Any], bad: set[str] = frozenset()) -> list[tuple[str, str]]:
    """The cross-key half of `check_config`, for settings each already passed `check_value`
    (`bad`: keys that did not, whose rules are skipped). An experiments file checks every
    value once where it is written, so each of a grid's runs needs only these."""
    problems: list[tuple[str, str]] = []

    def ok(*names: str) -> bool:
        return all(n in values and n not in bad for n in names)

    if ok("n_embd", "n_head") and values["n_embd"] % values["n_head"]:
        problems.append(("n_embd", f"n_embd = {values['n_embd']} is not divisible by n_head = {values['n_head']}; pick a multiple of n_head"))
    if ok("skips", "n_layer"):
        L = 2 * values["n_layer"]
        for depth in values["skips"]:
            if int(depth) > L:
                problems.append((f"skips.{depth}", f"skip depth {depth} spans more than the {L} sub-layers of {values['n_layer']} blocks; use a depth <= {L} or more blocks"))
    if ok("skips", "skip_dropout") and values["skip_dropout"] == "inverted":
        for depth, rate in values["skips"].items():
            if rate >= 1.0:
                problems.append((f"skips.{depth}", f"skips.{depth} = 1 is only allowed with skip_dropout = \"paper\" (where it removes the path); use a rate below 1"))
    if ok("lr", "min_lr") and values["min_lr"] > values["lr"]:
        problems.append(("min_lr", f"min_lr = {values['min_lr']!r} is above lr = {values['lr']!r}; the cosine decay goes down to min_lr"))
    return problems


def default_values() -> dict[str, Any]:
    """The RunConfig defaults as a plain settings dict (skips as {depth: rate})."""
    default = RunConfig()
    d = {name: getattr(default, name) for name in _FIELD_NAMES}
    d["skips"] = dict(d["skips"])
    return d


# -- how to train (never what): options that do not change a run's identity, and the schedule --


#: Window-configurations per evaluation forward when TrainOptions.eval_batch_windows is None:
#: on a CPU small batches stay in cache; a GPU wants large ones (not measured: no GPU was lent).
EVAL_WINDOW_CONFIGS = {"cpu": 40, "cuda": 8192}


@dataclass
class TrainOptions:
    """How to train (never what): these choices do not change a run's identity."""

    device: str = "cpu"
    log_interval: int = 10  # steps between StepLogged events (losses are gathered then)
    # Windows per no-grad forward in evaluations; None: EVAL_WINDOW_CONFIGS[device] / N for a
    # group of N (measured best on CPU: 8 windows at N = 5, 32-40 at N = 1; larger batches
    # fall out of cache, 128 windows at 16 blocks was 1.7x slower than 8).
    eval_batch_windows: int | None = None
    # What dtype "auto" resolved to for this group on this device, decided by the driver before
    # its workers started (measuring while workers train would be slowed by them); None: the
    # trainer resolves it itself (lab.core.precision.choose_dtype).
    dtype_choice: "DtypeChoice | None" = None


def lr_at(cfg: RunConfig, it: int) -> float:
    """Linear warm-up (lr * it / warmup_iters, the authors' nanoGPT), then cosine to min_lr."""
    if it < cfg.warmup_iters or cfg.max_iters <= cfg.warmup_iters:
        return cfg.lr * it / cfg.warmup_iters
    if it >= cfg.max_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / (cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)
