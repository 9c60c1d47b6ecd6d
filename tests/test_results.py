"""The comparative results table and the read-side commands: results, validate, sample, rm.

Fast: the store is filled with synthetic events (no training), except for `sample`, which
trains a 1-block model for 20 steps on a generated corpus to get a real checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.core import events as ev
from lab.core.checkpoint import FileCheckpointSink
from lab.core.config import RunConfig
from lab.core.train import train_group
from lab.results import (
    columns,
    render_rich_table,
    render_rich_tables,
    result_rows,
    to_csv,
    to_json,
    to_markdown,
)
from lab.store import NewRun, Store

from conftest import tiny_config, write_corpus

REPO = Path(__file__).resolve().parents[1]
BASE = dict(n_layer=1, n_head=2, n_embd=16, max_iters=40, eval_interval=10, dropout=0.2)


def _cfg(**overrides) -> RunConfig:
    return RunConfig.from_dict({**BASE, **overrides})


def _add(store: Store, suite: str, name: str, cfg: RunConfig, *, base: str | None = None,
         reference: float | None = None, final: tuple | None = None, evals=(), diverge: bool = False,
         start: bool = True) -> str:
    """Enqueue a run and feed it events: evaluations (step, train, val), then Finished with
    `final` = (final_val, best_val, final_train, exact_val, wall_s, tokens_per_s) or Diverged."""
    run_id = store.enqueue(suite, name, base or name, cfg, reference).run_id
    events: list = [ev.Started(run_id, 0, cfg.max_iters, 1000, "cpu", "float32", 1)] if start else []
    events += [ev.Evaluated(run_id, step, train, val, 1e-3) for step, train, val in evals]
    if final is not None:
        events.append(ev.Finished(run_id, cfg.max_iters, *final))
    if diverge:
        events.append(ev.Diverged(run_id, 10, "loss became NaN at step 10"))
    store.apply_many(events)
    return run_id


def make_store(folder: Path) -> Path:
    """Two suites: "s" (two plain runs, a diverged one, two replicates, a queued one) and "t"."""
    with Store.open(folder) as st:
        _add(st, "s", "a", _cfg(skips={1: 0.025}), reference=1.55,
             evals=[(0, 4.1, 4.2), (40, 1.40, 1.60)], final=(1.60, 1.58, 1.40, 1.59, 12.0, 5000.0))
        _add(st, "s", "b", _cfg(skips={1: 0.1}),
             evals=[(0, 4.1, 4.2), (40, 1.45, 1.70)], final=(1.70, 1.65, 1.45, 1.69, 12.0, 5000.0))
        _add(st, "s", "nan", _cfg(skips={1: 0.5}), evals=[(0, math.nan, math.nan)], diverge=True)
        _add(st, "s", "r#1", _cfg(skips={1: 0.05}, seed=1), base="r", reference=1.5,
             final=(1.50, 1.49, 1.30, 1.51, 10.0, 4000.0))
        _add(st, "s", "r#2", _cfg(skips={1: 0.05}, seed=2), base="r", reference=1.5,
             final=(1.54, 1.53, 1.34, 1.55, 14.0, 6000.0))
        _add(st, "s", "q", _cfg(skips={1: 0.2}), start=False)
        _add(st, "t", "only", _cfg(n_layer=2), final=(2.0, 1.9, 1.8, 2.0, 1.0, 100.0))
    return folder


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return make_store(tmp_path / "runs")


@pytest.fixture
def rows(store_dir: Path):
    with Store.open(store_dir) as st:
        return st.runs()


def _by_name(result):
    return {(r.suite, r.name): r for r in result}


# -- result_rows ---------------------------------------------------------------------------


def test_ranked_by_best_val_within_each_suite_missing_last(rows):
    result = result_rows(rows)
    s = [r.name for r in result if r.suite == "s"]
    assert s[:4] == ["r#1", "r#2", "a", "b"]
    assert set(s[4:]) == {"nan", "q"}  # no finite best val: last
    assert [r.suite for r in result] == ["s"] * 6 + ["t"]
    assert [r.rank for r in result if r.suite == "s"] == [1, 2, 3, 4, 5, 6]
    assert _by_name(result)[("t", "only")].rank == 1


def test_gap_and_delta_columns(rows):
    by = _by_name(result_rows(rows))
    a = by[("s", "a")]
    assert a.gap == pytest.approx(1.60 - 1.40)
    assert a.delta_best == pytest.approx(1.58 - 1.49)  # against r#1, the suite's best
    assert a.delta_ref == pytest.approx(1.60 - 1.55)  # final val (what the paper reports) - reference
    assert by[("s", "r#1")].delta_best == 0.0
    assert by[("s", "b")].reference is None and by[("s", "b")].delta_ref is None
    nan = by[("s", "nan")]
    assert nan.status == "diverged" and nan.best_val is None and nan.final_val is None
    assert nan.gap is None and nan.delta_best is None
    assert by[("t", "only")].delta_best == 0.0


def test_varied_settings_are_what_differs_within_the_suite(rows):
    by = _by_name(result_rows(rows))
    assert by[("s", "a")].varied == {"skips.1": 0.025, "seed": 1337}
    assert by[("s", "r#2")].varied == {"skips.1": 0.05, "seed": 2}
    assert by[("t", "only")].varied == {}  # a suite of one run varies nothing
    assert by[("s", "a")].config["skips"] == {"1": 0.025}  # the full settings are kept too


def test_dropout_sites_collapse_and_missing_skip_depths_differ():
    from lab.results import varied_settings

    configs = [_cfg(dropout=0.0).to_dict(), _cfg(dropout=0.5, skips={1: 0.0, 2: 0.5}).to_dict()]
    assert varied_settings(configs) == ["dropout", "skips.2"]
    split = [_cfg().to_dict(), _cfg(attn_dropout=0.0).to_dict()]
    assert varied_settings(split) == ["attn_dropout"]


def test_replicates_aggregate_mean_std_n(rows):
    result = result_rows(rows, replicates=True)
    by = _by_name(result)
    assert ("s", "r#1") not in by
    r = by[("s", "r")]
    assert r.rank == 1 and r.n == 2 and r.seeds == [1, 2] and r.names == ["r#1", "r#2"]
    assert r.final_val == pytest.approx(1.52)
    assert r.stats["final_val"].mean == pytest.approx(1.52)
    assert r.stats["final_val"].std == pytest.approx(math.sqrt(2 * 0.02**2))  # sample std, n - 1
    assert r.stats["best_val"].n == 2 and r.stats["exact_val"].mean == pytest.approx(1.53)
    assert r.stats["final_train"].mean == pytest.approx(1.32)
    assert r.gap == pytest.approx(0.20) and r.delta_ref == pytest.approx(0.02)
    assert r.wall_s == pytest.approx(12.0) and r.tokens_per_s == pytest.approx(5000.0)
    assert "seed" not in r.config and "seed" not in r.varied
    a = by[("s", "a")]
    assert a.n == 1 and a.stats["final_val"].std is None
    assert by[("s", "nan")].stats["final_val"].n == 0


def test_replicates_with_different_settings_are_not_merged(store_dir):
    with Store.open(store_dir) as st:
        _add(st, "s", "r#1", _cfg(skips={1: 0.05}, seed=1, max_iters=20), base="r",
             final=(1.9, 1.9, 1.8, 1.9, 1.0, 1.0))
        rows = st.runs("s")
    merged = [r for r in result_rows(rows, replicates=True) if r.name == "r"]
    assert sorted(r.n for r in merged) == [1, 2]
    assert {r.varied["max_iters"] for r in merged} == {20, 40}


# -- renderers -----------------------------------------------------------------------------


def _render(table) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=250, no_color=True)
    console.print(table)
    return console.file.getvalue()


def test_rich_tables_per_suite_with_settings_columns(rows):
    tables = render_rich_tables(result_rows(rows))
    assert [t.title for t in tables] == ["s", "t"]
    text = _render(tables[0])
    headers = [c.header for c in tables[0].columns]
    assert "skips.1" in headers and "seed" in headers and "reference" in headers
    assert "1.5800" in text and "+0.0900" in text and "+0.0500" in text
    assert "reference" not in [c.header for c in tables[1].columns]  # no reference in suite t
    agg = _render(render_rich_table([r for r in result_rows(rows, replicates=True) if r.suite == "s"]))
    assert "1.5200 ± 0.0283" in agg
    both = render_rich_table(result_rows(rows))
    assert [c.header for c in both.columns][0] == "suite"


def test_json_is_strict_with_nulls_and_config(rows):
    data = json.loads(to_json(result_rows(rows)))
    assert len(data) == 7
    required = {"suite", "name", "status", "step", "max_iters", "final_val", "best_val", "final_train",
                "exact_val", "reference", "wall_s", "tokens_per_s", "config"}
    assert all(required <= set(d) for d in data)
    nan = next(d for d in data if d["name"] == "nan")
    assert nan["final_val"] is None and nan["best_val"] is None and nan["status"] == "diverged"
    a = next(d for d in data if d["name"] == "a")
    assert a["config"] == _cfg(skips={1: 0.025}).to_dict() and a["reference"] == 1.55
    agg = json.loads(to_json(result_rows(rows, replicates=True)))
    r = next(d for d in agg if d["name"] == "r")
    assert r["n"] == 2 and r["final_val"] == pytest.approx(1.52)
    assert r["final_val_std"] == pytest.approx(0.028284, abs=1e-6) and r["final_val_n"] == 2


def test_json_writes_non_finite_as_null():
    from lab.results import ResultRow

    row = ResultRow("s", "x", 1, "finished", 1, 1, math.inf, math.nan, None, None, None, None, None,
                    None, None, None, {}, {"lr": math.nan}, ["0" * 16])
    d = json.loads(to_json([row]))[0]
    assert d["final_val"] is None and d["best_val"] is None and d["config"]["lr"] is None


def test_csv_parses(rows):
    parsed = list(csv.DictReader(io.StringIO(to_csv(result_rows(rows)))))
    assert len(parsed) == 7
    a = next(p for p in parsed if p["name"] == "a")
    assert float(a["best_val"]) == 1.58 and a["skips.1"] == "0.025" and a["reference"] == "1.55"
    assert next(p for p in parsed if p["name"] == "nan")["final_val"] == ""
    agg = list(csv.DictReader(io.StringIO(to_csv(result_rows(rows, replicates=True)))))
    r = next(p for p in agg if p["name"] == "r")
    assert r["n"] == "2" and float(r["final_val_std"]) == pytest.approx(0.028284, abs=1e-6)


def _two_suites(folder: Path) -> list:
    """Three runs of two suites: "x" varies only skips.2, "y" is one longer run with a plain
    skips.1 path, and uses one dropout rate ("x" uses another)."""
    with Store.open(folder) as st:
        _add(st, "x", "p2=0.1", _cfg(skips={1: 0.0, 2: 0.1}, dropout=0.0), start=False)
        _add(st, "x", "p2=0.2", _cfg(skips={1: 0.0, 2: 0.2}, dropout=0.0), start=False)
        _add(st, "y", "long", _cfg(skips={1: 0.1}, max_iters=80), start=False)
        return st.runs()


def test_compared_columns_are_every_setting_that_differs_across_suites(tmp_path):
    rows = result_rows(_two_suites(tmp_path / "runs"))
    cols = columns(rows, with_suite=True)
    headers = [c.header for c in cols]
    for key in ("dropout", "skips.1", "skips.2", "max_iters"):  # neither suite alone varies the first three
        assert key in headers, headers
    assert headers.index("dropout") < headers.index("skips.1") < headers.index("skips.2") < headers.index("max_iters")
    cells = {r.name: {c.header: c.cell(r) for c in cols} for r in rows}
    assert cells["long"]["skips.1"] == "0.1" and cells["long"]["skips.2"] == ""  # no depth-2 path
    assert cells["long"]["max_iters"] == "80" and cells["p2=0.1"]["max_iters"] == "40"
    assert cells["long"]["dropout"] == "0.2" and cells["p2=0.2"]["dropout"] == "0"  # no blanks


def test_the_all_suites_table_shows_a_value_wherever_a_run_has_one(rows):
    result = result_rows(rows)
    cols = columns(result, with_suite=True)
    layer = next(c for c in cols if c.header == "n_layer")  # only the suites differ in it
    assert {r.name: layer.cell(r) for r in result if r.name in ("a", "only")} == {"a": "1", "only": "2"}
    for c in cols:
        if c.header in ("skips.1", "seed"):
            assert all(c.cell(r) for r in result), c.header


def test_csv_and_json_carry_every_setting_of_every_run(tmp_path):
    rows = result_rows(_two_suites(tmp_path / "runs"))
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    fields = [k for k in RunConfig().to_dict() if k != "skips"]
    assert set(fields) | {"skips.1", "skips.2"} <= set(parsed[0])
    for line in parsed:
        assert all(line[k] != "" for k in fields), line  # every setting has a value in every row
        assert line["skips.1"] != ""
    by = {line["name"]: line for line in parsed}
    assert by["long"]["embd_dropout"] == "0.2" and by["p2=0.1"]["mlp_dropout"] == "0.0"
    assert by["long"]["n_embd"] == "16" and by["long"]["skips.2"] == "" and by["p2=0.2"]["skips.2"] == "0.2"
    assert list(parsed[0]).count("max_iters") == 1
    for d in json.loads(to_json(rows)):
        assert set(RunConfig().to_dict()) <= set(d["config"])


def test_results_command_csv_has_every_setting(store_dir):
    res = _cli("results", "--store", str(store_dir), "--format", "csv")
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {line["n_layer"] for line in parsed} == {"1", "2"}
    assert all(line["n_embd"] == "16" and line["attn_dropout"] == "0.2" for line in parsed)


def test_markdown_has_a_table_per_suite(rows):
    md = to_markdown(result_rows(rows))
    lines = md.splitlines()
    assert "### s" in lines and "### t" in lines
    header = lines[lines.index("### s") + 2]
    assert header.startswith("| # | run | skips.1 |") and "best val" in header
    assert re.fullmatch(r"\|(-+:?\|)+", lines[lines.index("### s") + 3])
    assert any(line.startswith("| 1 | r#1 |") for line in lines)


# -- the CLI -------------------------------------------------------------------------------

runner = CliRunner()


def _cli(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_results_command_in_each_format(store_dir, fmt):
    res = _cli("results", "--store", str(store_dir), "--format", fmt)
    assert res.exit_code == 0, res.output
    if fmt == "json":
        assert {d["suite"] for d in json.loads(res.stdout)} == {"s", "t"}
    elif fmt == "csv":
        assert len(list(csv.DictReader(io.StringIO(res.stdout)))) == 7
    elif fmt == "markdown":
        assert "### s" in res.stdout and "| # | run |" in res.stdout
    else:
        assert "r#1" in res.stdout and "1.4900" in res.stdout and "\x1b[" not in res.stdout


def test_results_one_suite_replicates_and_output_file(store_dir, tmp_path):
    res = _cli("results", "s", "--store", str(store_dir), "--format", "json", "--replicates")
    data = json.loads(res.stdout)
    assert {d["suite"] for d in data} == {"s"} and next(d for d in data if d["name"] == "r")["n"] == 2
    target = tmp_path / "out.csv"
    res = _cli("results", "--store", str(store_dir), "--format", "csv", "--output", str(target))
    assert res.exit_code == 0 and str(target) in res.stdout
    assert len(list(csv.DictReader(target.open()))) == 7


def test_streamed_exports_are_the_tables_rows_exactly(store_dir):
    """`results --format json|csv` stream each suite from the store (lab/export.py) but write
    exactly what `to_json`/`to_csv` of `result_rows` write: ranks, sets, tests, settings."""
    with Store.open(store_dir) as st:  # copies that differ in more than the seed, in two dtypes
        _add(st, "s", "b", _cfg(skips={1: 0.1}, max_iters=80), final=(1.62, 1.61, 1.5, 1.63, 9.0, 10.0))
        copy = _add(st, "s", "a", _cfg(skips={1: 0.025}, max_iters=80), start=False)
        st.apply_many([ev.Started(copy, 0, 80, 1000, "cpu", "bfloat16", 1),
                       ev.Finished(copy, 80, 1.55, 1.57, 1.4, 1.56, 9.0, 10.0)])
        _add(st, "t", "late", _cfg(n_layer=2, dropout=0.1), start=False)
        _add(st, "u", "one", _cfg(attn_dropout=0.3), final=(2.0, 2.0, 2.0, 2.0, 1.0, 1.0))
        by_suite = {s: result_rows(st.runs(s)) for s in st.suites()}
    every = [r for rows in by_suite.values() for r in rows]
    assert {r.comparable for r in by_suite["s"]} == {1, 2, 3}  # the copies make sets of their own
    streamed = _cli("results", "--store", str(store_dir), "--format", "json").stdout
    assert json.dumps(json.loads(streamed)) == json.dumps(json.loads(to_json(every)))  # same keys in the same order
    for suite, rows in by_suite.items():
        one = _cli("results", suite, "--store", str(store_dir), "--format", "csv").stdout
        assert one == to_csv(rows)
    from lab.results import csv_lines, setting_keys

    settings = setting_keys([{**RunConfig().to_dict(), "skips": {"1": 0.0}}])
    assert _cli("results", "--store", str(store_dir), "--format", "csv").stdout == "".join(
        csv_lines(rows, settings, header=i == 0) for i, rows in enumerate(by_suite.values()))


def test_results_unknown_suite_lists_suites(store_dir):
    res = _cli("results", "nope", "--store", str(store_dir))
    assert res.exit_code == 2
    assert "no suite 'nope'" in res.stderr and "s, t" in res.stderr


def test_results_missing_store_is_one_line(tmp_path):
    res = _cli("results", "--store", str(tmp_path / "absent"))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no runs yet at" in lines[0] and "run --headless" in lines[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "absent").exists()  # reading never creates a store


def test_validate_shipped_file_lists_79_runs():
    res = _cli("validate", "--file", str(REPO / "experiments.toml"))
    assert res.exit_code == 0, res.output
    assert "79 runs in 8 suites" in res.stdout
    assert "skips.2=0.99" in res.stdout and "1.5531" in res.stdout


def test_validate_broken_file_reports_every_problem_with_lines(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('default_suite = "x"\n\n[defaults]\nn_layr = 2\n\n[suites.x]\ndropout = 1.5\n'
                   'runs = [{ name = "a" }]\n')
    res = _cli("validate", "--file", str(bad))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert any(re.match(rf"{re.escape(str(bad))}:4: .*n_layr.*n_layer", line) for line in lines)
    assert any(re.match(rf"{re.escape(str(bad))}:7: .*dropout", line) for line in lines)
    assert lines[-1].startswith("2 problems in") and "Traceback" not in res.output


def test_rm_suite_with_yes(store_dir):
    res = _cli("rm", "s", "--store", str(store_dir), "--yes")
    assert res.exit_code == 0, res.output
    assert "deleted 6 runs" in res.stdout
    with Store.open(store_dir) as st:
        assert st.suites() == ["t"]


def test_rm_asks_and_a_no_keeps_everything(store_dir):
    res = _cli("rm", "s/r", "--store", str(store_dir), input="n\n")  # a base name: both replicates
    assert res.exit_code == 1 and "s/r#1" in res.stdout and "s/r#2" in res.stdout
    with Store.open(store_dir) as st:
        assert len(st.find("s")) == 6
    res = _cli("rm", "s/r", "--store", str(store_dir), input="y\n")
    assert res.exit_code == 0 and "deleted 2 runs" in res.stdout


def test_rm_refuses_a_run_a_live_driver_is_training(store_dir):
    from lab.store import DriverLock

    with Store.open(store_dir) as st:
        _add(st, "t", "busy", _cfg(n_layer=2, seed=5))
        with DriverLock(store_dir):
            res = _cli("rm", "t", "--store", str(store_dir), "--yes")
        assert res.exit_code == 2 and "t/busy" in res.stderr and "stop" in res.stderr
        assert len(st.find("t")) == 2


def test_rm_unknown_run_exits_2(store_dir):
    res = _cli("rm", "s/zzz", "--store", str(store_dir), "--yes")
    assert res.exit_code == 2 and "no run s/zzz" in res.stderr


# -- sample --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one real finished run: 1 block, n_embd 16, 20 steps on a generated corpus
    (trained once for this module; the tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(tmp_path / "corpus.txt", chars=8000)
    cfg = tiny_config(corpus, max_iters=20, eval_interval=10)
    folder = tmp_path / "runs"
    with Store.open(folder) as st:
        run_id = st.enqueue("tiny", "one", "one", cfg, None).run_id
        train_group([cfg], [run_id], st.apply, checkpoints=FileCheckpointSink({run_id: st.checkpoint_dir(run_id)}))
        assert st.get(run_id).status == "finished"
        st.enqueue("tiny", "later", "later", tiny_config(corpus, seed=7), None)  # queued, no checkpoint
    corpus.unlink()  # the vocabulary must come from the checkpoint, not the corpus
    return folder


def test_sample_prints_exactly_the_requested_characters(trained_store):
    args = ("sample", "tiny/one", "--tokens", "50", "--store", str(trained_store), "--prompt", "the ")
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("the ") and first.stdout.endswith("\n")
    assert len(first.stdout[len("the "):-1]) == 50
    assert _cli(*args).stdout == first.stdout  # a fixed seed gives the same text
    other = _cli(*args, "--seed", "7")
    assert other.exit_code == 0 and len(other.stdout) == len(first.stdout)


def test_sample_errors(trained_store):
    store = str(trained_store)
    res = _cli("sample", "tiny/nope", "--store", store)
    assert res.exit_code == 2 and "no run tiny/nope" in res.stderr
    res = _cli("sample", "tiny/later", "--store", store)
    assert res.exit_code == 2 and "no checkpoint yet" in res.stderr
    res = _cli("sample", "tiny/one", "--store", store, "--prompt", "Zebra")
    assert res.exit_code == 2 and "'Z'" in res.stderr and "Traceback" not in res.output
    res = _cli("sample", "tiny", "--store", store)
    assert res.exit_code == 2 and "SUITE/RUN" in res.stderr


def test_a_large_store_shows_the_best_runs_of_each_suite_and_says_how_many_more(tmp_path):
    from lab.results import TOP_PER_SUITE

    st = Store.open(tmp_path / "big")
    n = TOP_PER_SUITE + 15
    runs = [NewRun("big", f"r{i:02d}", f"r{i:02d}", RunConfig(attn_dropout=i / 100), None) for i in range(n)]
    rows = st.enqueue_many(runs)
    for i, row in enumerate(rows):  # r39 best, r00 worst
        st.apply(ev.Finished(row.run_id, 10, 2.0 + (n - i) / 100, 2.0 + (n - i) / 100, 1.9, 2.0, 1.0, 100.0))
    st.close()
    res = _cli("results", "--store", str(tmp_path / "big"))
    assert res.exit_code == 0, res.output
    shown = re.findall(r"\br\d\d\b", res.stdout)
    assert shown[:2] == ["r39", "r38"] and len(shown) == TOP_PER_SUITE
    assert f"the best {TOP_PER_SUITE} of {n} runs: 15 more (--all shows every run)" in res.stdout
    every = _cli("results", "--store", str(tmp_path / "big"), "--all")
    assert len(re.findall(r"\br\d\d\b", every.stdout)) == n and "more" not in every.stdout
    exported = json.loads(_cli("results", "--store", str(tmp_path / "big"), "--format", "json").stdout)
    assert [d["name"] for d in exported][:2] == ["r39", "r38"] and len(exported) == n  # exports carry every run
