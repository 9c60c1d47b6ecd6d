"""Statistics over seed replicates: intervals, tests between two runs, Holm's correction, power.

Why this exists: one evaluation of a run scatters by several thousandths (DESIGN.md section 1),
as large as the differences the paper reports, so a number is only worth reading with its
interval, and "A beats B" only with a test. Every results view (`lab.results`), the claims
(`lab.claims`) and the report use these functions, so each is computed one way.

What the interval covers: replicates differ in `seed` (initialisation and dropout masks); the
order of training batches comes from `data_seed`, which replicates share unless the suite
lists `data_seeds`. So by default an interval says how much the result moves with the seed,
not with the data order.

Pure functions on plain numbers. The distributions come from `scipy.special` (Student t and
noncentral t), imported inside the functions and only when there is something to test: the
TUI never pays for it at start-up, and `scipy.special` loads in a fraction of the time
`scipy.stats` takes (about 0.4 s against 2 s on a busy laptop), which matters on a screen switch.
The test formulas are the textbook ones; tests/test_stats.py checks them against `scipy.stats`.

Public API (stable; `lab.results`, `lab.claims` and the report build on it):

* `mean_interval(values)` -> `MeanInterval`: mean, sample sd, n and the Student-t 95 %
  interval (n - 1 degrees of freedom); no interval below 2 values.
* `welch_test(a, b)`, `paired_test(a, b)` -> `Comparison` of mean(a) - mean(b): the
  difference, its 95 % interval and the two-sided p-value; `compare(a, b, keys_a, keys_b)`
  picks the paired test when both sides have the same replicate keys (seeds), else Welch's.
* `holm(pvalues)` -> Holm-adjusted p-values (None stays None).
* `seeds_needed(diff, sd, paired=False)` -> seeds per row for 80 % power at alpha 0.05.
* `vs_best_verdict(comparison)` -> "worse" / "n.s." / a note ("1 seed", "no variance").
* `claim_verdict(diff, p_adjusted)` -> "supported" / "contradicted" / "inconclusive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

__all__ = [
    "ALPHA", "CONFIDENCE", "POWER", "MeanInterval", "Comparison", "mean_interval", "welch_test",
    "paired_test", "compare", "holm", "seeds_needed", "vs_best_verdict", "claim_verdict",
    "ONE_SEED", "NO_VARIANCE", "NO_VALUES", "WELCH", "PAIRED", "SUPPORTED", "CONTRADICTED", "INCONCLUSIVE",
]

CONFIDENCE = 0.95  # intervals
ALPHA = 0.05  # two-sided significance level of tests and claims
POWER = 0.8  # the power `seeds_needed` plans for

#: Notes a comparison carries instead of a p-value, spelled once for every view.
ONE_SEED = "1 seed"
NO_VARIANCE = "no variance"
NO_VALUES = "no values"

WELCH = "welch"
PAIRED = "paired"


def _finite(values: Sequence[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        v = float(v)
        if math.isfinite(v):
            out.append(v)
    return out


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    """Sample variance (n - 1); exactly 0.0 for identical values (no rounding residue)."""
    if len(set(xs)) == 1:
        return 0.0
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


# -- one row: mean and interval ------------------------------------------------------------


@dataclass(frozen=True)
class MeanInterval:
    """A loss over replicates: mean, sample sd, n, and the 95 % Student-t interval of the mean.

    `low`/`high` are None with fewer than 2 values (one seed says nothing about the spread);
    with zero variance they equal the mean.
    """

    mean: float | None
    std: float | None
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def note(self) -> str | None:
        """Why there is no (useful) interval: "no values", "1 seed", "no variance"; else None."""
        if self.n == 0:
            return NO_VALUES
        if self.n == 1:
            return ONE_SEED
        if self.std == 0.0:
            return NO_VARIANCE
        return None


def mean_interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean, sd and t-interval of the finite values (None, NaN and inf are left out: a
    diverged replicate has no final loss)."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return MeanInterval(None, None, 0)
    mean = _mean(xs)
    if n == 1:
        return MeanInterval(mean, None, 1)
    var = _var(xs)
    if var == 0.0:
        return MeanInterval(mean, 0.0, n, mean, mean)
    half = _t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(var / n)
    return MeanInterval(mean, math.sqrt(var), n, mean - half, mean + half)


# -- two rows: a difference and its test ---------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) with its 95 % interval and two-sided p-value.

    `test` names the test used ("welch" or "paired"); None when no test could be made, and
    then `note` says why ("1 seed": a side has one value; "no variance": both sides are
    constant, so a t statistic is undefined; "no values"). `sd` is the standard deviation the
    effect is measured in (pooled for Welch, of the differences for paired): what
    `seeds_needed` plans with.
    """

    diff: float | None
    low: float | None
    high: float | None
    p: float | None
    test: str | None
    n_a: int
    n_b: int
    note: str | None = None
    sd: float | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        """Whether the (uncorrected) p-value is below `alpha`."""
        return self.p is not None and self.p < alpha


def welch_test(a: Sequence[float | None], b: Sequence[float | None], confidence: float = CONFIDENCE) -> Comparison:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with its Welch interval."""
    xa, xb = _finite(a), _finite(b)
    base = _untestable(xa, xb)
    if base is not None:
        return base
    va, vb = _var(xa), _var(xb)
    diff = _mean(xa) - _mean(xb)
    if va == 0.0 and vb == 0.0:
        return Comparison(diff, None, None, None, None, len(xa), len(xb), NO_VARIANCE, 0.0)
    se2a, se2b = va / len(xa), vb / len(xb)
    se = math.sqrt(se2a + se2b)
    df = (se2a + se2b) ** 2 / (se2a ** 2 / (len(xa) - 1) + se2b ** 2 / (len(xb) - 1))  # Welch-Satterthwaite
    low, high, p = _t_test(diff, se, df, confidence)
    return Comparison(diff, low, high, p, WELCH, len(xa), len(xb), None, math.sqrt((va + vb) / 2))


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """Paired t-test of mean(a - b) over pairs (a[i], b[i]); pairs with a missing side are dropped.

    Replicates with the same seed share initial-weight and batch randomness, so their
    difference removes that shared scatter: a sharper test where it applies.
    """
    pairs = [(x, y) for x, y in zip(a, b) if _finite([x]) and _finite([y])]
    xa, xb = [float(x) for x, _ in pairs], [float(y) for _, y in pairs]
    base = _untestable(xa, xb)
    if base is not None:
        return base
    d = [x - y for x, y in pairs]
    diff = _mean(d)
    if _var(d) == 0.0:
        return Comparison(diff, None, None, None, None, len(xa), len(xb), NO_VARIANCE, 0.0)
    sd = math.sqrt(_var(d))
    low, high, p = _t_test(diff, sd / math.sqrt(len(d)), len(d) - 1, confidence)
    return Comparison(diff, low, high, p, PAIRED, len(xa), len(xb), None, sd)


def compare(a: Sequence[float | None], b: Sequence[float | None], keys_a: Sequence[Hashable] | None = None,
            keys_b: Sequence[Hashable] | None = None, confidence: float = CONFIDENCE) -> Comparison:
    """mean(a) - mean(b): the paired test when both sides have the same replicate keys (their
    seeds) and at least 2 complete pairs, Welch's test otherwise."""
    if keys_a is not None and keys_b is not None and len(keys_a) == len(a) and len(keys_b) == len(b):
        va, vb = dict(zip(keys_a, a)), dict(zip(keys_b, b))
        if set(va) == set(vb) and len(va) == len(keys_a) == len(keys_b):
            shared = [k for k in keys_a if _finite([va[k]]) and _finite([vb[k]])]
            if len(shared) >= 2:
                return paired_test([va[k] for k in shared], [vb[k] for k in shared], confidence)
    return welch_test(a, b, confidence)


def _untestable(xa: list[float], xb: list[float]) -> Comparison | None:
    """The comparison when a side has fewer than 2 values: the difference, no interval, no p."""
    if not xa or not xb:
        diff = None
        return Comparison(diff, None, None, None, None, len(xa), len(xb), NO_VALUES)
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(_mean(xa) - _mean(xb), None, None, None, None, len(xa), len(xb), ONE_SEED)
    return None


def _t_quantile(q: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def _t_test(diff: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """(interval low, high, two-sided p) of a t statistic diff / se with df degrees of freedom."""
    from scipy.special import stdtr

    half = _t_quantile(0.5 + confidence / 2, df) * se
    p = min(1.0, 2.0 * float(stdtr(df, -abs(diff) / se)))
    return diff - half, diff + half, p


# -- many comparisons ----------------------------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input order; None (no test) stays None and
    does not count as a comparison. Controls the chance of any false "supported" among a
    suite's claims at alpha, without assuming the tests are independent."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def seeds_needed(diff: float | None, sd: float | None, paired: bool = False, power: float = POWER,
                 alpha: float = ALPHA, limit: int = 1000) -> int | None:
    """Seeds per row a two-sided t-test needs to detect `diff` with `power`, if the true effect
    were the observed one (sd: pooled, or of the paired differences).

    Exact power from the noncentral t distribution (Welch with equal n is close to the pooled
    two-sample test). None when it cannot be said: no difference, no spread measured, or more
    than `limit` seeds.
    """
    if diff is None or sd is None or diff == 0.0 or sd <= 0.0 or not math.isfinite(diff) or not math.isfinite(sd):
        return None
    import numpy as np
    from scipy.special import nctdtr, stdtrit

    d = abs(diff) / sd
    n = np.arange(2, limit + 1)
    df = n - 1 if paired else 2 * n - 2
    nc = d * np.sqrt(n if paired else n / 2)
    crit = stdtrit(df, 1 - alpha / 2)
    achieved = 1.0 - nctdtr(df, nc, crit) + nctdtr(df, nc, -crit)
    enough = np.flatnonzero(achieved >= power)
    if enough.size:
        return int(n[enough[0]])
    return None


# -- verdicts ------------------------------------------------------------------------------


def vs_best_verdict(comparison: Comparison, is_best: bool = False, alpha: float = ALPHA) -> str:
    """The short word beside a row's difference to its comparable set's best row: "best",
    "worse" (p < alpha), "n.s." (not significant), or the note when there is no test."""
    if is_best:
        return "best"
    if comparison.p is None:
        return comparison.note or ""
    if comparison.p < alpha:
        return "worse" if (comparison.diff or 0.0) > 0 else "better"
    return "n.s."


SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"


def claim_verdict(diff: float | None, p_adjusted: float | None, alpha: float = ALPHA) -> str:
    """A claim "A is better (lower) than B" given diff = mean(A) - mean(B) and its
    Holm-adjusted p: supported when significant and negative, contradicted when significant
    and positive, inconclusive otherwise (including no test at all)."""
    if diff is None or p_adjusted is None or p_adjusted >= alpha or diff == 0.0:
        return INCONCLUSIVE
    return SUPPORTED if diff < 0 else CONTRADICTED
