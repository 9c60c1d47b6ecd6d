"""A suite's claims ("A reaches a lower loss than B"), tested on the results: which hold.

A claim from experiments.toml (`lab.experiments.Claim`) is tested on the replicate-merged
result rows (`lab.results.result_rows(..., replicates=True)`) with the same test a row gets
against its comparable set's best (`lab.stats.compare`: paired where both runs share their
seeds, Welch's otherwise). A suite's claims are several tests at once, so their p-values are
Holm-corrected together before a verdict is given:

* supported: corrected p < 0.05 and the difference in the claimed direction;
* contradicted: corrected p < 0.05 the other way;
* inconclusive: anything else, with the p-value and the seeds per run the observed effect
  would need for 80 % power, or with the reason there is no test (a run has no results yet,
  has one seed, no variance, or the two runs were not trained with comparable settings).

Which rows a claim compares: runs of its suite in one comparable set (`lab.results`), the
set with the most seeds if a run exists in several (a `--max-iters` copy, another dtype);
for "suite/name" references to another suite, runs equal in every setting but the rates
(dropout sites and skip paths) and seeds, and in the dtype they actually trained in.

Pure functions over rows; the views render `ClaimResult`s with `claims_table`,
`claims_markdown` and `claim_to_dict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from lab.experiments import Claim
from lab.formatting import counted, fmt_interval, fmt_p, verdict_style
from lab.results import ResultRow, render_rich_tables, result_rows, to_markdown
from lab.stats import (
    INCONCLUSIVE,
    NO_VARIANCE,
    ONE_SEED,
    PAIRED,
    Comparison,
    claim_verdict,
    compare,
    holm,
    seeds_needed,
)
from lab.store import RunRow

#: Settings a cross-suite claim may differ in: the rates the paper varies, and seeds.
_RATES = ("embd_dropout", "attn_dropout", "attn_out_dropout", "mlp_dropout", "skips", "seed")


@dataclass(frozen=True)
class ClaimResult:
    """One claim tested: `comparison` is mean(better) - mean(than) of `claim.metric` (negative
    supports the claim); `p_holm` the Holm-corrected p over the suite's claims; `reason` why
    there is no test or what an inconclusive verdict needs."""

    suite: str
    claim: Claim
    verdict: str
    comparison: Comparison | None = None
    p_holm: float | None = None
    seeds_needed: int | None = None
    reason: str = ""
    n_better: int = 0
    n_than: int = 0


def evaluate_claims(claims: Mapping[str, Sequence[Claim]], rows: Sequence[ResultRow]) -> dict[str, list[ClaimResult]]:
    """Test every suite's claims on replicate-merged `rows` (of every suite a claim names),
    Holm-correcting each suite's p-values together. Suites without claims are left out."""
    out: dict[str, list[ClaimResult]] = {}
    for suite, suite_claims in claims.items():
        if not suite_claims:
            continue
        tested = [_test(suite, c, rows) for c in suite_claims]
        adjusted = holm([t[1].p if t[1] is not None else None for t in tested])
        results = []
        for (claim, comparison, reason, ns), p_holm in zip(tested, adjusted):
            results.append(_verdict(suite, claim, comparison, reason, ns, p_holm))
        out[suite] = results
    return out


def _test(suite: str, claim: Claim, rows: Sequence[ResultRow]):
    """(claim, comparison or None, reason, (n_better, n_than))."""
    (sa, na), (sb, nb) = claim.refers_to(suite)
    better = [r for r in rows if r.suite == sa and (r.base_name or r.name) == na]
    than = [r for r in rows if r.suite == sb and (r.base_name or r.name) == nb]
    for name, found in ((claim.better, better), (claim.than, than)):
        if not any(_values(r, claim.metric) for r in found):
            return claim, None, f"{name} has no {claim.metric} yet", (0, 0)
    pairs = [(a, b) for a in better for b in than if _values(a, claim.metric) and _values(b, claim.metric)
             and _comparable(a, b)]
    if not pairs:
        return claim, None, f"{claim.better} and {claim.than} were not trained with comparable settings", (0, 0)
    a, b = max(pairs, key=lambda ab: (min(len(_values(ab[0], claim.metric)), len(_values(ab[1], claim.metric))),
                                      -ab[0].rank - ab[1].rank))
    comparison = compare(a.values[claim.metric], b.values[claim.metric], a.replicate_keys, b.replicate_keys)
    ns = (comparison.n_a, comparison.n_b)
    if comparison.note == ONE_SEED:
        single = claim.better if comparison.n_a < 2 else claim.than
        return claim, comparison, f"{single} has 1 seed; add seeds = [...] to test the claim", ns
    if comparison.note == NO_VARIANCE:
        return claim, comparison, "no variance between seeds; no test", ns
    return claim, comparison, "", ns


def _verdict(suite: str, claim: Claim, comparison: Comparison | None, reason: str, ns: tuple[int, int],
             p_holm: float | None) -> ClaimResult:
    verdict = claim_verdict(comparison.diff if comparison else None, p_holm)
    needed = None
    if verdict == INCONCLUSIVE and comparison is not None and comparison.p is not None:
        needed = seeds_needed(comparison.diff, comparison.sd, paired=comparison.test == PAIRED)
        reason = reason or (f"{needed} seeds per run would give 80 % power for this effect" if needed
                            else "the observed effect is too small to plan seeds for")
    return ClaimResult(suite, claim, verdict, comparison, p_holm, needed, reason, *ns)


def _values(row: ResultRow, metric: str) -> list[float]:
    return [v for v in row.values.get(metric, []) if v is not None]


def _comparable(a: ResultRow, b: ResultRow) -> bool:
    """Same suite: the same comparable set. Across suites: equal but for rates and seeds, and
    trained in the same dtype."""
    if a.suite == b.suite:
        return a.comparable == b.comparable
    if a.dtype_used != b.dtype_used:
        return False
    strip = lambda config: json.dumps({k: v for k, v in config.items() if k not in _RATES}, sort_keys=True)
    return strip(a.config) == strip(b.config)


# -- rendering -----------------------------------------------------------------------------


def holm_note(results: Sequence[ClaimResult]) -> str:
    """What the correction was: "p-values Holm-corrected over 3 tests (alpha 0.05)"."""
    tests = sum(1 for r in results if r.comparison is not None and r.comparison.p is not None)
    return f"p (Holm): Holm-corrected over the suite's {counted(tests, 'test')}; supported/contradicted at p < 0.05"


def _cells(r: ClaimResult) -> dict[str, str]:
    c = r.comparison
    return {
        "claim": f"{r.claim.better} < {r.claim.than}",
        "metric": r.claim.metric,
        "Δ [95% CI]": "" if c is None or c.diff is None else f"{c.diff:+.4f} {fmt_interval(c.low, c.high)}".strip(),
        "p": fmt_p(c.p if c else None).removeprefix("p="),
        "p (Holm)": fmt_p(r.p_holm).removeprefix("p="),
        "test": (c.test or "") if c else "",
        "n": f"{r.n_better}/{r.n_than}" if c else "",
        "verdict": r.verdict,
        "note": r.reason,
    }


def claims_table(suite: str, results: Sequence[ClaimResult]) -> Table:
    """A Rich table of one suite's claims and verdicts, its caption naming the correction."""
    table = Table(title=f"{suite}: claims", title_justify="left", title_style="bold",
                  caption=holm_note(results), caption_justify="left", box=box.SIMPLE_HEAD)
    headers = list(_cells(results[0]))
    for h in headers:
        table.add_column(h, justify="left" if h in ("claim", "metric", "test", "verdict", "note", "Δ [95% CI]") else "right",
                         no_wrap=h in ("claim", "Δ [95% CI]"))
    for r in results:
        cells: list[Any] = list(_cells(r).values())
        cells[headers.index("verdict")] = Text(r.verdict, style=verdict_style(r.verdict))
        table.add_row(*cells)
    return table


def claims_markdown(suite: str, results: Sequence[ClaimResult]) -> str:
    """One suite's claims as a Markdown table under a "#### suite: claims" heading."""
    rows = [_cells(r) for r in results]
    esc = lambda t: str(t).replace("|", "\\|")
    lines = [f"#### {suite}: claims", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(esc(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines + ["", holm_note(results) + ".", ""])


def claim_to_dict(r: ClaimResult) -> dict[str, Any]:
    """A JSON-ready claim result (the report and exports)."""
    c = r.comparison
    return {
        "suite": r.suite, "better": r.claim.better, "than": r.claim.than, "metric": r.claim.metric,
        "verdict": r.verdict, "diff": c.diff if c else None, "ci_low": c.low if c else None,
        "ci_high": c.high if c else None, "p": c.p if c else None, "p_holm": r.p_holm,
        "test": c.test if c else None, "n_better": r.n_better, "n_than": r.n_than,
        "seeds_needed": r.seeds_needed, "reason": r.reason or None,
    }


# -- for the views: which runs to read, claims beside the results tables ---------------------


def suite_tolerances(experiments: Any) -> dict[str, float]:
    """Each suite's reproduction tolerance in an `Experiments` (None: none known)."""
    return {} if experiments is None else {n: s.tolerance for n, s in experiments.suites.items()}


def referenced_suites(experiments: Any, suites: Iterable[str]) -> list[str]:
    """`suites` and every suite their claims name ("other/run"): the runs to read to test them."""
    out = list(dict.fromkeys(suites))
    if experiments is None:
        return out
    for suite in list(out):
        for claim in getattr(experiments.suites.get(suite), "claims", []):
            for target, _ in claim.refers_to(suite):
                if target not in out:
                    out.append(target)
    return out


def claim_results(experiments: Any, runs: Sequence[RunRow], suites: Iterable[str]) -> dict[str, list[ClaimResult]]:
    """The claims of `suites` tested on `runs` (which hold every suite `referenced_suites`
    names); {} without an experiments file."""
    if experiments is None:
        return {}
    claims = {s: list(experiments.suites[s].claims) for s in suites if s in experiments.suites}
    if not any(claims.values()):
        return {}
    rows = result_rows(runs, replicates=True, tolerances=suite_tolerances(experiments))
    return evaluate_claims(claims, rows)


def tables_with_claims(rows: Sequence[ResultRow], claims: Mapping[str, Sequence[ClaimResult]],
                       titles: dict[str, str] | None = None) -> list[Table]:
    """Each suite's results table (`render_rich_tables`), followed by its claims table."""
    out = []
    by_suite = {s: [r for r in rows if r.suite == s] for s in dict.fromkeys(r.suite for r in rows)}
    for suite, table in zip(by_suite, render_rich_tables(rows, titles)):
        out.append(table)
        if claims.get(suite):
            out.append(claims_table(suite, claims[suite]))
    return out


def markdown_with_claims(rows: Sequence[ResultRow], claims: Mapping[str, Sequence[ClaimResult]],
                         titles: dict[str, str] | None = None) -> str:
    """`to_markdown` per suite, each followed by its claims."""
    parts = []
    for suite in dict.fromkeys(r.suite for r in rows):
        parts.append(to_markdown([r for r in rows if r.suite == suite], titles))
        if claims.get(suite):
            parts.append(claims_markdown(suite, claims[suite]))
    return "\n".join(parts)
