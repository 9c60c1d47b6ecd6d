"""experiments.toml as the Experiments screen edits it: levels, inheritance, run entries, grids.

The screen is a view of this model: it shows what `form_data` says a level holds and hands
every edit (text typed in a field, skip rows, a rename, a new run entry, a grid change) to a
method here, which writes it into the tomlkit document (`lab.toml_edit`, comments and layout
kept) and never has rules of its own: typed text is read and checked by `lab.experiments_fields`
(on `check_value`), a run's settings together with `check_config`, and the whole edited file
with `parse_experiments` (the messages `dropres-lab validate` prints). Nothing here imports Textual, so every edit a user
can make is testable on the model alone.

Levels of the file (a `Target`):

* [defaults]: the `[defaults]` table;
* a suite: its `[suites.NAME]` table (settings only; `runs`, `grid` and `references` are
  edited through run entries, the grid builder and a run's reference field);
* a run entry: its inline table in the suite's `runs = [...]` (or its [[suites.NAME.runs]]
  table), and its reference in the suite's `references`;
* a run made by the suite's grid: read-only (the grid builder changes the grid).

An empty field means "inherit": clearing it removes the key from its level.

Unsaved edits are also kept in a recovery copy beside the file (`recovery_path`), rewritten
after every edit and removed once they are saved or discarded, so a lab that dies (its
terminal closed, a crash) loses nothing: the next start offers the copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT

from lab.core.atomic import write_atomic
from lab.core.config import DROPOUT_SITES, FIELDS, SETTING_KEYS, check_config, value_from_text
from lab.experiments import (
    Experiments,
    ExperimentsError,
    Problem,
    RunSpec,
    format_value,
    name_problem,
    parse_experiments,
    resolve_settings,
    split_claim_name,
)
from lab.experiments_fields import FORM_SETTINGS, SkipText, number_from_text, skip_row_problems
from lab.formatting import counted
from lab.toml_edit import (
    KeyPath,
    document_item,
    format_key_path,
    remove_table,
    rename_key,
    save_document,
    set_key,
    toml_item,
    toml_value,
)

#: A heading as (text, style) pieces: the view assembles them, the model stays free of rich.
Title = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Target:
    """A level of the file shown in the form: [defaults], a suite, a run entry or a grid run."""

    kind: str  # "defaults" | "suite" | "run" | "grid_run"
    suite: str | None = None
    index: int | None = None  # a run entry's index in the suite's `runs`
    name: str | None = None  # a grid run's name (its base name, without #seed)

    @property
    def path(self) -> KeyPath:
        """Where the level is written (a grid run: its suite)."""
        if self.kind == "defaults":
            return ("defaults",)
        if self.kind == "run":
            return ("suites", self.suite, "runs", self.index)
        return ("suites", self.suite)


@dataclass
class FormData:
    """What the form shows for one level of the file."""

    kind: str  # "defaults" | "suite" | "run" | "grid_run"
    title: Title
    notice: str = ""
    read_only: bool = False
    values: dict[str, str] = field(default_factory=dict)  # key -> text written at this level
    placeholders: dict[str, str] = field(default_factory=dict)  # key -> inherited value
    skips: list[SkipText] = field(default_factory=list)  # rows written at this level
    inherited_skips: list[SkipText] = field(default_factory=list)
    skips_note: str = ""


@dataclass(frozen=True)
class GridChange:
    """Vary `key` over `values` in a suite's grid; `replace` drops the grid's other keys."""

    key: str
    values: list[Any]
    replace: bool = False


#: A grid preview: the run names the suite would have, the problems that stop it, and notes.
Preview = tuple[list[str], list[str], list[str]]


@dataclass(frozen=True)
class SuiteSummary:
    """A suite as the tree lists it."""

    name: str
    description: str
    run_count: int | None  # None: the suite has problems (or the file does not expand)
    entries: list[str]  # its run entries' names, in file order
    grid_runs: list[str]  # the base names of the runs its grid makes beyond the entries


def plain(item: Any) -> Any:
    """A tomlkit item as plain Python values."""
    return item.unwrap() if hasattr(item, "unwrap") else item


def settings_of(table: Any) -> dict:
    """The settings written in a table (not its name, runs, grid, ...); {} for anything else."""
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if k in SETTING_KEYS or k.startswith("skips.")}


def skips_text(skips: dict) -> str:
    return toml_value({str(d): float(r) for d, r in sorted((int(d), r) for d, r in skips.items())})


def recovery_path(path: str | os.PathLike) -> Path:
    """Where unsaved edits of `path` are kept: `.NAME.unsaved` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.unsaved")


def has_recovery(path: str | os.PathLike) -> bool:
    """Whether a lab that ended with unsaved edits of `path` left them to be offered."""
    return recovery_path(path).is_file()


class ExperimentsDocument:
    """experiments.toml as edited: the tomlkit document, its problems and its state on disk."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.doc: tomlkit.TOMLDocument | None = None
        self.disk_text = ""
        self.load_problem: str | None = None
        self.experiments: Experiments | None = None  # the last valid expansion
        self.problems: list[Problem] = []  # of the document as edited
        #: Edits a lab left unsaved, not yet restored or discarded (their text); see `load`.
        self.recovered: str | None = None
        self._recovery_written: str | None = None

    # -- reading and writing the file ---------------------------------------------------------------
    @property
    def recovery_path(self) -> Path:
        return recovery_path(self.path)

    def load(self) -> None:
        """Read the file as a document; when it cannot be parsed, say why and edit nothing.

        A recovery copy left by a lab that ended with unsaved edits becomes `recovered` (to be
        restored or discarded) unless it says what the file says already.
        """
        self.doc, self.load_problem = None, None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.load_problem = f"{self.path}: file not found; create experiments.toml (see the README)"
            return
        except (OSError, UnicodeDecodeError) as e:
            self.load_problem = f"{self.path}: cannot read the file: {e}"
            return
        try:
            self.doc = tomlkit.parse(text)
        except Exception:  # a syntax error: say it as `validate` does
            try:
                parse_experiments(text, self.path)
                self.load_problem = f"{self.path}: cannot parse the file"
            except ExperimentsError as e:
                self.load_problem = str(e.problems[0])
            return
        self.disk_text = text
        self._recovery_written = None
        self.recovered = None
        try:
            recovered = self.recovery_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        if recovered == text:
            self.recovery_path.unlink(missing_ok=True)
        else:
            self.recovered = recovered
            self._recovery_written = recovered

    @property
    def dirty(self) -> bool:
        """Whether the document differs from the file as last read or saved."""
        return self.doc is not None and tomlkit.dumps(self.doc) != self.disk_text

    def disk_changed(self) -> bool:
        """Whether the file on disk is no longer what the lab read (edited elsewhere)."""
        try:
            return self.path.read_text(encoding="utf-8") != self.disk_text
        except (OSError, UnicodeDecodeError):
            return False

    def save(self) -> None:
        """Write the document atomically (comments kept); the recovery copy is no longer needed."""
        save_document(self.path, self.doc)
        self.disk_text = tomlkit.dumps(self.doc)
        self.keep_recovery()

    def revert(self) -> None:
        """Discard the edits: read the file again (and drop their recovery copy)."""
        self.recovered = None
        self.recovery_path.unlink(missing_ok=True)
        self.load()
        self.check()

    def restore_recovered(self) -> bool:
        """Take the recovered edits as this session's unsaved edits; False if they cannot be read."""
        text, self.recovered = self.recovered, None
        if text is None:
            return False
        try:
            self.doc = tomlkit.parse(text)
        except Exception:
            self.keep_recovery()
            return False
        self.check()
        return True

    def discard_recovered(self) -> None:
        """Drop the recovered edits: the file stays as it is."""
        self.recovered = None
        self.keep_recovery()

    def keep_recovery(self) -> None:
        """Make the recovery copy say what is unsaved: the edited text, or no copy when clean.

        Left alone while a recovered copy waits to be restored or discarded.
        """
        if self.recovered is not None or self.doc is None:
            return
        text = tomlkit.dumps(self.doc) if self.dirty else None
        if text == self._recovery_written:
            return
        try:
            if text is None:
                self.recovery_path.unlink(missing_ok=True)
            else:
                write_atomic(self.recovery_path, text)
        except OSError:
            return  # a read-only folder: the edits are still in memory and the quit dialog asks
        self._recovery_written = text

    # -- the document as levels -----------------------------------------------------------------------
    def table(self, path: KeyPath) -> Any:
        """The item at `path`, or None where the document has none."""
        try:
            return document_item(self.doc, path)
        except (KeyError, IndexError, TypeError):
            return None

    def suites(self) -> dict:
        suites = self.table(("suites",))
        return suites if isinstance(suites, dict) else {}

    def entries(self, suite: str) -> list:
        runs = self.table(("suites", suite, "runs"))
        return list(runs) if isinstance(runs, list) else []

    def entry_name(self, suite: str, index: int) -> str:
        entries = self.entries(suite)
        entry = entries[index] if 0 <= index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        return str(name) if name is not None else f"(run {index + 1})"

    def levels(self, target: Target) -> tuple[list[dict], dict]:
        """The settings below a level (least specific first) and the level's own settings."""
        defaults = settings_of(plain(self.table(("defaults",))))
        if target.kind == "defaults":
            return [], defaults
        suite = settings_of(plain(self.table(("suites", target.suite))))
        if target.kind == "run":
            return [defaults, suite], settings_of(plain(self.table(target.path)))
        return [defaults], suite

    def resolved(self, target: Target) -> dict[str, Any]:
        """A level's settings with everything it inherits (the run's, for a run entry)."""
        below, own = self.levels(target)
        return resolve_settings(*below, own)

    def check(self) -> None:
        """Expand the edited document as `validate` would; keep the recovery copy up to date."""
        if self.doc is None:
            self.problems = []
            return
        try:
            self.experiments = parse_experiments(tomlkit.dumps(self.doc), self.path)
            self.problems = []
        except ExperimentsError as e:
            self.problems = e.problems
        self.keep_recovery()

    # -- the tree ---------------------------------------------------------------------------------
    def first_target(self) -> Target:
        """The default suite's first run entry (or the suite, or [defaults])."""
        suites = self.suites()
        default = self.doc.get("default_suite") if self.doc is not None else None
        for name in [default] + list(suites):
            if name in suites:
                if self.entries(name):
                    return Target("run", name, 0)
                return Target("suite", name)
        return Target("defaults")

    def existing(self, target: Target) -> Target:
        """`target`, or the level that holds it when it is gone (a deleted run entry, say)."""
        if target.kind == "run" and self.table(target.path) is None:
            return Target("suite", target.suite) if target.suite in self.suites() else Target("defaults")
        return target

    def grid_runs(self, suite: str) -> list[str]:
        """Names of the suite's runs that no run entry names: the runs its grid makes."""
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        if "grid" not in (self.table(("suites", suite)) or {}):
            return []
        entries = {self.entry_name(suite, i) for i in range(len(self.entries(suite)))}
        names = [r.base_name for r in self.experiments.suites[suite].runs if r.base_name not in entries]
        return list(dict.fromkeys(names))

    def run_count(self, suite: str) -> int | None:
        if self.experiments is None or suite not in self.experiments.suites:
            return None
        return len(self.experiments.suites[suite].runs)

    def suite_has_problems(self, suite: str) -> bool:
        prefix = format_key_path(("suites", suite))
        return any(p.key == prefix or p.key.startswith((prefix + ".", prefix + "[")) for p in self.problems)

    def suite_summaries(self) -> list[SuiteSummary]:
        out = []
        for name, table in self.suites().items():
            if not isinstance(table, dict):
                continue
            count = None if self.suite_has_problems(name) else self.run_count(name)
            entries = [self.entry_name(name, i) for i in range(len(self.entries(name)))]
            out.append(SuiteSummary(name, str(table.get("description", "")), count, entries, self.grid_runs(name)))
        return out

    # -- what a level shows -----------------------------------------------------------------------
    @staticmethod
    def written_text(table: Any, key: str) -> str:
        """A value as the file writes it (1e-3 stays 1e-3), strings without quotes."""
        value = table[key]
        if isinstance(value, str):
            return str(value)
        return value.as_string() if hasattr(value, "as_string") else toml_value(plain(value))

    def inherited(self, t: Target) -> tuple[dict[str, str], list[SkipText], str]:
        """What each field of a level would be if left empty, the inherited skip paths, and a note."""
        below, own = self.levels(t)
        placeholders: dict[str, str] = {}
        for key in FORM_SETTINGS:
            resolved = resolve_settings(*below, {k: v for k, v in own.items() if k != key})
            if key == "dropout":
                sites = {resolved[s] for s in DROPOUT_SITES}
                placeholders[key] = format_value(sites.pop()) if len(sites) == 1 else "per site"
            else:
                placeholders[key] = format_value(resolved[key])
        not_skips = {k: v for k, v in own.items() if k != "skips" and not k.startswith("skips.")}
        inherited = resolve_settings(*below, not_skips)["skips"]
        rows = [(str(d), format_value(float(r))) for d, r in sorted(inherited.items())]
        note = ("replaces the inherited " if isinstance(own.get("skips"), dict) else "none written here: inherits ")
        note += skips_text(inherited)
        dotted = [k for k in own if k.startswith("skips.")]
        if dotted:
            note += "; also sets " + ", ".join(f'"{k}" = {format_value(own[k])}' for k in dotted) + " (edit in the file)"
        return placeholders, rows, note

    def skip_rows(self, t: Target) -> list[SkipText]:
        """The skip paths a level writes, as the file writes them."""
        _, own = self.levels(t)
        if not isinstance(own.get("skips"), dict):
            return []
        written = self.table(t.path)["skips"]
        return [(str(d), written[d].as_string() if hasattr(written[d], "as_string") else format_value(r))
                for d, r in own["skips"].items()]

    def title(self, t: Target) -> Title:
        """The form's heading for a level."""
        if t.kind == "defaults":
            return (("[defaults]", "bold"), ("  every run starts from these", "dim"))
        if t.kind == "suite":
            desc = str((self.table(t.path) or {}).get("description", ""))
            count = self.run_count(t.suite)
            runs = f"  ·  {counted(count, 'run')}" if count is not None else ""
            return (("Suite ", "dim"), (t.suite, "bold"), (runs, "dim"), (f"\n{desc}" if desc else "", "italic"))
        if t.kind == "grid_run":
            return (("Grid run ", "dim"), (f"{t.suite}/{t.name}", "bold"))
        name = self.entry_name(t.suite, t.index)
        return (("Run ", "dim"), (f"{t.suite}/{name}", "bold"), (f"  ·  {format_key_path(t.path)}", "dim"))

    def form_data(self, t: Target) -> FormData:
        """What the form shows for a level: its values as written, what it inherits, a notice."""
        if t.kind == "grid_run":
            return self._grid_run_data(t)
        _, own = self.levels(t)
        table = self.table(t.path)
        if not isinstance(table, dict) and not (t.kind == "defaults" and table is None):
            return FormData(t.kind, self.title(t), f"{format_key_path(t.path)} is not a table, so the form cannot "
                            "show it: fix it in the file (`dropres-lab validate` says how).", True)
        values = {key: self.written_text(table, key) for key in FORM_SETTINGS if key in own}
        placeholders, inherited_rows, note = self.inherited(t)
        inherit_from = {"defaults": "the built-in defaults", "suite": "[defaults]", "run": "[defaults] and the suite"}[t.kind]
        notice = f"Empty fields inherit: the dim placeholder is what this level gets from {inherit_from}."
        if t.kind == "run":
            name = self.entry_name(t.suite, t.index)
            values["name"] = str(plain(table.get("name", "")))
            refs = self.table(("suites", t.suite, "references"))
            if isinstance(refs, dict) and name in refs:
                values["reference"] = self.written_text(refs, name)
            placeholders["reference"] = "none"
            seeds = self._seeds_in_force(t)
            if seeds:
                notice += f" Replicated over seeds {seeds}: one run per seed, named {name}#SEED."
            if "grid" in (self.table(("suites", t.suite)) or {}):
                notice += " The suite's grid crosses this entry with every grid point."
        return FormData(t.kind, self.title(t), notice, False, values, placeholders, self.skip_rows(t),
                        inherited_rows, note)

    def _seeds_in_force(self, t: Target) -> list | None:
        for path in (t.path, ("suites", t.suite), ("defaults",)):
            table = plain(self.table(path))
            if isinstance(table, dict) and "seeds" in table:
                return table["seeds"]
        return None

    def _grid_run_data(self, t: Target) -> FormData:
        specs = self.specs_named(t.suite, t.name)
        grid = self.table(("suites", t.suite, "grid"))
        grid_text = grid.as_string() if hasattr(grid, "as_string") else ""
        notice = (f"Made by the grid of [suites.{t.suite}]: grid = {grid_text}. Read-only: change the grid "
                  "with the grid builder (g), or the suite's settings.")
        if not specs:
            return FormData("grid_run", self.title(t), notice, True)
        config = specs[0].config.to_dict()
        values = {k: format_value(config[k]) for k in FORM_SETTINGS if k in config}
        values["name"] = t.name
        if specs[0].reference is not None:
            values["reference"] = format_value(specs[0].reference)
        rows = [(str(d), format_value(r)) for d, r in specs[0].config.skips]
        return FormData("grid_run", self.title(t), notice, True, values, {}, rows, [], "")

    def specs_named(self, suite: str, base_name: str) -> list[RunSpec]:
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        return [r for r in self.experiments.suites[suite].runs if r.base_name == base_name]

    # -- edits --------------------------------------------------------------------------------------
    def editable(self, t: Target) -> bool:
        """Whether a level takes edits (a [defaults] table is added when the file has none)."""
        if self.doc is None or t.kind == "grid_run":
            return False
        if t.kind == "defaults" and "defaults" not in self.doc:
            self.doc.add("defaults", tomlkit.table())
        return isinstance(self.table(t.path), dict)

    def set_setting(self, t: Target, key: str, text: str) -> None:
        """A setting typed at a level: empty text removes it there (the level inherits it again)."""
        value = value_from_text(key, text) if text.strip() else None
        current = plain(self.table(t.path).get(key))
        if not (type(value) is type(current) and value == current):
            set_key(self.doc, t.path, key, value)

    def set_skips(self, t: Target, rows: list[SkipText]) -> None:
        """The skip rows of a level: written as its `skips` table (no rows: inherit again).

        Rows with a problem (`skip_row_problems`) are not written: the file keeps its last
        valid table until the rows say something a table can hold.
        """
        if any(skip_row_problems(rows)):
            return
        value = {str(int(d)): float(value_from_text(f"skips.{d.strip()}", r)) for d, r in rows} if rows else None
        current = plain(self.table(t.path).get("skips"))
        if value != current:  # a table written by hand, even one the rules refuse, is compared as it is
            set_key(self.doc, t.path, "skips", value)

    def rename(self, t: Target, name: str) -> None:
        """A run entry's new name; its reference and the claims naming it (in every suite) follow it."""
        old = plain(self.table(t.path).get("name"))
        if not name or name == old:
            return
        set_key(self.doc, t.path, "name", name)
        if isinstance(old, str):
            self._rename_in_claims(lambda suite, run: (suite, name) if (suite, run) == (t.suite, old) else None)
        refs = self.table(("suites", t.suite, "references"))
        if isinstance(refs, dict) and isinstance(old, str) and old in refs:
            text = refs[old].as_string()
            set_key(self.doc, ("suites", t.suite, "references"), old, None)
            self.set_reference(t, text)  # under the new name

    def set_reference(self, t: Target, text: str) -> None:
        """A run entry's published reference loss (empty text: none), in the suite's `references`."""
        name = self.entry_name(t.suite, t.index)
        suite_path = ("suites", t.suite)
        refs = self.table(suite_path + ("references",))
        value = number_from_text(text) if text.strip() else None
        if value is not None and isinstance(refs, dict) and refs.get(name) == value:
            return
        if isinstance(refs, dict):
            set_key(self.doc, suite_path + ("references",), name, value)
            if not plain(self.table(suite_path + ("references",))):
                set_key(self.doc, suite_path, "references", None)
        elif value is not None:
            set_key(self.doc, suite_path, "references", {name: value})

    def unique_name(self, suite: str, base: str) -> str:
        names = {self.entry_name(suite, i) for i in range(len(self.entries(suite)))}
        if base not in names:
            return base
        n = 2
        while f"{base}{n}" in names:
            n += 1
        return f"{base}{n}"

    def _insert_entry(self, suite: str, index: int | None, text: str, name: str) -> Target:
        runs = self.table(("suites", suite, "runs"))
        if runs is None:
            set_key(self.doc, ("suites", suite), "runs", [plain(toml_item(text))])
            index = 0
        else:
            index = len(runs) if index is None else index
            entry = toml_item(text)
            if isinstance(runs, AoT):  # [[suites.NAME.runs]] tables
                table = tomlkit.table()
                for key, value in plain(entry).items():
                    table[key] = value
                entry = table
            runs.insert(index, entry)
            set_key(self.doc, ("suites", suite, "runs", index), "name", name)
        return Target("run", suite, index)

    def why_no_new_run(self, suite: str) -> str | None:
        table = self.table(("suites", suite)) or {}
        if "runs" in table and not isinstance(table["runs"], list):
            return f"suites.{suite}.runs is not a list of run entries: fix it in the file first."
        if "grid" in table and "runs" not in table:
            return (f"Suite {suite} is a grid: a run entry would be crossed with every grid point. "
                    "Change the grid (g) instead.")
        return None

    def new_run(self, t: Target) -> Target:
        """Add a run entry (it inherits everything) after the selected one; returns it."""
        index = t.index + 1 if t.kind == "run" else None
        name = self.unique_name(t.suite, "run")
        return self._insert_entry(t.suite, index, toml_value({"name": name}), name)

    def duplicate(self, t: Target) -> Target:
        """Copy a run entry (its settings as written) under a new name, after it; returns the copy."""
        entry = self.table(t.path)
        name = self.unique_name(t.suite, f"{self.entry_name(t.suite, t.index)}-copy")
        return self._insert_entry(t.suite, t.index + 1, entry.as_string(), name)

    def delete(self, t: Target) -> Target:
        """Remove a run entry (and its reference); returns the level to show next."""
        name = self.entry_name(t.suite, t.index)
        refs = self.table(("suites", t.suite, "references"))
        if isinstance(refs, dict) and name in refs:
            self.set_reference(t, "")
        runs = self.table(("suites", t.suite, "runs"))
        del runs[t.index]
        if not len(runs) and "grid" in self.table(("suites", t.suite)):
            set_key(self.doc, ("suites", t.suite), "runs", None)
        left = len(self.entries(t.suite))
        return Target("run", t.suite, min(t.index, left - 1)) if left else Target("suite", t.suite)

    # -- suites -----------------------------------------------------------------------------------
    def suite_name_problem(self, name: str, current: str | None = None) -> str | None:
        """Why `name` cannot name a new suite, or be the new name of suite `current`."""
        problem = name_problem(name, "suite name")
        if problem:
            return problem
        if name != current and name in self.suites():
            return f"there is already a suite named {name!r}; pick another name"
        return None

    def unique_suite_name(self, base: str = "suite") -> str:
        """A name no suite has: `base`, else base2, base3, ..."""
        names, n = set(self.suites()), 2
        name = base
        while name in names:
            name, n = f"{base}{n}", n + 1
        return name

    def why_no_suite_edit(self) -> str | None:
        """Why suites cannot be added, renamed or deleted here (`suites` is not a table of them)."""
        suites = self.table(("suites",))
        if suites is not None and not isinstance(suites, dict):
            return "suites is not a table of [suites.NAME] tables: fix it in the file first."
        return None

    def new_suite(self, name: str) -> Target:
        """Add [suites.NAME] after the last suite, with one run entry that inherits everything
        (a suite without runs is a problem `validate` reports); returns that run entry. A file
        with no default_suite gets this one."""
        table = tomlkit.table()
        table.add("runs", toml_item(toml_value([{"name": "run"}])))
        if self.table(("suites",)) is None:
            self.doc.add("suites", tomlkit.table(is_super_table=True))
        self.doc["suites"].add(name, table)
        if "default_suite" not in self.doc:  # at the top, above every table (tomlkit pinned)
            self.doc._insert_at(0, "default_suite", name)
        return Target("run", name, 0)

    def rename_suite(self, old: str, new: str) -> Target:
        """Rename a suite where it stands (its comments, runs and grid kept); default_suite
        follows it. Raises ValueError where the file's layout cannot be renamed in place."""
        rename_key(self.doc, ("suites",), old, new)
        if self.doc.get("default_suite") == old:
            self.doc["default_suite"] = new
        self._rename_in_claims(lambda suite, run: (new, run) if suite == old else None, renamed_suite=(old, new))
        return Target("suite", new)

    def _rename_in_claims(self, renamed, renamed_suite: tuple[str, str] | None = None) -> None:
        """Rewrite the claims' run names that `renamed(suite, run)` maps to a new (suite, run)
        (None: unchanged), in every suite, each written as before: bare in its own suite,
        "suite/run" for another suite's run. `renamed_suite` (old, new) says which suite a
        claim's bare names belonged to before a suite rename."""
        for suite, table in self.suites().items():
            claims = table.get("claims") if isinstance(table, dict) else None
            if not isinstance(claims, list):
                continue
            own_before = renamed_suite[0] if renamed_suite and suite == renamed_suite[1] else suite
            for claim in claims:
                if not isinstance(claim, dict):
                    continue
                for key in ("better", "than"):
                    written = claim.get(key)
                    if not isinstance(written, str):
                        continue
                    target = renamed(*split_claim_name(str(written), own_before))
                    if target is not None:
                        claim[key] = target[1] if target[0] == suite else f"{target[0]}/{target[1]}"

    def why_no_delete_suite(self, name: str) -> str | None:
        if list(self.suites()) == [name]:
            return f"Suite {name} is the file's only suite: add another (N) before deleting it."
        return None

    def delete_suite(self, name: str) -> tuple[Target, str | None]:
        """Remove a suite (its runs, grid and references); returns the level to show next and
        the suite that became default_suite in its place (None when it was not the default)."""
        names = list(self.suites())
        remove_table(self.doc, ("suites",), name)
        left = [n for n in names if n != name]
        new_default = None
        if self.doc.get("default_suite") == name:
            new_default = left[0]
            self.doc["default_suite"] = new_default
        after = names[names.index(name) + 1:] + names[:names.index(name)][::-1]
        return Target("suite", next(n for n in after if n in left)), new_default

    # -- grids ------------------------------------------------------------------------------------
    def grid_keys(self, suite: str) -> list[str]:
        """The keys the grid builder offers: dropout first, then skip depths the suite can have."""
        grid_values = self.grid_values(suite)
        n_layer = self.resolved(Target("suite", suite))["n_layer"]
        keys = ["dropout", *DROPOUT_SITES] + [f"skips.{d}" for d in range(1, 2 * n_layer + 1)]
        keys += [k for k in FIELDS if k not in keys and k != "skips"]
        keys += [k for k in grid_values if k not in keys]
        return keys

    def grid_values(self, suite: str) -> dict[str, list[Any]]:
        grid = self.table(("suites", suite, "grid"))
        return plain(grid) if isinstance(grid, dict) else {}

    def grid_text(self, suite: str) -> str:
        grid = self.table(("suites", suite, "grid"))
        return grid.as_string() if grid is not None else ""

    def _apply_grid(self, doc: tomlkit.TOMLDocument, suite: str, change: GridChange) -> list[str]:
        """Change the suite's grid in `doc`; drop references to runs it no longer makes (returned)."""
        grid = document_item(doc, ("suites", suite)).get("grid")
        if change.replace or not isinstance(grid, dict):
            set_key(doc, ("suites", suite), "grid", {change.key: change.values})
        else:
            set_key(doc, ("suites", suite, "grid"), change.key, change.values)
        refs = plain(document_item(doc, ("suites", suite)).get("references"))
        if not isinstance(refs, dict) or not refs:
            return []
        probe = self._suite_alone(doc, suite)
        del probe["suites"][suite]["references"]
        try:
            names = {r.base_name for r in parse_experiments(tomlkit.dumps(probe), self.path).suites[suite].runs}
        except ExperimentsError:
            return []  # the preview reports the problems
        dropped = [name for name in refs if name not in names]
        for name in dropped:
            set_key(doc, ("suites", suite, "references"), name, None)
        if len(dropped) == len(refs):
            set_key(doc, ("suites", suite), "references", None)
        return dropped

    @staticmethod
    def _suite_alone(doc: tomlkit.TOMLDocument, suite: str) -> tomlkit.TOMLDocument:
        """A copy of `doc` with only this suite, so other suites' problems do not hide its own."""
        copy = tomlkit.parse(tomlkit.dumps(doc))
        for other in [s for s in document_item(copy, ("suites",)) if s != suite]:
            del copy["suites"][other]
        copy["default_suite"] = suite
        return copy

    def grid_preview(self, suite: str, change: GridChange) -> Preview:
        """The suite's run names with the change applied, expanded as the file would be."""
        doc = self._suite_alone(self.doc, suite)
        dropped = self._apply_grid(doc, suite, change)
        try:
            experiments = parse_experiments(tomlkit.dumps(doc), self.path)
        except ExperimentsError as e:
            return [], [f"{p.key}: {p.message}" if p.key else p.message for p in e.problems], []
        notes = [f"drops the references of runs the grid no longer makes: {', '.join(dropped)}"] if dropped else []
        return [r.name for r in experiments.suites[suite].runs], [], notes

    def apply_grid(self, suite: str, change: GridChange) -> list[str]:
        """Change the suite's grid; returns the references dropped with runs it no longer makes."""
        return self._apply_grid(self.doc, suite, change)

    # -- checks -------------------------------------------------------------------------------------
    def cross_problems(self, t: Target) -> dict[str, str]:
        """A run entry's settings checked together (check_config), by the key blamed."""
        if t.kind != "run" or self.doc is None:
            return {}
        out: dict[str, str] = {}
        for key, message in check_config(self.resolved(t)):
            out.setdefault(key, message)
        return out

    def document_problems(self, t: Target) -> tuple[dict[str, str], list[Problem]]:
        """The edited file's problems: those of a field of the level's form, by field, and the rest."""
        prefix = format_key_path(t.path) if t.kind != "grid_run" else None
        reference_key = None
        if t.kind == "run":
            reference_key = format_key_path(("suites", t.suite, "references", self.entry_name(t.suite, t.index)))
        by_field: dict[str, str] = {}
        other: list[Problem] = []
        for p in self.problems:
            key = None
            if prefix and p.key.startswith(prefix + "."):
                rest = p.key[len(prefix) + 1:].strip('"')
                if rest in FORM_SETTINGS or rest in ("name", "skips") or rest.startswith("skips."):
                    key = rest
            elif reference_key and p.key == reference_key:
                key = "reference"
            if key and key not in by_field:
                by_field[key] = p.message
            else:
                other.append(p)
        return by_field, other

    def blocking_problems(self, t: Target, own_errors: dict[str, str]) -> list[str]:
        """Why the edits cannot be saved or launched now (empty when they can); `own_errors`:
        the problems of what is typed in the form but not written (it is invalid)."""
        if self.doc is None:
            return [self.load_problem or "the file could not be read"]
        by_field, other = self.document_problems(t)
        fields = {**by_field, **self.cross_problems(t), **own_errors}
        out = [f"{key}: {msg}" for key, msg in fields.items()]
        return out + [str(p) for p in other]

    # -- launching ----------------------------------------------------------------------------------
    def suite_specs(self, suite: str) -> list[RunSpec]:
        """The runs the suite expands to now (after `check`)."""
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        return self.experiments.suites[suite].runs

    def target_specs(self, t: Target) -> tuple[list[RunSpec], str]:
        """The runs a level launches (a run entry: its replicates and grid crossings), and what
        to call them."""
        runs = self.suite_specs(t.suite)
        if t.kind == "suite":
            return runs, f"Suite {t.suite}"
        name = t.name if t.kind == "grid_run" else self.entry_name(t.suite, t.index)
        specs = [r for r in runs if r.base_name == name or (t.kind == "run" and r.base_name.startswith(f"{name},"))]
        return specs, f"Run {t.suite}/{name}"


__all__ = [
    "ExperimentsDocument", "FormData", "GridChange", "Preview", "SuiteSummary", "Target", "Title",
    "has_recovery", "recovery_path",
]
