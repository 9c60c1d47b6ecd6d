"""experiments.toml: expansion rules, names, replicates, references and every validation error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lab.core.config import DROPOUT_SITES
from lab.experiments import (
    ExperimentsError,
    Problem,
    format_value,
    load_experiments,
    parse_run_ref,
)
from lab.toml_edit import load_document, save_document

REPO = Path(__file__).resolve().parent.parent

HEAD = """\
default_suite = "s"
[defaults]
n_layer = 2
max_iters = 10
"""


def write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(head + textwrap.dedent(body), encoding="utf-8")
    return path


def load(tmp_path: Path, body: str, head: str = HEAD):
    return load_experiments(write(tmp_path, body, head))


def runs_by_name(tmp_path: Path, body: str, suite: str = "s", head: str = HEAD):
    return {r.name: r for r in load(tmp_path, body, head).suites[suite].runs}


# -- paths -----------------------------------------------------------------------------------


def test_a_relative_data_path_is_relative_to_the_experiments_files_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # started from another folder: the file's folder still counts
    runs = runs_by_name(project, """
        [suites.s]
        runs = [{ name = "here", data = "corpus.txt" }, { name = "up", data = "../shared/c.txt" },
                { name = "named" }, { name = "home", data = "~/c.txt" }, { name = "abs", data = "/srv/c.txt" }]
        """)
    assert runs["here"].config.data == str(project / "corpus.txt")
    assert runs["up"].config.data == str(tmp_path / "shared" / "c.txt")
    assert [runs[n].config.data for n in ("named", "home", "abs")] == ["tinyshakespeare", "~/c.txt", "/srv/c.txt"]
    again = load_experiments(Path("../project/experiments.toml"))  # the file named by a relative path
    assert again.suites["s"].runs[0].config == runs["here"].config


def test_data_on_the_command_line_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    from lab.headless import override_specs

    specs = list(runs_by_name(tmp_path, '[suites.s]\nruns = [{ name = "a", data = "corpus.txt" }]\n').values())
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert override_specs(specs, None, "other.txt")[0].config.data == str(tmp_path / "cwd" / "other.txt")


# -- override order and the dropout shorthand ----------------------------------------------


def test_override_order_defaults_suite_entry_grid(tmp_path):
    head = HEAD + "lr = 0.001\nwarmup_iters = 7\n"
    runs = runs_by_name(tmp_path, """
        [suites.s]
        lr = 0.002
        min_lr = 0.0
        runs = [{ name = "plain" }, { name = "own", lr = 0.003 }]

        [suites.g]
        grid = { lr = [0.004] }
        lr = 0.002
        """, head=head)
    assert runs["plain"].config.lr == 0.002  # suite beats defaults
    assert runs["own"].config.lr == 0.003  # run entry beats suite
    assert runs["plain"].config.warmup_iters == 7  # defaults beat the built-in values
    assert runs["plain"].config.n_layer == 2
    grid = load(tmp_path, "", head=head.replace('"s"', '"g"') + """
[suites.g]
lr = 0.002
grid = { lr = [0.004] }
""").suites["g"].runs
    assert [r.config.lr for r in grid] == [0.004]  # grid point beats suite


def test_dropout_shorthand_expands_and_per_site_key_at_same_level_wins(tmp_path):
    run = runs_by_name(tmp_path, """
        [suites.s]
        dropout = 0.3
        attn_dropout = 0.0
        runs = [{ name = "a" }]
        """)["a"]
    assert run.config.attn_dropout == 0.0
    assert (run.config.embd_dropout, run.config.attn_out_dropout, run.config.mlp_dropout) == (0.3, 0.3, 0.3)


def test_dropout_shorthand_at_more_specific_level_beats_less_specific_per_site_key(tmp_path):
    runs = runs_by_name(tmp_path, """
        [suites.s]
        attn_dropout = 0.1
        dropout = 0.05
        runs = [
          { name = "short", dropout = 0.3 },
          { name = "site", mlp_dropout = 0.4 },
        ]
        """, head=HEAD + "embd_dropout = 0.15\n")
    short = runs["short"].config
    assert [getattr(short, s) for s in DROPOUT_SITES] == [0.3] * 4  # entry shorthand beats suite/defaults sites
    site = runs["site"].config
    # suite: dropout 0.05 then its own attn_dropout 0.1; defaults' embd_dropout is overridden by it
    assert (site.embd_dropout, site.attn_dropout, site.attn_out_dropout, site.mlp_dropout) == (0.05, 0.1, 0.05, 0.4)


def test_run_entry_and_grid_point_are_one_level(tmp_path):
    runs = load(tmp_path, """
        [suites.s]
        grid = { dropout = [0.1, 0.2] }
        runs = [{ name = "noattn", attn_dropout = 0.0 }]
        """).suites["s"].runs
    assert [r.name for r in runs] == ["noattn,dropout=0.1", "noattn,dropout=0.2"]
    assert [(r.config.attn_dropout, r.config.mlp_dropout) for r in runs] == [(0.0, 0.1), (0.0, 0.2)]


# -- skips -------------------------------------------------------------------------------------


def test_skips_table_replaces_inherited_table_whole(tmp_path):
    runs = runs_by_name(tmp_path, """
        [suites.s]
        skips = { 1 = 0.1, 2 = 0.5 }
        runs = [{ name = "inherit" }, { name = "replace", skips = { 2 = 0.25 } }]
        """)
    assert runs["inherit"].config.skips == ((1, 0.1), (2, 0.5))
    assert runs["replace"].config.skips == ((2, 0.25),)


def test_dotted_grid_key_changes_one_depth(tmp_path):
    runs = load(tmp_path, """
        [suites.s]
        skips = { 1 = 0.025, 2 = 0.5 }
        grid = { "skips.2" = [0.0, 0.99], "skips.4" = [0.2] }
        """).suites["s"].runs
    assert [r.name for r in runs] == ["skips.2=0,skips.4=0.2", "skips.2=0.99,skips.4=0.2"]
    assert [r.config.skips for r in runs] == [((1, 0.025), (2, 0.0), (4, 0.2)), ((1, 0.025), (2, 0.99), (4, 0.2))]


def test_dotted_key_in_run_entry_applies_after_its_skips_table(tmp_path):
    runs = runs_by_name(tmp_path, """
        [suites.s]
        skips = { 1 = 0.1 }
        runs = [{ name = "a", "skips.2" = 0.5 }, { name = "b", "skips.2" = 0.5, skips = { 4 = 0.3 } }]
        """)
    assert runs["a"].config.skips == ((1, 0.1), (2, 0.5))
    assert runs["b"].config.skips == ((2, 0.5), (4, 0.3))


def test_grid_dotted_key_on_run_entry_skips_table(tmp_path):
    runs = load(tmp_path, """
        [suites.s]
        runs = [{ name = "r1", skips = { 1 = 0.025 } }]
        grid = { "skips.2" = [0.99] }
        """).suites["s"].runs
    assert [(r.name, r.config.skips) for r in runs] == [("r1,skips.2=0.99", ((1, 0.025), (2, 0.99)))]


# -- grid x runs, names --------------------------------------------------------------------------


def test_grid_crossed_with_runs_in_file_order(tmp_path):
    runs = load(tmp_path, """
        [suites.s]
        runs = [{ name = "a", n_head = 2 }, { name = "b" }]
        grid = { dropout = [0.0, 0.1], "skips.2" = [0.5], n_layer = [1, 2] }
        """).suites["s"].runs
    names = [r.name for r in runs]
    assert len(names) == 2 * 2 * 1 * 2
    assert names[:4] == [
        "a,dropout=0,skips.2=0.5,n_layer=1",
        "a,dropout=0,skips.2=0.5,n_layer=2",
        "a,dropout=0.1,skips.2=0.5,n_layer=1",
        "a,dropout=0.1,skips.2=0.5,n_layer=2",
    ]
    assert names[4].startswith("b,")
    first = runs[0]
    assert (first.config.n_head, first.config.n_layer, first.config.mlp_dropout) == (2, 1, 0.0)
    assert first.base_name == first.name and first.run_key == "s/" + first.name


@pytest.mark.parametrize(
    "value, text",
    [(0.0, "0"), (0.99, "0.99"), (1e-05, "0.00001"), (0.025, "0.025"), (1e-3, "0.001"), (2.5, "2.5"),
     (1.0, "1"), (1e20, "100000000000000000000"), (16, "16"), (True, "true"), ("pre", "pre"),
     (0.1 + 0.2, "0.30000000000000004")],
)
def test_format_value_shortest_exact_decimal(value, text):
    assert format_value(value) == text


# -- replicates and references ---------------------------------------------------------------


def test_replicates_named_with_seed_most_specific_seeds_wins(tmp_path):
    exps = load(tmp_path, """
        [suites.s]
        seeds = [1, 2]
        runs = [{ name = "a" }, { name = "b", seeds = [7] }, { name = "one", seed = 9 }]
        references = { a = 1.5 }

        [suites.t]
        runs = [{ name = "c" }]

        [suites.u]
        seed = 5
        runs = [{ name = "d" }]
        """, head=HEAD + "seeds = [1337, 1338, 1339]\n")
    s = exps.suites["s"].runs
    assert [r.name for r in s] == ["a#1", "a#2", "b#7", "one"]
    assert [r.config.seed for r in s] == [1, 2, 7, 9]
    assert [r.base_name for r in s] == ["a", "a", "b", "one"]
    assert [r.reference for r in s] == [1.5, 1.5, None, None]  # a reference covers every replicate
    t = exps.suites["t"].runs
    assert [(r.name, r.config.seed) for r in t] == [("c#1337", 1337), ("c#1338", 1338), ("c#1339", 1339)]
    u = exps.suites["u"].runs  # a seed more specific than the seeds in force: one run
    assert [(r.name, r.config.seed) for r in u] == [("d", 5)]
    # replicates differ only in seed
    assert s[0].config.group_key() == s[1].config.group_key()


def test_references_match_generated_names(tmp_path):
    runs = runs_by_name(tmp_path, """
        [suites.s]
        grid = { "skips.1" = [0.0, 0.025] }
        references = { "skips.1=0" = 1.7, "skips.1=0.025" = 1.556 }
        """)
    assert runs["skips.1=0"].reference == 1.7
    assert runs["skips.1=0.025"].reference == 1.556


def test_select_only_and_run_refs(tmp_path):
    exps = load(tmp_path, """
        [suites.s]
        runs = [{ name = "skip1" }, { name = "skip2", seeds = [3, 4] }]

        [suites.other]
        runs = [{ name = "x" }]
        """)
    assert [r.name for r in exps.select(None)] == ["skip1", "skip2#3", "skip2#4"]
    assert [r.run_key for r in exps.select(["other", "s", "other"])][:2] == ["other/x", "s/skip1"]
    assert [r.name for r in exps.select(["s"], only="skip2")] == ["skip2#3", "skip2#4"]
    assert [r.name for r in exps.select(["s"], only="*#4")] == ["skip2#4"]
    with pytest.raises(ExperimentsError, match="no run matches"):
        exps.select(["s"], only="nope*")
    with pytest.raises(ExperimentsError, match="did you mean other"):
        exps.select(["othr"])
    assert parse_run_ref(exps, "s/skip2#3").config.seed == 3
    assert exps.get("other/x").name == "x"
    for ref, fragment in [("s", "expected SUITE/RUN"), ("nope/x", "no suite named 'nope'"),
                          ("s/skip3", "has no run .skip3.; did you mean .*skip1"), ("s/skip2", "has replicates; name one of: skip2#3, skip2#4")]:
        with pytest.raises(ExperimentsError, match=fragment):
            parse_run_ref(exps, ref)


# -- the shipped file --------------------------------------------------------------------------


def test_shipped_experiments_file():
    exps = load_experiments(REPO / "experiments.toml")
    assert exps.default_suite == "quick"
    counts = {name: len(suite.runs) for name, suite in exps.suites.items()}
    assert counts == {"quick": 2, "paper-attention": 3, "paper-skip1": 5, "paper-skip2": 5,
                      "paper-skip4": 4, "paper-replicated": 42, "paper-deep": 14, "paper-depth": 4}
    quick = {r.name: r.config for r in exps.suites["quick"].runs}
    assert quick["skip1"].skips == ((1, 0.025),) and quick["skip1+skip2"].skips == ((1, 0.025), (2, 0.99))
    assert all(c.n_layer == 2 and c.max_iters == 500 and c.eval_interval == 100 and c.eval_iters == 20 for c in quick.values())
    refs = {r.run_key: r.reference for r in exps.runs}
    assert refs["paper-attention/dropout=0"] == 1.8295 and refs["paper-attention/dropout=0.5"] == 1.7453
    assert refs["paper-skip1/skips.1=0.025"] == 1.5560 and refs["paper-skip1/skips.1=0.5"] == 2.8716
    assert refs["paper-skip2/skips.2=0"] == 1.5588 and refs["paper-skip2/skips.2=0.99"] == 1.5531
    assert refs["paper-skip4/skips.4=0.2"] == 1.5624
    for suite in ("paper-attention", "paper-skip1", "paper-skip2", "paper-skip4"):
        assert all(r.reference is not None and r.config.n_layer == 4 for r in exps.suites[suite].runs)
    assert all(r.config.max_iters == 500_000 for r in exps.suites["paper-attention"].runs)
    assert all(r.config.max_iters == 50_000 for r in exps.suites["paper-skip2"].runs)
    assert [r.config.n_layer for r in exps.suites["paper-depth"].runs] == [2, 4, 8, 16]
    deep = exps.suites["paper-deep"].runs
    assert all(r.config.n_layer == 16 and r.reference is None for r in deep)
    assert exps.get("paper-skip4/skips.4=0.99").config.skips == ((1, 0.025), (2, 0.99), (4, 0.99))
    assert exps.get("paper-attention/dropout=0.2").config.skips == ((1, 0.0),)


# -- documents ---------------------------------------------------------------------------------


def test_save_document_keeps_comments_and_is_atomic(tmp_path):
    path = write(tmp_path, """
        # my favourite suite
        [suites.s]
        dropout = 0.1   # keep this comment
        runs = [{ name = "a" }]
        """)
    original = path.read_text()
    doc = load_document(path)
    save_document(path, doc)
    assert path.read_text() == original  # untouched document: byte-identical
    doc["suites"]["s"]["dropout"] = 0.3
    save_document(path, doc)
    text = path.read_text()
    assert "# my favourite suite" in text and "# keep this comment" in text and "dropout = 0.3" in text
    assert [p.name for p in tmp_path.iterdir()] == ["experiments.toml"]  # no temp file left behind
    assert load_experiments(path).suites["s"].runs[0].config.mlp_dropout == 0.3


# -- validation ------------------------------------------------------------------------------

S = "[suites.s]\n"  # most cases are one suite named s
R = 'runs = [{ name = "a" }]\n'

# (id, text after HEAD or whole file, expected key path, message fragment). A line holding
# "# <-" is where the problem must be reported; without a marker the line must be unknown.
CASES = [
    ("syntax", 'default_suite = "s"\n[suites.s  # <-\n', "", "TOML syntax error"),
    ("unknown-suite-key", S + R + "dropuot = 0.1  # <-\n", "suites.s.dropuot", "did you mean 'dropout'"),
    ("unknown-defaults-key", "n_layers = 3  # <-\n" + S + R, "defaults.n_layers", "did you mean 'n_layer'"),
    ("unknown-top-key", "[suite.s]  # <-\n" + R + S + R, "suite", "did you mean 'suites'"),
    ("unknown-entry-key", S + 'runs = [{ nam = "a" }]  # <-\n', "suites.s.runs[0].nam", "did you mean 'name'"),
    ("entry-without-name", S + 'runs = [{ dropout = 0.1 }]  # <-\n', "suites.s.runs[0]", "run entry has no name"),
    ("unknown-entry-setting", S + 'runs = [{ name = "a", n_haed = 2 }]  # <-\n', "suites.s.runs[0].n_haed", "did you mean 'n_head'"),
    ("wrong-type-int", S + R + 'n_layer = "4"  # <-\n', "suites.s.n_layer", "n_layer must be an integer"),
    ("wrong-type-float-int", S + R + "n_head = 4.0  # <-\n", "suites.s.n_head", "must be an integer"),
    ("wrong-type-bool", S + R + "bias = 1  # <-\n", "suites.s.bias", "bias must be true or false"),
    ("wrong-choice", S + R + 'norm = "post"  # <-\n', "suites.s.norm", 'norm must be one of "stream", "pre"'),
    ("rate-out-of-range", S + 'runs = [{ name = "a", dropout = 1.5 }]  # <-\n', "suites.s.runs[0].dropout", "must be in [0, 1)"),
    ("site-rate-one", S + R + "attn_dropout = 1.0  # <-\n", "suites.s.attn_dropout", "must be in [0, 1)"),
    ("negative-rate", S + R + "mlp_dropout = -0.1  # <-\n", "suites.s.mlp_dropout", "must be in [0, 1)"),
    ("skip-rate-above-one", S + R + "skips = { 1 = 1.5 }  # <-\n", "suites.s.skips.1", "outside [0, 1]"),
    ("skip-rate-one-inverted", S + R + 'skip_dropout = "inverted"\nskips = { 1 = 1.0 }  # <-\n', "suites.s.skips.1", 'only allowed with skip_dropout = "paper"'),
    ("n-embd-n-head", S + R + "n_embd = 130  # <-\n", "suites.s.n_embd", "not divisible by n_head"),
    ("n-head-blamed", S + 'runs = [{ name = "a", n_head = 3 }]  # <-\n', "suites.s.runs[0].n_head", "not divisible by n_head = 3"),
    ("skip-depth-too-large", S + R + "skips = { 1 = 0.0, 8 = 0.1 }  # <-\n", "suites.s.skips.8", "spans more than the 4 sub-layers"),
    ("skip-depth-vs-grid-depth", S + "skips = { 4 = 0.1 }\ngrid = { n_layer = [1, 2] }  # <-\n", "suites.s.grid.n_layer[0]", "use a depth <= 2"),
    ("skip-depth-not-integer", S + R + "skips = { a = 0.1 }  # <-\n", "suites.s.skips.a", "must be a positive integer"),
    ("skip-depth-zero", S + R + "skips = { 0 = 0.1 }  # <-\n", "suites.s.skips.0", "must be a positive integer"),
    ("skip-depth-grid-key", S + 'grid = { "skips.x" = [0.1] }  # <-\n', 'suites.s.grid."skips.x"[0]', "skip depth 'x' must be a positive integer"),
    ("skips-not-table", S + R + "skips = 0.1  # <-\n", "suites.s.skips", "skips must be a table"),
    ("duplicate-names", S + 'runs = [\n { name = "a" },\n { name = "a" },  # <-\n]\n', "suites.s.runs[1].name", "duplicate run name 'a'"),
    ("duplicate-grid-values", S + "grid = { dropout = [0.1, 0.1] }  # <-\n", "suites.s.grid", "listed twice"),
    ("empty-grid", S + "grid = {}  # <-\n", "suites.s.grid", "grid is empty"),
    ("empty-grid-values", S + "grid = { dropout = [] }  # <-\n", "suites.s.grid.dropout", "has no values"),
    ("grid-values-not-list", S + "grid = { dropout = 0.1 }  # <-\n", "suites.s.grid.dropout", "grid values must be a list"),
    ("unknown-grid-key", S + "grid = { dropot = [0.1] }  # <-\n", "suites.s.grid.dropot", "did you mean 'dropout'"),
    ("grid-seeds", S + "grid = { seeds = [1, 2] }  # <-\n", "suites.s.grid.seeds", "seeds is not a grid key"),
    ("grid-entry-conflict", S + 'runs = [{ name = "a", dropout = 0.1 }]  # <-\ngrid = { dropout = [0.2] }\n', "suites.s.runs[0].dropout", "also varied by the grid"),
    ("grid-bad-value", S + 'grid = { dropout = [0.1,\n  2.0] }  # <-\n', "suites.s.grid.dropout[1]", "dropout = 2.0 must be in [0, 1)"),
    ("unmatched-reference", S + 'grid = { "skips.2" = [0.0] }\nreferences = { "skips.2=0.0" = 1.5 }  # <-\n', 'suites.s.references."skips.2=0.0"', "matches no run in this suite; did you mean 'skips.2=0'"),
    ("reference-not-number", S + R + 'references = { a = "1.5" }  # <-\n', "suites.s.references.a", "reference must be a number"),
    ("missing-default-suite", "", "default_suite", "default_suite is missing"),
    ("unknown-default-suite", "", "default_suite", "no suite named 'quik'; did you mean quick"),
    ("unsafe-dotdot", S + 'runs = [{ name = "../x" }]  # <-\n', "suites.s.runs[0].name", "path separator"),
    ("unsafe-absolute", S + 'runs = [{ name = "/abs" }]  # <-\n', "suites.s.runs[0].name", "path separator"),
    ("unsafe-backslash", S + 'runs = [{ name = "a\\\\b" }]  # <-\n', "suites.s.runs[0].name", "path separator"),
    ("unsafe-nul", S + 'runs = [{ name = "a\\u0000b" }]  # <-\n', "suites.s.runs[0].name", "control characters"),
    ("unsafe-dot", S + 'runs = [{ name = ".hidden" }]  # <-\n', "suites.s.runs[0].name", "starts with '.'"),
    ("unsafe-hash", S + 'runs = [{ name = "a#1" }]  # <-\n', "suites.s.runs[0].name", "reserved for replicate seeds"),
    ("empty-name", S + 'runs = [{ name = "" }]  # <-\n', "suites.s.runs[0].name", "must not be empty"),
    ("unsafe-grid-name", S + 'grid = { data = ["a/b.txt"] }  # <-\n', "suites.s.grid", "path separator"),
    ("unsafe-suite-name", '[suites.".x"]  # <-\n' + R + S + R, 'suites.".x"', "suite name '.x' starts with '.'"),
    ("suite-no-runs", "[suites.s]  # <-\nn_layer = 2\n", "suites.s", "has no runs"),
    ("runs-empty", S + "runs = []  # <-\n", "suites.s.runs", "non-empty list"),
    ("run-not-table", S + 'runs = ["a"]  # <-\n', "suites.s.runs[0]", "each run must be a table"),
    ("seeds-empty", S + R + "seeds = []  # <-\n", "suites.s.seeds", "non-empty list"),
    ("seeds-duplicate", S + R + "seeds = [1,\n 1]  # <-\n", "suites.s.seeds[1]", "listed twice"),
    ("seeds-negative", S + 'runs = [{ name = "a", seeds = [-1] }]  # <-\n', "suites.s.runs[0].seeds[0]", "seed = -1 must be in [0, 9223372036854775807]"),
    ("seed-and-seeds", S + R + "seeds = [1, 2]\nseed = 3  # <-\n", "suites.s.seed", "seed and seeds are both set"),
    ("min-lr-above-lr", S + R + "min_lr = 0.1  # <-\n", "suites.s.min_lr", "min_lr = 0.1 is above lr"),
    ("description-type", S + R + "description = 3  # <-\n", "suites.s.description", "description must be a string"),
    ("no-suites", "", "suites", "no suites"),
    ("top-level-setting", "[suites.s]\n" + R, "n_layer", "not at the top level"),
    ("array-of-tables", S + "[[suites.s.runs]]\nname = \"a\"\n[[suites.s.runs]]\nname = \"b\"\ndropout = 2.0  # <-\n", "suites.s.runs[1].dropout", "must be in [0, 1)"),
]

HEADS = {
    "syntax": "",
    "missing-default-suite": "[defaults]\nn_layer = 2\n[suites.s]\n" + R,
    "unknown-default-suite": 'default_suite = "quik"  # <-\n[suites.quick]\n' + R,
    "no-suites": 'default_suite = "s"\n',
    "top-level-setting": 'default_suite = "s"\nn_layer = 2  # <-\n',
}


@pytest.mark.parametrize("case_id, body, key, fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_reports_problem(tmp_path, case_id, body, key, fragment):
    path = write(tmp_path, body, head=HEADS.get(case_id, HEAD))
    with pytest.raises(ExperimentsError) as info:
        load_experiments(path)
    problems = info.value.problems
    matching = [p for p in problems if p.key == key and fragment in p.message]
    assert matching, "\n".join(str(p) for p in problems)
    assert len(problems) == 1, "one mistake should give one message:\n" + "\n".join(str(p) for p in problems)
    lines = path.read_text().splitlines()
    marked = [i for i, line in enumerate(lines, 1) if "# <-" in line]
    assert matching[0].line == (marked[0] if marked else None)
    assert matching[0].file == str(path)
    assert str(path) in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
        n_head = 3
        [suites.s]
        dropuot = 0.1
        runs = [{ name = "a", dropout = 2.0 }, { name = "a" }, { name = "/x" }]
        [suites.t]
        grid = { dropout = [] }
        references = { zz = 1.0 }
        [suites.u]
        grid = { lr = [0.1, 0.2] }
        """)
    with pytest.raises(ExperimentsError) as info:
        load_experiments(path)
    keys = [p.key for p in info.value.problems]
    assert set(keys) >= {"defaults.n_head", "suites.s.dropuot", "suites.s.runs[0].dropout",
                         "suites.s.runs[1].name", "suites.s.runs[2].name", "suites.t.grid.dropout"}
    # n_head = 3 in [defaults] breaks every run, but is one message naming a few of them
    n_head = [p for p in info.value.problems if p.key == "defaults.n_head"]
    assert len(n_head) == 1 and "'u/lr=0.1', 'u/lr=0.2'" in n_head[0].message
    lines = [p.line for p in info.value.problems]
    assert lines == sorted(lines, key=lambda n: (n is None, n or 0))
    assert len(str(info.value).splitlines()) == len(info.value.problems)


def test_unknown_keys_and_bad_settings_do_not_hide_unmatched_references(tmp_path):
    """A typo in one place must not silence the file's other problems (validate lists them all)."""
    path = write(tmp_path, """
        n_layr = 3
        [suites.s]
        n_head = 3
        runs = [{ name = "a", n_layr = 2 }, { name = "b", dropout = 1.5 }]
        references = { "a" = 1.5, "c" = 1.6 }
        [suites.t]
        grid = { dropot = [0.1] }
        references = { "zz" = 1.0 }
        [suites.v]
        runs = [{ name = "a" }, { nam = "x" }]
        references = { "zz" = 1.0 }
        """)
    with pytest.raises(ExperimentsError) as info:
        load_experiments(path)
    keys = [p.key for p in info.value.problems]
    assert set(keys) == {"defaults.n_layr", "suites.s.n_head", "suites.s.runs[0].n_layr",
                         "suites.s.runs[1].dropout", "suites.s.references.c", "suites.t.grid.dropot",
                         "suites.v.runs[1].nam"}
    # runs whose names are unknown (a misspelt grid key, an entry without a name) leave their
    # suite's references unjudged rather than wrongly unmatched
    assert "run names are: a, b" in next(p.message for p in info.value.problems if p.key == "suites.s.references.c")


def test_problem_str_and_missing_file(tmp_path):
    assert str(Problem("f.toml", 3, "suites.x.dropout", "bad")) == "f.toml:3: suites.x.dropout: bad"
    assert str(Problem("f.toml", None, "suites.x", "bad")) == "f.toml: suites.x: bad"
    assert str(Problem("f.toml", 2, "", "syntax")) == "f.toml:2: syntax"
    with pytest.raises(ExperimentsError, match="file not found"):
        load_experiments(tmp_path / "nope.toml")


# -- issue 14: claims and tolerance --------------------------------------------------------------


def test_claims_and_tolerance_are_read(tmp_path):
    exps = load(tmp_path, """
        [suites.s]
        tolerance = 0.05
        grid = { dropout = [0.0, 0.2] }
        seeds = [1, 2]
        claims = [ { better = "dropout=0.2", than = "dropout=0" },
                   { better = "dropout=0", than = "t/x", metric = "final_val" } ]
        [suites.t]
        runs = [{ name = "x" }]
        """)
    s = exps.suites["s"]
    assert s.tolerance == 0.05 and exps.suites["t"].tolerance == 0.03
    assert [(c.better, c.than, c.metric) for c in s.claims] == [
        ("dropout=0.2", "dropout=0", "exact_val"), ("dropout=0", "t/x", "final_val")]
    assert s.claims[1].refers_to("s") == (("s", "dropout=0"), ("t", "x"))


def _problems(tmp_path, body: str) -> list[str]:
    with pytest.raises(ExperimentsError) as exc:
        load(tmp_path, body)
    return [str(p) for p in exc.value.problems]


def test_claim_problems_are_one_line_each_with_a_fix(tmp_path):
    problems = _problems(tmp_path, """
        [suites.s]
        tolerance = -0.1
        grid = { dropout = [0.0, 0.2] }
        claims = [ { better = "dropout=0.3", than = "dropout=0" },
                   { better = "dropout=0", than = "nope/x" },
                   { better = "dropout=0", than = "t/y" },
                   { better = "dropout=0", than = "dropout=0" },
                   { better = "dropout=0", than = "dropout=0.2", metric = "loss", by = 1 },
                   { better = "dropout=0#1", than = "dropout=0.2" },
                   "x>y" ]
        [suites.t]
        runs = [{ name = "x" }]
        """)
    text = "\n".join(problems)
    assert all("\n" not in p for p in problems)
    assert "suites.s.tolerance: tolerance must be a non-negative number" in text
    assert "suites.s.claims[0].better: claim names 'dropout=0.3', which matches no run in suite 's'; did you mean 'dropout=0.2'?" in text
    assert "suites.s.claims[1].than: claim names 'nope/x', but there is no suite named 'nope'" in text
    assert "suites.s.claims[2].than: claim names 't/y', which matches no run in suite 't'; run names are: x" in text
    assert "suites.s.claims[3].than: a claim compares two runs" in text
    assert "suites.s.claims[4].metric: metric must be one of exact_val, final_val, best_val" in text
    assert "suites.s.claims[4].by: unknown key 'by' in a claim" in text
    assert "suites.s.claims[5].better: claim names the replicate 'dropout=0#1'; name the run without its seed" in text
    assert "suites.s.claims[6]: each claim must be a table" in text
    assert len(problems) == 9


def test_the_form_validator_uses_the_same_rules(tmp_path):
    from lab.experiments_fields import claim_problems, field_problem

    assert field_problem("tolerance", "-1").startswith("tolerance must be a non-negative number")
    assert field_problem("tolerance", "0.05") is None
    assert claim_problems({"better": "a", "than": "a"}) == [("than", "a claim compares two runs; better and than both name 'a'")]


def test_shipped_claims():
    exps = load_experiments(REPO / "experiments.toml")
    claims = {name: [(c.better, c.than) for c in suite.claims] for name, suite in exps.suites.items()}
    assert claims["paper-attention"] == [("dropout=0.2", "dropout=0"), ("dropout=0.2", "dropout=0.5")]
    assert claims["paper-skip1"][0] == ("skips.1=0.025", "skips.1=0.05") and len(claims["paper-skip1"]) == 4
    assert ("skips.2=0.99", "skips.2=0") in claims["paper-skip2"]
    assert ("skips.2=0.99", "paper-skip1/skips.1=0.025") in claims["paper-skip2"]
    rep = exps.suites["paper-replicated"]
    assert len(claims["paper-replicated"]) == 7
    bases = list(dict.fromkeys(r.base_name for r in rep.runs))
    assert len(bases) == 14 and all(r.config.n_layer == 4 and r.config.max_iters == 50_000 for r in rep.runs)
    assert sorted({r.config.seed for r in rep.runs}) == [1337, 1338, 1339]
    assert len(rep.references) == 14
    # the same settings as the single-seed paper suites, run for run
    single = {r.name: r.config for s in ("paper-skip1", "paper-skip2", "paper-skip4") for r in exps.suites[s].runs}
    for r in rep.runs:
        assert r.config.to_dict() == {**single[r.base_name].to_dict(), "seed": r.config.seed}
