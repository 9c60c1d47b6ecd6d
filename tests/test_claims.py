"""Issue 14: statistics in the results views and the suites' claims, on a synthetic store.

Suite "c" has three replicated runs (seeds 1-3) with known exact val losses, a single run, a
`--max-iters` copy of a replicated run, and claims; suite "d" is named by a cross-suite claim.
Every number asserted here is computed independently in the test (scipy.stats)."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import pytest
from scipy import stats as sp
from typer.testing import CliRunner

from lab.claims import claim_results, evaluate_claims
from lab.cli import app
from lab.experiments import Claim, load_experiments
from lab.results import result_rows
from lab.store import Store

from test_results import _add, _cfg

# exact val per seed (1, 2, 3); final = exact + 0.01, best = exact - 0.01, train = exact - 0.2
EXACT = {
    "good": [1.50, 1.51, 1.505],
    "bad": [1.60, 1.62, 1.61],
    "same": [1.503, 1.508, 1.502],  # indistinguishable from "good"
    "flat": [1.55, 1.55, 1.55],
}
REFERENCE = {"good": 1.52, "bad": 1.50}

EXPERIMENTS = textwrap.dedent("""\
    default_suite = "c"
    [suites.c]
    tolerance = 0.05
    seeds = [1, 2, 3]
    runs = [{ name = "good", skips = { 1 = 0.025 } }, { name = "bad", skips = { 1 = 0.5 } },
            { name = "same", skips = { 1 = 0.05 } }, { name = "flat", skips = { 1 = 0.1 } },
            { name = "single", skips = { 1 = 0.2 }, seed = 7 }]
    references = { good = 1.52, bad = 1.50 }
    claims = [ { better = "good", than = "bad" }, { better = "bad", than = "good" },
               { better = "same", than = "good" }, { better = "single", than = "good" },
               { better = "good", than = "d/other" } ]
    [suites.d]
    runs = [{ name = "other", skips = { 1 = 0.3 }, seeds = [1, 2, 3] }]
""")


def _finals(x: float) -> tuple:
    return (x + 0.01, x - 0.01, x - 0.2, x, 10.0, 1000.0)


def make_claims_store(folder: Path) -> Path:
    skips = {"good": 0.025, "bad": 0.5, "same": 0.05, "flat": 0.1}
    with Store.open(folder) as st:
        for name, values in EXACT.items():
            for seed, x in zip((1, 2, 3), values):
                _add(st, "c", f"{name}#{seed}", _cfg(skips={1: skips[name]}, seed=seed), base=name,
                     reference=REFERENCE.get(name), final=_finals(x))
        _add(st, "c", "single", _cfg(skips={1: 0.2}, seed=7), final=_finals(1.40))
        # A --max-iters copy of "bad": lower loss, but never compared with the full runs.
        for seed in (1, 2):
            _add(st, "c", f"bad#{seed}", _cfg(skips={1: 0.5}, seed=seed, max_iters=20), base="bad",
                 final=_finals(1.30 + seed / 100))
        for seed, x in zip((1, 2, 3), [1.70, 1.71, 1.72]):
            _add(st, "d", f"other#{seed}", _cfg(skips={1: 0.3}, seed=seed), base="other", final=_finals(x))
    return folder


@pytest.fixture
def claims_store(tmp_path: Path) -> Path:
    return make_claims_store(tmp_path / "runs")


@pytest.fixture
def experiments_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS, encoding="utf-8")
    return path


def _runs(store: Path):
    with Store.open(store) as st:
        return st.runs()


def _rows(store: Path):
    rows = result_rows(_runs(store), replicates=True, tolerances={"c": 0.05})
    return {(r.suite, r.name, r.max_iters): r for r in rows}


def test_rows_carry_t_intervals_and_welch_or_paired_tests_against_their_comparable_best(claims_store):
    rows = _rows(claims_store)
    good, bad = rows[("c", "good", 40)], rows[("c", "bad", 40)]
    ci = sp.t.interval(0.95, 2, loc=sp.tmean(EXACT["good"]), scale=sp.sem(EXACT["good"]))
    assert (good.stats["exact_val"].low, good.stats["exact_val"].high) == (pytest.approx(ci[0]), pytest.approx(ci[1]))
    # "single" (1.40, one seed) is lowest but has no p; best is the lowest mean exact val.
    single = rows[("c", "single", 40)]
    assert single.verdict == "best"
    # Both replicated rows share seeds 1-3 with... the best is "single" (seed 7): Welch impossible (1 seed).
    assert good.verdict == "1 seed" and good.vs_best.p is None and good.vs_best.diff == pytest.approx(1.505 - 1.40)
    # The --max-iters copy is its own comparable set, where it is the best.
    copy = rows[("c", "bad", 20)]
    assert copy.comparable != bad.comparable and copy.verdict == "best"
    assert good.comparable == bad.comparable == single.comparable


def test_paired_test_when_seeds_match_and_welch_otherwise(claims_store):
    runs = [r for r in _runs(claims_store) if r.name != "single" and r.base_name != "same"]
    rows = {(r.name, r.max_iters): r for r in result_rows(runs, replicates=True)}
    bad, good, flat = rows[("bad", 40)], rows[("good", 40)], rows[("flat", 40)]
    assert good.verdict == "best"
    paired = sp.ttest_rel(EXACT["bad"], EXACT["good"])
    assert bad.vs_best.test == "paired" and bad.vs_best.p == pytest.approx(paired.pvalue)
    assert bad.verdict == "worse"
    assert flat.vs_best.test == "paired"
    # Drop seed 3 of "good": seeds differ, so Welch.
    runs = [r for r in runs if r.name != "good#3"]
    rows = {(r.name, r.max_iters): r for r in result_rows(runs, replicates=True)}
    welch = sp.ttest_ind(EXACT["bad"], EXACT["good"][:2], equal_var=False)
    assert rows[("bad", 40)].vs_best.test == "welch" and rows[("bad", 40)].vs_best.p == pytest.approx(welch.pvalue)


def test_replicates_split_by_the_dtype_actually_used(tmp_path):
    from lab.core import events as ev

    with Store.open(tmp_path / "runs") as st:
        for seed, dtype in ((1, "float32"), (2, "float32"), (3, "bfloat16")):
            run_id = st.enqueue("e", f"r#{seed}", "r", _cfg(seed=seed), None).run_id
            st.apply_many([ev.Started(run_id, 0, 40, 1000, "cpu", dtype, 1), ev.Finished(run_id, 40, *_finals(1.5))])
        rows = result_rows(st.runs(), replicates=True)
    assert sorted((r.n, r.dtype_used) for r in rows) == [(1, "bfloat16"), (2, "float32")]
    assert len({r.comparable for r in rows}) == 2  # and never compared with each other


def test_reference_tolerance(claims_store):
    rows = _rows(claims_store)
    good, bad = rows[("c", "good", 40)], rows[("c", "bad", 40)]
    assert good.delta_ref == pytest.approx(1.515 - 1.52) and good.within_tolerance is True
    assert bad.delta_ref == pytest.approx(1.62 - 1.50) and bad.within_tolerance is False
    assert rows[("c", "same", 40)].within_tolerance is None


def test_claim_verdicts_with_holm_correction(claims_store, experiments_file):
    exps = load_experiments(experiments_file)
    results = claim_results(exps, _runs(claims_store), ["c"])["c"]
    by = {(r.claim.better, r.claim.than): r for r in results}
    p = [sp.ttest_rel(EXACT["good"], EXACT["bad"]).pvalue, sp.ttest_rel(EXACT["bad"], EXACT["good"]).pvalue,
         sp.ttest_rel(EXACT["same"], EXACT["good"]).pvalue, None,
         sp.ttest_rel(EXACT["good"], [1.70, 1.71, 1.72]).pvalue]
    tested = sorted(x for x in p if x is not None)
    assert by[("good", "bad")].verdict == "supported"
    assert by[("bad", "good")].verdict == "contradicted"
    same = by[("same", "good")]
    assert same.verdict == "inconclusive" and same.comparison.test == "paired"
    # Holm: the largest p of 4 tests is multiplied by 1 (and at least the previous adjusted ones)
    assert same.p_holm == pytest.approx(max(tested[-1], 2 * tested[-2], 3 * tested[1], 4 * tested[0]))
    assert same.seeds_needed is not None and "seeds per run would give 80 % power" in same.reason
    single = by[("single", "good")]
    assert single.verdict == "inconclusive" and single.comparison.p is None
    assert single.reason == "single has 1 seed; add seeds = [...] to test the claim"
    assert by[("good", "d/other")].verdict == "supported"  # across suites, same settings but rates


def test_claim_on_runs_without_results_or_comparable_settings(claims_store):
    rows = result_rows(_runs(claims_store), replicates=True)
    results = evaluate_claims({"c": [Claim("good", "ghost"), Claim("good", "flat", "final_val")]}, rows)["c"]
    assert results[0].verdict == "inconclusive" and results[0].reason == "ghost has no exact_val yet"
    assert results[1].claim.metric == "final_val" and results[1].comparison is not None


def test_results_command_shows_intervals_verdicts_and_claims(claims_store, experiments_file):
    runner = CliRunner()
    res = runner.invoke(app, ["results", "c", "--store", str(claims_store), "--replicates", "--file", str(experiments_file)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "exact 95% CI" in out and "vs best (exact val)" in out and "Δ ref ✓: within ±0.05 of the reference" in out
    assert "c: claims" in out and "supported" in out and "contradicted" in out and "inconclusive" in out
    assert "Holm-corrected over the suite's 4 tests" in out
    assert "single has 1 seed" in out
    md = runner.invoke(app, ["results", "c", "--store", str(claims_store), "--replicates", "--format", "markdown",
                             "--file", str(experiments_file)]).stdout
    assert "#### c: claims" in md and "| good < bad | exact_val |" in md
    data = json.loads(runner.invoke(app, ["results", "c", "--store", str(claims_store), "--replicates",
                                          "--format", "json", "--file", str(experiments_file)]).stdout)
    bad = next(d for d in data if d["name"] == "bad" and d["max_iters"] == 40)
    assert {"ci_low", "ci_high", "n", "p_vs_best", "test", "within_tolerance"} <= set(bad)
    assert bad["n"] == 3 and bad["test"] is None and bad["within_tolerance"] is False  # vs "single": 1 seed
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [
        "results", "c", "--store", str(claims_store), "--replicates", "--format", "csv"]).stdout)))
    good = next(r for r in rows if r["name"] == "good")
    assert good["n"] == "3" and float(good["ci_low"]) < 1.505 < float(good["ci_high"])
    assert good["within_tolerance"] == "true" and good["verdict"] == "1 seed"


def test_results_with_a_broken_experiments_file_leaves_claims_out_in_one_line(claims_store, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("default_suite = 3\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["results", "c", "--store", str(claims_store), "--file", str(bad)])
    assert res.exit_code == 0
    assert res.stderr.strip().count("\n") == 0 and "claims and tolerances are left out" in res.stderr


def test_headless_final_table_merges_replicates_and_tests_the_claims(claims_store, experiments_file):
    """What `run --headless` prints at the end (`lab.headless.final_tables`): the session's runs
    with replicates merged, then the suite's claims (a cross-suite one reads suite d's runs
    from the store)."""
    from rich.console import Console

    from lab.headless import final_tables

    with Store.open(claims_store) as st:
        final = [r for r in st.runs("c") if r.max_iters == 40]
        tables = final_tables(st, final, load_experiments(experiments_file))
    console = Console(file=io.StringIO(), width=300, no_color=True)
    for t in tables:
        console.print(t)
    text = console.file.getvalue()
    assert "good#1" not in text  # replicates merged: mean, interval, n
    assert "exact 95% CI" in text and "vs best (exact val)" in text and "within ±0.05 of the reference" in text
    assert "c: claims" in text and "good < d/other" in text
    assert "Holm-corrected over the suite's 4 tests" in text
    assert text.count("supported ") == 2 and "contradicted " in text  # (the caption says "supported/contradicted")
