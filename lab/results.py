"""The comparative results table: one implementation for every view that compares runs.

The headless runner's end-of-run table, `dropres-lab results` (table, CSV, JSON, Markdown) and
the TUI's results screen all show the same numbers, so they are computed here once, from
`RunRow`s read from the store, by pure functions (no store access, no printing):

* `result_rows(rows, replicates=False)` turns runs into `ResultRow`s: grouped by suite (suites
  in the order the rows first mention them), ranked inside each suite by best validation loss
  (runs with no finite best last), with the derived columns a comparison needs: the
  generalisation gap, the distance to the suite's best run, the distance to the published
  reference, and the settings that differ between the suite's runs.
* With `replicates=True`, the replicates of one run (same suite and base name, settings equal
  but for `seed`) become one row holding the mean, the sample standard deviation (n - 1) and
  the count of each loss: single evaluations scatter by several thousandths (DESIGN.md
  section 1), so a difference is only worth reading next to its spread.
* Statistics (`add_statistics`, per suite, with `lab.stats`): the 95 % Student-t interval of
  each aggregated loss; the comparable sets (rows equal in every setting the suite does not
  vary, see `copy_settings`, and in the dtype actually used), so a `--max-iters 1000` copy is
  never tested against the full runs; each row's test against its set's best row on exact
  val (Welch's, or paired where both rows have the same seeds); and whether the final val is
  within the suite's reproduction tolerance of the published reference. A single run gets
  "1 seed" and no interval or p-value rather than a misleading one.
* Renderers: `render_rich_tables` / `render_rich_table` (Rich), `to_csv`, `to_markdown`,
  `to_json`. They only format; every number comes from the `ResultRow`. A suite's claims
  are tested and rendered by `lab.claims`.

Why the reference is compared with the final (not the best) val loss: the paper's published
values are the validation loss at the last evaluation, so `delta_ref = final_val - reference`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lab.core.config import DROPOUT_SITES, RunConfig
from lab.formatting import fmt_comparison, fmt_duration, fmt_interval, fmt_loss, fmt_rate, status_style
from lab.stats import DEFAULT_TOLERANCE, Comparison, compare, mean_interval, vs_best_verdict
from lab.store import RunRow

#: Losses that replicates aggregate (mean ± std, n).
AGGREGATED = ("final_val", "best_val", "exact_val", "final_train")
#: The loss rows are tested on against their comparable set's best: over the whole validation
#: split, once, so it carries no evaluation-sampling noise of its own.
COMPARED = "exact_val"


@dataclass(frozen=True)
class Stat:
    """A loss over replicates: mean, sample standard deviation (None below 2 values), count,
    and the 95 % Student-t interval of the mean (None below 2 values; see `lab.stats`).

    Only finite values count (a diverged replicate has no final loss), so `n` can be smaller
    than the number of replicates in the row.
    """

    mean: float | None
    std: float | None
    n: int
    low: float | None = None
    high: float | None = None


@dataclass
class ResultRow:
    """One line of the comparative table: one run, or (with replicates) one aggregated run.

    Loss fields are None where there is no finite value. For an aggregated row they hold the
    means; `stats` holds mean/std/n of each loss in `AGGREGATED` and `n` the replicates merged.
    """

    suite: str
    name: str  # the run's name; for an aggregated row its base name (without "#seed")
    rank: int  # 1 = lowest best val in its suite
    status: str  # an aggregated row with mixed statuses reads e.g. "finished 2, running 1"
    step: int  # an aggregated row: the least advanced replicate's step
    max_iters: int
    final_val: float | None
    best_val: float | None
    final_train: float | None
    gap: float | None  # final_val - final_train: how far validation trails training
    delta_best: float | None  # best_val - the suite's lowest best_val (0 for the best run)
    reference: float | None  # published val loss at the last evaluation, if any
    delta_ref: float | None  # final_val - reference
    exact_val: float | None  # over the whole validation split, once, at the end
    wall_s: float | None
    tokens_per_s: float | None
    varied: dict[str, Any]  # settings that differ between the suite's rows, flattened (skips.N)
    config: dict[str, Any]  # fully resolved settings; an aggregated row has no "seed" here
    run_ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the runs merged into this row
    error: str | None = None
    n: int = 1  # runs merged into this row
    stats: dict[str, Stat] | None = None  # only for aggregated rows
    seeds: list[int] | None = None  # only for aggregated rows
    # -- statistics (see `add_statistics`) --
    base_name: str = ""  # the run's name without "#seed" (an aggregated row's name)
    dtype_used: str | None = None  # the dtype the run actually trained in (None: not started)
    values: dict[str, list[float | None]] = field(default_factory=dict)  # per replicate, by loss
    replicate_keys: list[tuple[int, int]] = field(default_factory=list)  # (seed, data_seed) per replicate
    comparable: int = 0  # the comparable set within its suite (1, 2, ...; see `comparable_sets`)
    vs_best: Comparison | None = None  # exact val minus that of its comparable set's best row
    verdict: str = ""  # "best", "worse", "n.s.", "1 seed", "no variance" (`lab.stats.vs_best_verdict`)
    tolerance: float = DEFAULT_TOLERANCE  # reproduction tolerance of |delta_ref|
    within_tolerance: bool | None = None  # |delta_ref| <= tolerance (None: no reference)

    @property
    def aggregated(self) -> bool:
        """Whether this row merges replicates (even a single one) and carries `stats`."""
        return self.stats is not None


# -- building rows -------------------------------------------------------------------------


def result_rows(rows: Iterable[RunRow], replicates: bool = False,
                tolerances: dict[str, float] | None = None) -> list[ResultRow]:
    """Runs -> ranked comparison rows, grouped by suite (see the module docstring), each with
    its statistics (`add_statistics`); `tolerances` maps a suite to its reproduction tolerance."""
    by_suite: dict[str, list[RunRow]] = {}
    for row in rows:
        by_suite.setdefault(row.suite, []).append(row)
    out: list[ResultRow] = []
    for suite, runs in by_suite.items():
        built = _aggregate(runs) if replicates else [single_row(r) for r in runs]
        ranked = _rank(built)
        add_statistics(ranked, (tolerances or {}).get(suite, DEFAULT_TOLERANCE))
        out.extend(ranked)
    return out


def single_row(row: RunRow, config: dict[str, Any] | None = None) -> ResultRow:
    """A run as one unaggregated row, before ranking (`place`) and statistics. `config`: its
    settings as a dict when the caller has them so (`row` then needs only the result fields of
    a `RunRow`, not its `RunConfig`: an export does not build 100,000 of them)."""
    config = row.config.to_dict() if config is None else config
    return ResultRow(
        suite=row.suite, name=row.name, rank=0, status=row.status, step=row.step,
        max_iters=row.max_iters, final_val=_num(row.final_val), best_val=_num(row.best_val),
        final_train=_num(row.final_train), gap=None, delta_best=None,
        reference=_num(row.reference), delta_ref=None, exact_val=_num(row.exact_val),
        wall_s=_num(row.wall_s), tokens_per_s=_num(row.tokens_per_s), varied={},
        config=config, run_ids=[row.run_id], names=[row.name], error=row.error,
        base_name=row.base_name or row.name, dtype_used=row.dtype,
        values={k: [_num(getattr(row, k))] for k in AGGREGATED},
        replicate_keys=[(config["seed"], config["data_seed"])],
    )


def _aggregate(runs: list[RunRow]) -> list[ResultRow]:
    """Merge runs that share suite, base name, every setting but `seed` (and `data_seed`: see
    `replicate_groups`) and the dtype they actually trained in.

    Settings other than the seed are part of the key so that, say, a `--max-iters 1000` copy
    of a replicate is never averaged with the full-length runs; the dtype actually used too
    ("auto" is bf16 on one machine and fp32 on another, and those are different experiments).
    """
    out = []
    for base, members in replicate_groups(runs):
        stats = {k: _stat([getattr(m, k) for m in members], interval=True) for k in AGGREGATED}
        config = members[0].config.to_dict()
        config.pop("seed")
        statuses: dict[str, int] = {}
        for m in members:
            statuses[m.status] = statuses.get(m.status, 0) + 1
        status = next(iter(statuses)) if len(statuses) == 1 else ", ".join(f"{s} {c}" for s, c in statuses.items())
        errors = [f"{m.name}: {m.error}" for m in members if m.error]
        out.append(ResultRow(
            suite=members[0].suite, name=base, rank=0, status=status,
            step=min(m.step for m in members), max_iters=members[0].max_iters,
            final_val=stats["final_val"].mean, best_val=stats["best_val"].mean,
            final_train=stats["final_train"].mean, gap=None, delta_best=None,
            reference=_num(next((m.reference for m in members if m.reference is not None), None)),
            delta_ref=None, exact_val=stats["exact_val"].mean,
            wall_s=_stat([m.wall_s for m in members]).mean,
            tokens_per_s=_stat([m.tokens_per_s for m in members]).mean,
            varied={}, config=config, run_ids=[m.run_id for m in members],
            names=[m.name for m in members], error="; ".join(errors) or None, n=len(members),
            stats=stats, seeds=[m.config.seed for m in members],
            base_name=base, dtype_used=next((m.dtype for m in members if m.dtype), None),
            values={k: [_num(getattr(m, k)) for m in members] for k in AGGREGATED},
            replicate_keys=[(m.config.seed, m.config.data_seed) for m in members],
        ))
    return out


def replicate_groups(runs: Sequence[RunRow]) -> list[tuple[str, list[RunRow]]]:
    """The replicate sets among one suite's runs, in first-mention order: (base name, runs).

    Runs are replicates of each other when base name and every setting but `seed` are equal;
    `data_seed` is left out too where the runs of that base name differ in it, which happens
    only with `data_seeds = [...]` replicates. Runs that trained in different dtypes are
    split; a run not started yet (no dtype) joins the first set of its key.
    """
    by_base_data: dict[str, set[int]] = {}
    for r in runs:
        by_base_data.setdefault(r.base_name or r.name, set()).add(r.config.data_seed)
    groups: dict[tuple[str, RunConfig, str | None], list[RunRow]] = {}
    first_dtype: dict[tuple[str, RunConfig], str | None] = {}  # (base, settings) -> the dtype of its first set
    for r in runs:
        base = r.base_name or r.name
        # The settings but the seed(s), as a RunConfig (hashable, equal field by field) rather
        # than as JSON: the end of a 100,000-run sweep encoded every run's settings for this.
        key = r.config.with_seed(0)
        if len(by_base_data[base]) > 1 and base != r.name:
            key = replace(key, data_seed=0)
        # Looked up, not searched for: after a stop, 100,000 runs not started would each scan every set.
        dtype = r.dtype or first_dtype.get((base, key))
        first_dtype.setdefault((base, key), dtype)
        groups.setdefault((base, key, dtype), []).append(r)
    return [(base, members) for (base, _, _), members in groups.items()]


def _rank(rows: list[ResultRow]) -> list[ResultRow]:
    """Sort one suite's rows by best val (missing last, then by name) and fill the derived columns.

    `Store.RANK_ORDER` is the same order in SQL, for exports that read a suite already ranked."""
    rows = sorted(rows, key=lambda r: (r.best_val is None, r.best_val if r.best_val is not None else 0.0, r.name))
    best = rows[0].best_val if rows else None
    varied = varied_settings([r.config for r in rows])
    for i, r in enumerate(rows, 1):
        place(r, i, best, varied)
    return rows


def place(row: ResultRow, rank: int, best: float | None, varied: Sequence[str]) -> None:
    """Fill a row's rank and the columns derived from its suite: the gap, the distance to the
    suite's `best` best val and to the reference, and the suite's `varied` settings."""
    row.rank = rank
    row.gap = _sub(row.final_val, row.final_train)
    row.delta_best = _sub(row.best_val, best)
    row.delta_ref = _sub(row.final_val, row.reference)
    row.varied = {k: setting_value(row.config, k) for k in varied}


# -- statistics: comparable sets, vs best, reference tolerance -----------------------------


def add_statistics(rows: list[ResultRow], tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Fill one suite's rows' statistics in place: the comparable set of each row, its test
    against that set's best row on exact val, and whether its final val is within the
    reproduction `tolerance` of the published reference."""
    keys = copy_settings(rows)
    sets = ComparableSets()
    for i, r in enumerate(rows):
        sets.add(comparable_key(r.config, keys), r.dtype_used, i, r.rank, _mean_of(r, COMPARED), r.values[COMPARED],
                 r.replicate_keys)
    sets.close()
    for i, r in enumerate(rows):
        sets.test(r, comparable_key(r.config, keys), i)
        within_tolerance(r, tolerance)


def within_tolerance(row: ResultRow, tolerance: float) -> None:
    """Record the suite's reproduction tolerance on a row and whether |delta_ref| is within it."""
    row.tolerance = tolerance
    row.within_tolerance = None if row.delta_ref is None else abs(row.delta_ref) <= tolerance + 1e-12


def copy_settings(rows: Sequence[ResultRow]) -> list[str]:
    """Settings (flattened) that differ between rows of ONE base name, seeds aside: what a copy
    of a run changed (`--max-iters 1000`, an edited default), as opposed to what the suite
    varies between its runs. Rows differing in these are never compared."""
    by_base: dict[str, SettingsSpread] = {}
    for r in rows:
        by_base.setdefault(r.base_name or r.name, SettingsSpread()).add(r.config)
    return copy_keys(spread.varied() for spread in by_base.values())


def copy_keys(varied_per_base: Iterable[Sequence[str]]) -> list[str]:
    """`copy_settings` from what varies within each base name, bases in first-seen order."""
    keys: list[str] = []
    for varied in varied_per_base:
        keys.extend(k for k in varied if k not in keys and k not in ("seed", "data_seed"))
    return keys


def comparable_key(config: dict[str, Any], keys: Sequence[str]) -> str:
    """What rows of one comparable set share: their values of the suite's `copy_settings`."""
    return json.dumps([setting_value(config, k) for k in keys], default=str) if keys else "[]"


@dataclass
class _Set:
    first: int  # the position of its first row in the ranked suite
    best: tuple[float, int] | None = None  # (score, rank) of its best scored row
    best_at: int = -1  # that row's position
    best_values: tuple[list, list] = ([], [])  # that row's values of COMPARED and replicate keys


class ComparableSets:
    """One suite's rows split into sets that may be compared: equal in every setting the suite
    does not vary (`copy_settings`, as `comparable_key`) and in the dtype actually used (a run
    not started yet joins the first set of its settings). Numbered in order of first
    appearance, so the set holding the first (best-ranked) row is set 1.

    Built a row at a time (`add`, in rank order, then `close`), keeping per set only its first
    position and its best row (lowest mean exact val, then rank), so an export can number and
    test 100,000 rows read twice from the store instead of holding them; `test` then fills a
    row's set and its comparison with that best."""

    def __init__(self) -> None:
        self._started: dict[tuple[str, str], _Set] = {}  # (settings, dtype) -> set, first seen first
        self._waiting: dict[str, _Set] = {}  # runs not started yet, by settings, until `close`
        self._joined: dict[str, _Set] = {}  # settings -> the set its runs not started joined
        self._numbers: dict[int, int] = {}  # id(set) -> its number

    def add(self, settings: str, dtype: str | None, at: int, rank: int, score: float | None,
            values: Sequence[float | None], keys: Sequence[tuple[int, int]]) -> None:
        """Count the row at position `at` of the ranked suite: its settings (`comparable_key`),
        dtype used, rank, score (mean exact val; None: none), and for the comparisons its
        exact vals and replicate keys (kept only while it is its set's best)."""
        if dtype is None:
            target = self._waiting.setdefault(settings, _Set(at))
        else:
            target = self._started.setdefault((settings, dtype), _Set(at))
        if score is not None and (target.best is None or (score, rank) < target.best):
            target.best, target.best_at, target.best_values = (score, rank), at, (list(values), list(keys))

    def close(self) -> None:
        """Runs not started join the first set of their settings, or make their own; then number."""
        for settings, waiting in self._waiting.items():
            target = next((s for (k, _), s in self._started.items() if k == settings), None)
            if target is None:
                self._joined[settings] = waiting
                continue
            self._joined[settings] = target
            target.first = min(target.first, waiting.first)
            if waiting.best is not None and (target.best is None or waiting.best < target.best):
                target.best, target.best_at, target.best_values = waiting.best, waiting.best_at, waiting.best_values
        every = list(self._started.values()) + [w for k, w in self._waiting.items() if self._joined[k] is w]
        self._numbers = {id(s): n for n, s in enumerate(sorted(every, key=lambda s: s.first), 1)}

    def test(self, row: ResultRow, settings: str, at: int) -> None:
        """Fill a row's set number and its test against the set's best on exact val (Welch's,
        or paired where both rows have the same seeds); the best row reads "best"."""
        found = self._joined[settings] if row.dtype_used is None else self._started[(settings, row.dtype_used)]
        row.comparable = self._numbers[id(found)]
        row.vs_best, row.verdict = None, ""
        if _mean_of(row, COMPARED) is None or found.best is None:
            return
        if at == found.best_at:
            row.verdict = vs_best_verdict(Comparison(0.0, None, None, None, None, 0, 0), is_best=True)
            return
        values, keys = found.best_values
        row.vs_best = compare(row.values[COMPARED], values, row.replicate_keys, keys)
        row.verdict = vs_best_verdict(row.vs_best)


def _mean_of(row: ResultRow, key: str) -> float | None:
    return row.stats[key].mean if row.stats is not None else getattr(row, key)


def setting_value(config: dict[str, Any], key: str) -> Any:
    """One flattened setting of a settings dict: "skips.N" is the rate on the depth-N path (None:
    no such path), "dropout" the rate at the four sites (which `varied_settings` names so only
    when every compared run uses one rate at all four)."""
    if key.startswith("skips."):
        return _flatten(config).get(key)
    return config.get(DROPOUT_SITES[0] if key == "dropout" else key)


def setting_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Every setting of `configs`, flattened, in the order settings are declared: each field,
    with `skips` spread into one "skips.N" per depth that any config has. This is what an
    export carries, so a table read elsewhere has every setting of every run."""
    spread = SettingsSpread()
    for config in configs:
        spread.add(config)
    return spread.keys()


def common_settings(configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The flattened settings every config has with the same value (a skip depth counts only
    when every config has that path at the same rate), in declared order: what compared runs
    share, listed once above a table whose columns are what differs."""
    if not configs:
        return {}
    flats = [_flatten(c) for c in configs]
    return {k: flats[0][k] for k in setting_keys(configs)
            if all(k in f and json.dumps(f[k]) == json.dumps(flats[0][k]) for f in flats)}


def varied_settings(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The settings (flattened: "skips.2", and "dropout" when the four sites move together)
    whose values differ between `configs`, in the order settings are declared.

    A skip depth present in some configs and absent in others differs (absent = no path).
    """
    spread = SettingsSpread()
    for config in configs:
        spread.add(config)
    return spread.varied()


class SettingsSpread:
    """What a set of settings dicts has and varies, taken in one at a time (`add`), so the
    100,000 runs of a suite are never held at once: `keys()` is `setting_keys` of every dict
    added and `varied()` their `varied_settings`. Keeps the first dict (flattened) and, per
    setting, whether some later dict differs from it there."""

    def __init__(self) -> None:
        self.count = 0
        self._first: dict[str, Any] = {}
        self._seen: dict[str, None] = {}  # every flattened setting, first seen first
        self._same: set[str] = set()  # settings no dict has differed in so far
        self._differ: set[str] = set()
        self._one_rate = True  # every dict has one rate at the four dropout sites
        self._rates_differ = False  # ... and that rate differs between them

    def add(self, config: dict[str, Any]) -> None:
        flat = _flatten(config)
        self.count += 1
        rate = flat.get(DROPOUT_SITES[0])
        if self._one_rate and len({flat.get(s) for s in DROPOUT_SITES}) != 1:
            self._one_rate = False
        if self.count == 1:
            self._first = flat
            self._seen = dict.fromkeys(flat)
            self._same = set(flat)
            return
        first = self._first
        if not self._rates_differ and _differs(rate, first.get(DROPOUT_SITES[0])):
            self._rates_differ = True
        if flat.keys() != self._seen.keys():
            for k in flat:
                if k not in self._seen:  # absent from every dict so far: differs unless None here too
                    self._seen[k] = None
                    self._same.add(k)
        differ = []
        for k in self._same:  # inlined `_differs`: this runs for every setting of every run
            a, b = flat.get(k), first.get(k)
            if (a != b) if type(a) is type(b) and type(a) in _SCALARS else _same(a) != _same(b):
                differ.append(k)
        if differ:
            self._same.difference_update(differ)
            self._differ.update(differ)

    def keys(self) -> list[str]:
        """`setting_keys` of the dicts added."""
        return sorted(self._seen, key=_setting_order)

    def varied(self) -> list[str]:
        """`varied_settings` of the dicts added."""
        if self.count < 2:
            return []
        keys, differ = list(self._seen), self._differ
        if self._one_rate:  # one "dropout" column instead of four
            keys = [k for k in keys if k not in DROPOUT_SITES] + ["dropout"]
            differ = differ | ({"dropout"} if self._rates_differ else set())
        keys.sort(key=_setting_order)
        return [k for k in keys if k in differ]


#: Types whose values are the same setting exactly when they are equal (and of one type).
_SCALARS = (str, int, float, bool, type(None))


def _differs(a: Any, b: Any) -> bool:
    """Whether two settings values are different settings (`_same`)."""
    if type(a) is type(b) and type(a) in _SCALARS:
        return a != b
    return _same(a) != _same(b)


def _same(value: Any) -> Any:
    """What two settings values must share to be the same setting: type and value, as their
    JSON would (1 is not 1.0, true is not 1), without encoding each of 100,000 runs' values."""
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True)
    return (type(value), value)


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A settings dict with `skips` spread into one "skips.N" key per depth."""
    flat = {k: v for k, v in config.items() if k != "skips"}
    for depth, rate in sorted((config.get("skips") or {}).items(), key=lambda kv: int(kv[0])):
        flat[f"skips.{int(depth)}"] = rate
    return flat


_ORDER = ["data", "n_layer", "n_head", "n_embd", "block_size", "batch_size", "bias", "norm", "skip_dropout",
          "dropout", *DROPOUT_SITES, "skips", "max_iters", "lr", "min_lr", "warmup_iters", "eval_interval",
          "eval_iters", "weight_decay", "grad_clip", "beta1", "beta2", "dtype", "seed", "data_seed"]


def _setting_order(key: str) -> tuple[int, int]:
    if key.startswith("skips."):
        return (_ORDER.index("skips"), int(key.split(".", 1)[1]))
    return (_ORDER.index(key) if key in _ORDER else len(_ORDER), 0)


def _num(x: Any) -> float | None:
    """A finite float or None (NaN and inf are "no value" in every view)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _sub(a: float | None, b: float | None) -> float | None:
    """a - b, rounded to 12 decimals so exports show 0.2, not 0.19999999999999996."""
    return None if a is None or b is None else round(a - b, 12)


def _stat(values: Iterable[Any], interval: bool = False) -> Stat:
    xs = [v for v in (_num(x) for x in values) if v is not None]
    if not xs:
        return Stat(None, None, 0)
    if interval:
        m = mean_interval(xs)
        return Stat(m.mean, m.std, m.n, m.low, m.high)
    return Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


# -- formatting helpers (the shared spellings are in lab/formatting.py) --------------------


def fmt_delta(x: float | None) -> str:
    """Signed differences to 4 decimals ("+0.0123", "-0.0040"); empty for no value."""
    return "" if x is None else f"{x:+.4f}"


def fmt_setting(value: Any) -> str:
    """A setting as it appears in run names (0.0 -> "0", 1e-05 -> "0.00001"); empty for absent."""
    if value is None:
        return ""
    from lab.experiments import format_value  # one spelling of values across names and tables

    return format_value(value)


def _loss_cell(row: ResultRow, key: str) -> str:
    """A loss cell: the value, or for an aggregate "mean ± std" (plus "(n=k)" when fewer
    replicates than the row's n have a finite value)."""
    value = getattr(row, key)
    if value is None or row.stats is None:
        return fmt_loss(value)
    st = row.stats[key]
    text = fmt_loss(st.mean) + (f" ± {fmt_loss(st.std)}" if st.std is not None else "")
    return text + (f" (n={st.n})" if st.n != row.n else "")


def vs_best_cell(row: ResultRow) -> str:
    """The row's test against its comparable set's best, compactly: "best", or
    "+0.0041 [-0.0012, +0.0094] p=0.12 n.s." (", paired" when the paired test was used), or the
    difference with the reason there is no test ("+0.0100 1 seed", "-0.1000 no variance")."""
    c = row.vs_best
    if c is None:
        return row.verdict
    text = fmt_comparison(c.diff, c.low, c.high, c.p, row.verdict)
    return text + (" paired" if c.test == "paired" else "")


def interval_cell(row: ResultRow, key: str = COMPARED) -> str:
    """The 95 % interval of a loss's mean, "[1.5480, 1.5612]"; empty for a single seed."""
    st = row.stats[key] if row.stats is not None else None
    return "" if st is None else fmt_interval(st.low, st.high, signed=False)


def reference_cell(row: ResultRow) -> str:
    """Final val minus the published reference, with ✓ inside the tolerance and ✗ outside."""
    if row.delta_ref is None:
        return ""
    return f"{fmt_delta(row.delta_ref)} {'✓' if row.within_tolerance else '✗'}"


def table_note(rows: Sequence[ResultRow]) -> str:
    """What the statistics columns mean, in one line under a table: the interval, the test,
    the tolerance behind ✓/✗ (empty when no row has any of them)."""
    parts = []
    if any(interval_cell(r) for r in rows):
        parts.append("95% CI: Student t over seeds")
    if any(r.vs_best is not None for r in rows):
        parts.append("vs best: exact val minus the best comparable row's, Welch's t-test (paired where seeds match)")
    tolerances = sorted({r.tolerance for r in rows if r.delta_ref is not None})
    if tolerances:
        parts.append(f"Δ ref ✓: within ±{'/'.join(fmt_setting(t) for t in tolerances)} of the reference")
    return "; ".join(parts)


def _by_suite(rows: Sequence[ResultRow]) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        out.setdefault(r.suite, []).append(r)
    return out


@dataclass(frozen=True)
class Column:
    """One display column: its header, how a row's cell reads, and its justification."""

    header: str
    cell: Callable[[ResultRow], str]
    justify: str = "right"


def columns(rows: Sequence[ResultRow], with_suite: bool = False) -> list[Column]:
    """The display columns (header, cell text, justification), shared by the Rich table,
    Markdown and the TUI's results screen, so every view shows the same cells.

    The settings columns are those that differ between `rows` (all of them, so across suites
    too: runs of two suites can differ in settings neither suite varies), each cell read from
    the row's own settings, so no cell is blank where its run has a value. Reference columns
    appear only when some row has a reference, `n` only for aggregates.
    """
    cols = [Column("suite", lambda r: r.suite, "left")] if with_suite else []
    cols += [Column("#", lambda r: str(r.rank)), Column("run", lambda r: r.name, "left")]
    cols += [Column(k, lambda r, k=k: fmt_setting(setting_value(r.config, k)))
             for k in varied_settings([r.config for r in rows])]
    cols += [
        Column("status", lambda r: r.status, "left"),
        Column("step", lambda r: f"{r.step}/{r.max_iters}"),
    ]
    if any(r.aggregated for r in rows):
        cols.append(Column("n", lambda r: str(r.n)))
    cols += [
        Column("best val", lambda r: _loss_cell(r, "best_val")),
        Column("Δ best", lambda r: fmt_delta(r.delta_best)),
        Column("final val", lambda r: _loss_cell(r, "final_val")),
        Column("final train", lambda r: _loss_cell(r, "final_train")),
        Column("gap", lambda r: fmt_delta(r.gap)),
        Column("exact val", lambda r: _loss_cell(r, "exact_val")),
    ]
    cols += statistics_columns(rows)
    if any(r.reference is not None for r in rows):
        cols += [
            Column("reference", lambda r: fmt_loss(r.reference)),
            Column("Δ ref", reference_cell),
        ]
    cols += [
        Column("tok/s", lambda r: fmt_rate(r.tokens_per_s)),
        Column("wall", lambda r: fmt_duration(r.wall_s)),
    ]
    return cols


def statistics_columns(rows: Sequence[ResultRow]) -> list[Column]:
    """The statistics columns: the comparable set (only when a suite has several), exact
    val's 95 % interval (only when some row has one) and the test against the set's best."""
    cols = []
    if any(r.comparable > 1 for r in rows):
        cols.append(Column("set", lambda r: str(r.comparable) if r.comparable else ""))
    if any(interval_cell(r) for r in rows):
        cols.append(Column("exact 95% CI", interval_cell))
    if any(r.verdict for r in rows):
        cols.append(Column("vs best (exact val)", vs_best_cell, "left"))
    return cols


# -- Rich ----------------------------------------------------------------------------------


def render_rich_table(rows: Sequence[ResultRow], title: str | None = None) -> Table:
    """One Rich table of `rows`. Rows of one suite get the suite as title (unless `title` is
    given); rows of several suites get a suite column and a section line between suites.

    Varied settings are columns, losses have 4 decimals, aggregates read "mean ± std".
    """
    suites = list(_by_suite(rows))
    with_suite = len(suites) > 1
    if title is None:
        title = suites[0] if len(suites) == 1 else "results"
    note = table_note(rows)
    table = Table(title=title, title_justify="left", title_style="bold", caption=note or None,
                  caption_justify="left")
    cols = columns(rows, with_suite)
    for c in cols:
        table.add_column(c.header, justify=c.justify, no_wrap=c.header in ("run", "best val", "final val"))
    previous = None
    for r in rows:
        if with_suite and previous is not None and r.suite != previous:
            table.add_section()
        previous = r.suite
        cells: list[Any] = [c.cell(r) for c in cols]
        i = [c.header for c in cols].index("status")
        cells[i] = Text(cells[i], style=status_style(r.status))
        table.add_row(*cells, style="bold" if r.rank == 1 and r.best_val is not None else None)
    return table


def render_rich_tables(rows: Sequence[ResultRow], titles: dict[str, str] | None = None) -> list[Table]:
    """One table per suite, titled with the suite's name (or `titles[suite]`, e.g. with its
    description): each suite has its own varied-settings columns, so separate tables read best."""
    titles = titles or {}
    return [render_rich_table(rs, titles.get(s, s)) for s, rs in _by_suite(rows).items()]


def print_tables(tables: Sequence[Table], console: Console) -> None:
    """Print Rich tables whole: on a terminal at its width; elsewhere (pipe, file, CI) as wide
    as the widest table needs, so no column is squeezed into a default 80 characters."""
    if not tables:
        return
    if not console.is_terminal:
        wide = console.options.update_width(1000)
        width = min(1000, max(console.measure(t, options=wide).maximum for t in tables))
        console = Console(file=console.file, width=max(80, width), highlight=False,
                          no_color=console.no_color)
    for i, table in enumerate(tables):
        if i:
            console.print()
        console.print(table)


# -- CSV, Markdown, JSON --------------------------------------------------------------------

_CSV_FIELDS = ["suite", "rank", "name", "status", "step", "max_iters", "final_val", "best_val",
               "final_train", "gap", "delta_best", "exact_val", "reference", "delta_ref", "wall_s",
               "tokens_per_s"]
#: The statistics every export carries (see `statistics_fields`).
STAT_FIELDS = ["n", "ci_low", "ci_high", "comparable_set", "delta_vs_best", "vs_best_low", "vs_best_high",
               "p_vs_best", "test", "verdict", "tolerance", "within_tolerance", "dtype_used"]


def statistics_fields(row: ResultRow) -> dict[str, Any]:
    """A row's statistics as export fields: n (replicates), ci_low/ci_high (95 % interval of
    mean exact val; none for one seed), the comparable set, the difference to its best with
    its interval, p_vs_best and the test used ("welch" or "paired"; empty with no test), the
    verdict, the tolerance and whether |final val - reference| is within it."""
    st = row.stats[COMPARED] if row.stats is not None else None
    c = row.vs_best
    return {
        "n": row.n, "ci_low": st.low if st else None, "ci_high": st.high if st else None,
        "comparable_set": row.comparable or None,
        "delta_vs_best": c.diff if c else (0.0 if row.verdict == "best" else None),
        "vs_best_low": c.low if c else None, "vs_best_high": c.high if c else None,
        "p_vs_best": c.p if c else None, "test": c.test if c else None, "verdict": row.verdict or None,
        "tolerance": row.tolerance, "within_tolerance": row.within_tolerance, "dtype_used": row.dtype_used,
    }


def to_csv(rows: Sequence[ResultRow]) -> str:
    """CSV with full-precision numbers (empty for no value) and every setting of every run: one
    column per RunConfig field, the skips as one column per depth present ("skips.1", ...;
    empty where a run has no such path). An export is read elsewhere, so it carries all of
    them, not only those a suite varies.

    Aggregated rows add n, the replicate seeds (and have no `seed` column), and
    `<loss>_std` / `<loss>_n` columns.
    """
    aggregated = any(r.aggregated for r in rows)
    header, settings = csv_header(aggregated, setting_keys(r.config for r in rows))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(csv_row(r, aggregated, settings) for r in rows)
    return buf.getvalue()


def csv_header(aggregated: bool, every_setting: Sequence[str]) -> tuple[list[str], list[str]]:
    """`to_csv`'s header, and the settings columns in it, for rows with `every_setting`
    (`setting_keys`): known before the rows, so an export can write them as they are read."""
    header = list(_CSV_FIELDS) + STAT_FIELDS
    if aggregated:
        header += ["seeds"] + [f"{k}_{s}" for k in AGGREGATED for s in ("std", "n", "ci_low", "ci_high")]
    settings = [k for k in every_setting if k not in header]
    return header + settings + ["run_ids"], settings


def csv_row(r: ResultRow, aggregated: bool, settings: Sequence[str]) -> list[Any]:
    """One line of `to_csv` (see `csv_header`)."""
    line = [_csv(getattr(r, k)) for k in _CSV_FIELDS]
    line += [_csv(v) for v in statistics_fields(r).values()]
    if aggregated:
        line += [" ".join(str(s) for s in r.seeds or [])]
        for k in AGGREGATED:
            st = r.stats[k] if r.stats else None
            line += [_csv(st.std if st else None), st.n if st else "", _csv(st.low if st else None),
                     _csv(st.high if st else None)]
    line += [_csv(setting_value(r.config, k)) for k in settings]
    line.append(" ".join(r.run_ids))
    return line


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def to_markdown(rows: Sequence[ResultRow], titles: dict[str, str] | None = None) -> str:
    """GitHub-flavoured Markdown: a "### suite" heading and a pipe table per suite."""
    titles = titles or {}
    parts = []
    for suite, rs in _by_suite(rows).items():
        cols = columns(rs, with_suite=False)
        lines = [f"### {_md(titles.get(suite, suite))}", ""]
        lines.append("| " + " | ".join(_md(c.header) for c in cols) + " |")
        lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in cols) + "|")
        for r in rs:
            lines.append("| " + " | ".join(_md(c.cell(r)) for c in cols) + " |")
        note = table_note(rs)
        parts.append("\n".join(lines + ([f"\n{note}."] if note else [])) + "\n")
    return "\n".join(parts)


def _md(text: str) -> str:
    """Escape what would break a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def row_to_dict(row: ResultRow) -> dict[str, Any]:
    """A JSON-ready dict: every column, the statistics (`statistics_fields`), the varied
    settings, the full settings; non-finite numbers as None. Aggregated rows add seeds, names
    and `<loss>_std` / `<loss>_n` / `<loss>_ci_low` / `<loss>_ci_high`."""
    return _json_safe(_row_fields(row))


def _row_fields(row: ResultRow) -> dict[str, Any]:
    """`row_to_dict` before non-finite numbers become None."""
    d: dict[str, Any] = {
        "suite": row.suite, "name": row.name, "rank": row.rank, "status": row.status,
        "step": row.step, "max_iters": row.max_iters, "final_val": row.final_val,
        "best_val": row.best_val, "final_train": row.final_train, "exact_val": row.exact_val,
        "gap": row.gap, "delta_best": row.delta_best, "reference": row.reference,
        "delta_ref": row.delta_ref, "wall_s": row.wall_s, "tokens_per_s": row.tokens_per_s,
        "error": row.error, "varied": dict(row.varied), "config": dict(row.config),
    }
    d.update(statistics_fields(row))
    if row.aggregated:
        d["seeds"] = list(row.seeds or [])
        d["names"] = list(row.names)
        d["run_ids"] = list(row.run_ids)
        for k, st in (row.stats or {}).items():
            d[f"{k}_std"] = st.std
            d[f"{k}_n"] = st.n
            d[f"{k}_ci_low"] = st.low
            d[f"{k}_ci_high"] = st.high
    else:
        d["run_id"] = row.run_ids[0] if row.run_ids else None
    return d


def to_json(rows: Sequence[ResultRow]) -> str:
    """A JSON list of `row_to_dict` objects (strict JSON: NaN and inf are written as null)."""
    return json.dumps([row_to_dict(r) for r in rows], indent=2, allow_nan=False) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


FORMATS = ("table", "csv", "json", "markdown")


def render_text(rows: Sequence[ResultRow], fmt: str, titles: dict[str, str] | None = None) -> str:
    """The csv, json or markdown text of `rows` (tables are Rich renderables; see above)."""
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "json":
        return to_json(rows)
    if fmt == "markdown":
        return to_markdown(rows, titles)
    raise ValueError(f"no text format {fmt!r}; use one of csv, json, markdown")


# -- at scale: the best rows of each suite, and exports written as they are made ------------

#: Rows per suite that the `results` table and the headless end-of-run table show by default;
#: `--all` shows every row. A 10,000-run table is read by no one and takes a minute to print.
TOP_PER_SUITE = 25


def best_rows(rows: Sequence[ResultRow], limit: int = TOP_PER_SUITE) -> tuple[list[ResultRow], dict[str, int]]:
    """Ranked result rows (statistics computed over all of them) cut to the best `limit` of
    each suite, and how many rows each suite had: what a table shows before `--all`."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.suite] = totals.get(r.suite, 0) + 1
    return [r for r in rows if r.rank <= limit], totals


def render_best_tables(rows: Sequence[ResultRow], totals: dict[str, int], titles: dict[str, str] | None = None,
                       more_hint: str = "--all shows every run") -> list[Table]:
    """`render_rich_tables` of the best rows of each suite, each table saying under it how many
    runs of its suite are not shown (`totals`: runs per suite in all)."""
    tables = render_rich_tables(rows, titles)
    for table, (suite, shown) in zip(tables, _by_suite(rows).items()):
        hidden = totals.get(suite, len(shown)) - len(shown)
        if hidden > 0:
            table.caption = f"the best {len(shown):,} of {totals[suite]:,} runs: {hidden:,} more ({more_hint})"
            table.caption_justify = "left"
    return tables


def stream_text(suites: Iterable[Sequence[ResultRow]], fmt: str, write: Callable[[str], Any]) -> None:
    """Write the JSON export of `suites` (each suite's ranked rows, as `result_rows` makes
    them) run by run, one line each, as each suite is read, instead of one string of
    everything: the same JSON as `to_json` of all the rows. (CSV: `csv_lines`.)"""
    if fmt == "json":
        first = True
        for rows in suites:
            for r in rows:
                write(("[\n" if first else ",\n") + _indented(r))
                first = False
        write("[]\n" if first else "\n]\n")
        return
    raise ValueError(f"no streamed format {fmt!r}; write CSV with csv_lines")


def _indented(row: ResultRow) -> str:
    """One object of the streamed list: on one line, indented by 2. The same JSON as
    `to_json` but for whitespace; with an indent, Python's encoder runs in Python rather
    than C, five times slower, and a 10,000-run export took seconds more for it. Encoded
    as it is first: only a row with a non-finite number (which strict JSON refuses) pays
    for `row_to_dict`'s walk over every value, a third of a 100,000-run export's time."""
    fields = _row_fields(row)
    try:
        return "  " + json.dumps(fields, allow_nan=False)
    except ValueError:
        return "  " + json.dumps(_json_safe(fields), allow_nan=False)


def csv_lines(rows: Sequence[ResultRow], settings: Sequence[str], header: bool) -> str:
    """`to_csv` for unaggregated rows with the settings columns given (every suite's, read up
    front), so suites can be written one after another under one header."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(list(_CSV_FIELDS) + [k for k in settings if k not in _CSV_FIELDS] + ["run_ids"])
    for r in rows:
        line = [_csv(getattr(r, k)) for k in _CSV_FIELDS]
        line += [_csv(setting_value(r.config, k)) for k in settings if k not in _CSV_FIELDS]
        line.append(" ".join(r.run_ids))
        writer.writerow(line)
    return buf.getvalue()
