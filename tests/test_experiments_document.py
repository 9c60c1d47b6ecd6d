"""The Experiments screen's document model, without Textual (issue 10, faults 1, 2, 3 and 5).

The main test is property-style: at every level of a file written several ways ([defaults],
a suite table, an inline run entry, a [[suites.X.runs]] table; keys already written or not;
comments around), every form field is typed key by key, cleared, typed again and cleared,
through the same gate the form uses (`field_problem`: only text that is valid on its own is
written), and random keystrokes are thrown at every field without the gate. After every step
nothing has raised, the document dumps and parses back to the same text, a standard TOML
parser reads it, and the model re-checks it; after every clear the level inherits the value
again.
"""

from __future__ import annotations

import random
import sys
import textwrap
from pathlib import Path

import pytest
import tomlkit

from lab.core.config import field_spec
from lab.experiments import load_experiments, resolve_settings
from lab.experiments_document import ExperimentsDocument, GridChange, Target, recovery_path
from lab.experiments_fields import FORM_SETTINGS, field_problem, next_free_depth, parse_values, skip_row_problems

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TEXT = textwrap.dedent("""\
    # comments everywhere: each must survive every edit
    default_suite = "quick"

    [defaults]              # every run starts from these
    n_layer = 2
    n_head = 4
    n_embd = 64             # width
    block_size = 32
    batch_size = 4
    dropout = 0.1           # shorthand
    skips = { 1 = 0.0 }
    max_iters = 100
    lr = 1e-3
    min_lr = 1e-4
    eval_interval = 50
    eval_iters = 5

    # the quick suite
    [suites.quick]
    description = "written keys"
    n_layer = 2             # the key the issue cleared
    max_iters = 50          # quick: fewer steps
    runs = [
      # the baseline
      { name = "base" },
      { name = "skip2", skips = { 1 = 0.025, 2 = 0.5 }, lr = 0.002 },   # two paths
    ]
    references = { base = 1.5 }

    # a suite that writes nothing but its run tables
    [suites.tables]

    [[suites.tables.runs]]  # a run as a table
    name = "t1"
    seed = 3

    [[suites.tables.runs]]
    name = "t2"
    """)

#: A value each field can take on its own and together with the file's other settings.
TYPED = {
    "n_layer": "3", "n_head": "2", "n_embd": "32", "block_size": "16", "batch_size": "2",
    "dropout": "0.3", "embd_dropout": "0.05", "attn_dropout": "0.2", "attn_out_dropout": "0.15",
    "mlp_dropout": "0.25", "max_iters": "40", "lr": "0.002", "min_lr": "0.00005",
    "warmup_iters": "5", "eval_interval": "10", "eval_iters": "3", "seed": "7",
}

#: [defaults]; a suite with settings written and one with none; an inline run entry with
#: settings; a run written as a [[suites.X.runs]] table.
LEVELS = [
    Target("defaults"),
    Target("suite", "quick"),
    Target("suite", "tables"),
    Target("run", "quick", 1),
    Target("run", "tables", 0),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "experiments.toml"
    p.write_text(TEXT, encoding="utf-8")
    return p


def opened(path: Path) -> ExperimentsDocument:
    model = ExperimentsDocument(path)
    model.load()
    model.check()
    assert model.problems == [] and model.doc is not None
    return model


def assert_sound(model: ExperimentsDocument, key: str | None = None) -> None:
    """The document dumps and parses back to itself, a standard parser reads it, it re-checks,
    and every comment is kept (but the one on the line of `key`, which clearing removes)."""
    text = tomlkit.dumps(model.doc)
    again = tomlkit.parse(text)
    assert tomlkit.dumps(again) == text
    assert again.unwrap() == model.doc.unwrap()
    tomllib.loads(text)
    model.check()
    for line in TEXT.splitlines():
        if "#" in line and not (key and line.startswith(f"{key} ")):
            assert line.split("#", 1)[1].strip() in text


def type_like_the_form(model: ExperimentsDocument, t: Target, key: str, text: str) -> None:
    """What the screen does with a field's text: write it when it is valid on its own."""
    if field_problem(key, text) is None:
        model.set_setting(t, key, text)
    assert_sound(model, key)


def inherited_value(model: ExperimentsDocument, t: Target, key: str):
    """What the level gets for `key` from below it (the original file's levels)."""
    below, own = model.levels(t)
    return resolve_settings(*below, {k: v for k, v in own.items() if k != key})


def test_typing_clearing_and_retyping_every_field_at_every_level(path: Path) -> None:
    for t in LEVELS:
        for key in FORM_SETTINGS:
            model = opened(path)
            expected = inherited_value(opened(path), t, key)  # what clearing must give back
            written = key in model.levels(t)[1]
            spec = field_spec(key)
            choices = spec.choices if spec is not None and spec.kind == "choice" else ()
            texts = [choices[-1], "", choices[0], ""] if choices else None
            if texts is None:
                typed = TYPED[key]
                texts = [typed[:i] for i in range(1, len(typed) + 1)]  # typed key by key
                texts += [typed[:i] for i in range(len(typed) - 1, -1, -1)]  # backspaced away
                texts += [typed, "", typed, typed[:-1], ""]  # retyped, cleared, again
            for text in texts:
                type_like_the_form(model, t, key, text)
                if text == "":
                    assert key not in model.levels(t)[1], (t, key)  # removed at this level ...
                    assert model.resolved(t) == expected, (t, key)  # ... so it inherits again
                    assert model.problems == [], (t, key, model.problems)
                elif text == TYPED.get(key) or text in choices:  # a whole value, valid with the rest
                    assert model.problems == [], (t, key, model.problems)
            if not written:  # typed and cleared: the file is as it was, byte for byte
                assert tomlkit.dumps(model.doc) == TEXT, (t, key)
            # and whatever the last step, the file saves and reads back as validate reads it
            model.save()
            load_experiments(path)
            path.write_text(TEXT, encoding="utf-8")


def test_the_issue_sequence_on_the_suite_level_does_not_crash(path: Path) -> None:
    """Issue 10, fault 1: n_layer at suite `quick`: backspace, 3, backspace (KeyError before)."""
    model = opened(path)
    t = Target("suite", "quick")
    for text in ("", "3", ""):
        model.set_setting(t, "n_layer", text)
        assert_sound(model, "n_layer")
    assert "n_layer" not in model.levels(t)[1]
    assert model.resolved(Target("run", "quick", 0))["n_layer"] == 2  # from [defaults]


def test_random_keystrokes_in_every_field_never_crash(path: Path) -> None:
    """Text no form would let through, written anyway: the model must not raise either."""
    rng = random.Random(10)
    levels = [Target("defaults"), Target("suite", "quick"), Target("run", "quick", 0), Target("run", "tables", 1)]
    alphabet = list("0123456789.-+eE_ x\"'=#[]{},\\") + ["nan", "inf", "true", "1e400", "\n"]
    for t in levels:
        model = opened(path)
        for key in FORM_SETTINGS + ("name", "reference", "skips"):
            text = ""
            for _ in range(6):
                if text and rng.random() < 0.3:
                    text = text[:-1]  # backspace
                else:
                    text += rng.choice(alphabet)
                if key == "skips":
                    model.set_skips(t, [(text, "0.1")] if text else [])
                elif key in ("name", "reference"):
                    if t.kind != "run":
                        continue
                    if key == "name":
                        model.rename(t, text.strip())
                    else:
                        model.set_reference(t, text)
                else:
                    model.set_setting(t, key, text)
                text_now = tomlkit.dumps(model.doc)
                assert tomlkit.dumps(tomlkit.parse(text_now)) == text_now
                model.check()
            model.set_setting(t, key, "") if key in FORM_SETTINGS else None


def test_missing_defaults_table_is_added_when_a_default_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text('default_suite = "s"\n\n[suites.s]\nruns = [ { name = "a" } ]\n', encoding="utf-8")
    model = opened(path)
    t = Target("defaults")
    assert model.editable(t)
    for text in ("3", "", "4", ""):
        model.set_setting(t, "n_layer", text)
        text_now = tomlkit.dumps(model.doc)
        assert tomlkit.parse(text_now).unwrap() == model.doc.unwrap()
        model.check()
        assert model.problems == []
    assert "n_layer" not in model.levels(t)[1]


# -- fault 3: the skip rows are what the file says ---------------------------------------------


def test_skip_rows_add_the_next_free_depth_and_refuse_duplicates(path: Path) -> None:
    model = opened(path)
    t = Target("suite", "quick")
    inherited = model.inherited(t)[1]
    assert inherited == [("1", "0")]
    rows = inherited + [(str(next_free_depth(inherited)), "0")]  # what "+ add skip path" shows
    assert rows == [("1", "0"), ("2", "0")]
    model.set_skips(t, rows)
    assert model.table(t.path)["skips"].unwrap() == {"1": 0.0, "2": 0.0}

    rows = [("2", "0"), ("2", "0")]  # the first row edited to depth 2: a duplicate
    problems = skip_row_problems(rows)
    assert problems[0] is None and "skip depth 2 is listed twice" in problems[1]
    model.set_skips(t, rows)  # not written: the file keeps what it said
    assert model.table(t.path)["skips"].unwrap() == {"1": 0.0, "2": 0.0}
    assert any("listed twice" in p for p in model.blocking_problems(t, {"skips": problems[1]}))

    model.set_skips(t, [("2", "0.5")])
    model.save()
    assert model.skip_rows(t) == [("2", "0.5")]
    assert load_experiments(path).suites["quick"].runs[0].config.skips == ((2, 0.5),)

    assert skip_row_problems([("", "")])[0]  # a blank row says nothing the file can hold
    assert "give skip depth 3 a rate" in skip_row_problems([("3", "")])[0]
    assert next_free_depth([("1", "0"), ("3", "0"), ("x", "")]) == 2


# -- fault 5: a new run, a rename ----------------------------------------------------------------


def test_new_run_and_rename_follow_through_title_and_reference(path: Path) -> None:
    model = opened(path)
    t = model.new_run(Target("run", "quick", 0))
    assert t == Target("run", "quick", 1)
    assert model.entry_name("quick", 1) == "run"
    model.rename(Target("run", "quick", 0), "baseline")
    assert ("quick/baseline", "bold") in model.title(Target("run", "quick", 0))
    assert model.table(("suites", "quick", "references")).unwrap() == {"baseline": 1.5}
    model.check()
    assert model.problems == []


def test_grid_change_previews_and_applies(path: Path) -> None:
    model = opened(path)
    names, problems, _ = model.grid_preview("quick", GridChange("seed", [1, 2]))
    assert problems == [] and names == ["base,seed=1", "base,seed=2", "skip2,seed=1", "skip2,seed=2"]
    assert model.apply_grid("quick", GridChange("seed", [1, 2])) == ["base"]  # its reference: no run is "base" now
    model.check()
    assert model.run_count("quick") == 4


# -- fault 2: the recovery copy ------------------------------------------------------------------


def test_unsaved_edits_are_kept_in_a_recovery_copy_until_saved_or_discarded(path: Path) -> None:
    copy = recovery_path(path)
    assert copy == path.parent / ".experiments.toml.unsaved"
    model = opened(path)
    assert not copy.exists()
    model.set_setting(Target("defaults"), "seed", "9")
    model.check()
    assert copy.read_text(encoding="utf-8") == tomlkit.dumps(model.doc)
    model.set_setting(Target("defaults"), "seed", "")
    model.check()
    assert not copy.exists()  # back to the file: nothing unsaved

    model.set_setting(Target("defaults"), "seed", "9")
    model.check()
    edited = tomlkit.dumps(model.doc)

    later = ExperimentsDocument(path)  # the next start
    later.load()
    assert later.recovered == edited and not later.dirty
    later.check()
    assert copy.exists()  # kept while the question is open
    assert later.restore_recovered()
    assert later.dirty and tomlkit.dumps(later.doc) == edited
    later.save()
    assert not copy.exists() and "seed = 9" in path.read_text(encoding="utf-8")

    model = opened(path)
    model.set_setting(Target("defaults"), "seed", "11")
    model.check()
    again = ExperimentsDocument(path)
    again.load()
    again.discard_recovered()
    assert not copy.exists() and not again.dirty
    model.revert()
    assert not model.dirty and not copy.exists()


def test_random_grid_values_preview_without_crashing(path: Path) -> None:
    """The grid builder previews whatever is typed (read by `parse_values`, as the builder reads
    it): problems come back as messages."""
    rng = random.Random(11)
    model = opened(path)
    keys = model.grid_keys("quick")
    for _ in range(25):
        key = rng.choice(keys)
        text = "".join(rng.choice("0123456789., -eax\"") for _ in range(rng.randint(1, 8)))
        change = GridChange(key, parse_values(key, text), rng.random() < 0.5)
        names, problems, _ = model.grid_preview("quick", change)
        assert bool(names) != bool(problems) or not change.values
    assert tomlkit.dumps(model.doc) == TEXT  # a preview never touches the document


def test_the_model_needs_no_textual() -> None:
    import subprocess

    code = "import sys, lab.experiments_document, lab.experiments_fields; sys.exit('textual' in sys.modules or 'rich' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


BROKEN = """\
default_suite = "s"
[defaults]
n_layer = "two"
n_head = -1
dropout = "x"
skips = { a = "b", 0 = 2 }
lr = "fast"
norm = 3
seeds = "x"
[suites.s]
skips = 5
max_iters = 1.5
grid = { lr = "x", "skips.z" = [1], n_layer = [] }
references = { r = "y" }
runs = [ { name = 3, skips = { 1 = [] } }, { seed = "q" }, "not a table" ]
[suites.t]
runs = 3
grid = [1]
"""


def test_a_file_the_rules_refuse_is_shown_and_edited_without_crashing(tmp_path: Path) -> None:
    """Values written by hand that `validate` refuses (wrong kinds, a run entry that is not a
    table, `runs` that is not a list) are shown as problems, never raised."""
    path = tmp_path / "experiments.toml"
    path.write_text(BROKEN, encoding="utf-8")
    model = ExperimentsDocument(path)
    model.load()
    model.check()
    assert model.problems
    runs = [Target("run", "s", i) for i in range(3)]
    for t in [Target("defaults"), Target("suite", "s"), Target("suite", "t"), *runs]:
        data = model.form_data(t)
        assert data.read_only == (t == Target("run", "s", 2))  # not a table: read-only, says why
        model.blocking_problems(t, {})
        if not model.editable(t):
            continue
        for key in FORM_SETTINGS:
            for text in ("1", ""):
                model.set_setting(t, key, text)
        model.set_skips(t, [("1", "0.1")])
        model.set_skips(t, [])
        if t.kind == "run":
            model.rename(t, "renamed")
            model.set_reference(t, "1.5")
            model.set_reference(t, "")
        model.check()
    assert "not a list" in model.why_no_new_run("t")
    model.grid_keys("s")
    model.suite_summaries()


# -- suites (issue 11, item 8): new, rename, delete ----------------------------------------------


def test_a_new_suite_is_valid_at_once_with_one_run_entry(path: Path) -> None:
    model = opened(path)
    assert model.suite_name_problem("quick") == "there is already a suite named 'quick'; pick another name"
    assert "must not be empty" in model.suite_name_problem("")
    assert "path separator" in model.suite_name_problem("a/b")
    name = model.unique_suite_name()
    assert name == "suite" and model.suite_name_problem(name) is None
    target = model.new_suite("ablation")
    assert target == Target("run", "ablation", 0)
    assert_sound(model)
    assert model.problems == []  # `validate` accepts the file as it is now
    assert [s.name for s in model.suite_summaries()][-1] == "ablation"
    assert model.target_specs(target)[0][0].run_key == "ablation/run"
    model.save()
    assert load_experiments(path).suites["ablation"].runs[0].name == "run"


def test_a_new_suite_in_a_file_without_suites_becomes_the_default(tmp_path: Path) -> None:
    p = tmp_path / "experiments.toml"
    p.write_text("# only defaults so far\n[defaults]\nn_layer = 2\n", encoding="utf-8")
    model = ExperimentsDocument(p)
    model.load()
    model.new_suite("first")
    model.check()
    assert model.problems == []
    assert model.doc["default_suite"] == "first"
    assert tomlkit.dumps(model.doc).startswith('default_suite = "first"\n# only defaults so far')


def test_renaming_a_suite_keeps_its_place_comments_and_tables_and_moves_the_default(path: Path) -> None:
    model = opened(path)
    assert model.suite_name_problem("quick", current="quick") is None  # its own name is fine
    assert model.suite_name_problem("tables", current="quick") is not None
    assert model.rename_suite("quick", "fast") == Target("suite", "fast")
    assert model.rename_suite("tables", "as tables") == Target("suite", "as tables")  # quoted in headers
    assert_sound(model)
    assert model.problems == []
    text = tomlkit.dumps(model.doc)
    assert 'default_suite = "fast"' in text
    assert '[suites.fast]\ndescription = "written keys"\nn_layer = 2             # the key the issue cleared' in text
    assert '[[suites."as tables".runs]]  # a run as a table' in text
    assert [s.name for s in model.suite_summaries()] == ["fast", "as tables"]  # in file order
    assert model.entry_name("fast", 1) == "skip2" and model.resolved(Target("run", "fast", 1))["lr"] == 0.002
    model.save()
    experiments = load_experiments(path)
    assert experiments.default_suite == "fast"
    assert [r.name for r in experiments.suites["as tables"].runs] == ["t1", "t2"]
    assert experiments.suites["fast"].runs[0].reference == 1.5  # references stay with the suite


def test_deleting_suites_moves_the_default_and_refuses_the_last_one(path: Path) -> None:
    model = opened(path)
    assert model.why_no_delete_suite("quick") is None
    target, new_default = model.delete_suite("quick")  # the default suite
    assert (target, new_default) == (Target("suite", "tables"), "tables")
    text = tomlkit.dumps(model.doc)
    assert tomlkit.dumps(tomlkit.parse(text)) == text and tomllib.loads(text)
    model.check()
    assert model.problems == []
    assert "[suites.quick]" not in text and 'default_suite = "tables"' in text
    # the comment that introduces the next suite stays with it
    assert "# a suite that writes nothing but its run tables\n[suites.tables]" in text
    assert model.why_no_delete_suite("tables") == (
        "Suite tables is the file's only suite: add another (N) before deleting it.")
    model.new_suite("other")
    target, new_default = model.delete_suite("other")
    assert (target, new_default) == (Target("suite", "tables"), None)
    model.check()
    assert model.problems == []


# -- issue 14: claims follow renamed runs and suites -------------------------------------------

CLAIMS_TEXT = textwrap.dedent("""\
    default_suite = "a"

    [suites.a]
    runs = [{ name = "x", dropout = 0.1 }, { name = "y", dropout = 0.2 }]
    claims = [ { better = "x", than = "y" },  # x beats y
               { better = "x", than = "b/z", metric = "final_val" } ]

    [suites.b]
    runs = [{ name = "z" }, { name = "x" }]
    claims = [ { better = "a/x", than = "z" }, { better = "x", than = "z" } ]
""")


def test_renaming_a_run_or_suite_rewrites_the_claims_that_name_it_in_every_suite(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(CLAIMS_TEXT, encoding="utf-8")
    model = opened(path)
    model.rename(Target("run", "a", 0), "x2")
    model.rename(Target("run", "b", 0), "z2")
    model.check()
    assert tomllib.loads(tomlkit.dumps(model.doc))
    assert model.problems == []
    claims = {s: model.table(("suites", s, "claims")).unwrap() for s in ("a", "b")}
    assert claims["a"] == [{"better": "x2", "than": "y"}, {"better": "x2", "than": "b/z2", "metric": "final_val"}]
    # b's own run "x" is another run: only "a/x" follows the rename.
    assert claims["b"] == [{"better": "a/x2", "than": "z2"}, {"better": "x", "than": "z2"}]
    assert "# x beats y" in tomlkit.dumps(model.doc)
    model.rename_suite("b", "bee")
    assert model.table(("suites", "a", "claims")).unwrap()[1]["than"] == "bee/z2"
    assert model.table(("suites", "bee", "claims")).unwrap()[1] == {"better": "x", "than": "z2"}
    model.rename_suite("a", "A")
    assert model.table(("suites", "bee", "claims")).unwrap()[0]["better"] == "A/x2"
    assert model.table(("suites", "A", "claims")).unwrap()[0] == {"better": "x2", "than": "y"}
    model.check()
    assert tomllib.loads(tomlkit.dumps(model.doc))
    assert model.problems == []
