"""Experiments: the suites and runs of experiments.toml as a tree, a form per level, and launch.

The screen edits the file as a tomlkit document, in place, so comments and layout survive
(`lab.experiments.set_key`); it never has rules of its own. A field is checked as it is typed
with `check_value`, a run's settings together with `check_config`, and the whole edited file
with `parse_experiments` (the messages `dropres-lab validate` prints) before it is saved or
launched. Launching asks first, in a dialog that shows the predicted wall time (`lab.bench`,
measured meanwhile in a thread, kept for the session), then posts
`ExperimentsScreen.LaunchRequested`; the app enqueues the runs.

What each level of the tree edits:

* [defaults]: the `[defaults]` table;
* a suite: its `[suites.NAME]` table (settings only; `runs`, `grid` and `references` are
  edited through run entries, the grid builder and a run's reference field);
* a run entry: its inline table in the suite's `runs = [...]`, and its reference in the
  suite's `references`;
* a run made by the suite's grid: read-only (the grid builder changes the grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import tomlkit
from rich.text import Text
from tomlkit.items import AoT
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Checkbox, Header, Static, Tree

from lab.core.config import DROPOUT_SITES, FIELDS, SETTING_KEYS, check_config, value_from_text
from lab.workers.settings import DriverSettings
from lab.store import make_run_id
from lab.experiments import (
    Experiments,
    ExperimentsError,
    KeyPath,
    Problem,
    RunSpec,
    document_item,
    format_key_path,
    format_value,
    parse_experiments,
    resolve_settings,
    save_document,
    set_key,
    toml_item,
    toml_value,
)

from ..widgets.footer import LabFooter
from ..widgets.forms import FORM_SETTINGS, FormData, SettingsForm, number_from_text
from ..widgets.forms_grid import GridBuilder, GridChange, Preview
from .launch import LAUNCH, Estimator, LaunchScreen

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


class ExperimentsScreen(Screen):
    """Suites and runs of experiments.toml: edit them in forms, build grids, save, launch.

    Every action has a Binding with a description: the footer shows the common ones, and the
    app's help screen and command palette list them all.
    """

    CSS_PATH = "../experiments.tcss"
    AUTO_FOCUS = "#exp-tree"

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("n", "new_run", "New run"),
        Binding("d", "duplicate", "Duplicate"),
        Binding("x", "delete", "Delete"),
        Binding("g", "grid", "Grid"),
        Binding("l", "launch", "Launch"),
        Binding("L", "launch_suite", "Launch suite", show=False),
        Binding("A", "launch_all", "Launch all not finished", show=False),
        Binding("ctrl+r", "revert", "Revert to the file", show=False),
    ]

    class LaunchRequested(Message):
        """Runs to launch: the app enqueues `specs` (the store keeps finished runs as they are
        unless `fresh`, which restarts them from step 0)."""

        def __init__(self, specs: list[RunSpec], fresh: bool) -> None:
            super().__init__()
            self.specs = specs
            self.fresh = fresh

    def __init__(self, experiments_path: Path, estimator: Estimator | None = None) -> None:
        """`estimator`: what predicts a launch's wall time (default `lab.bench.bench_suite`)."""
        super().__init__()
        self.path = Path(experiments_path)
        self.estimator = estimator
        self._estimates: dict = {}  # (runs, driver settings) -> the launch dialog's estimate
        self.doc: tomlkit.TOMLDocument | None = None
        self.disk_text = ""
        self.load_problem: str | None = None
        self.experiments: Experiments | None = None  # the last valid expansion
        self.problems: list[Problem] = []  # of the document as edited
        self.target = Target("defaults")
        self._tree_signature: list | None = None
        self._overwrite = False  # the user was told the file changed on disk; save anyway

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="exp-body"):
            tree: Tree[Target] = Tree(self.path.name, id="exp-tree")
            tree.show_root = False
            tree.guide_depth = 2
            yield tree
            yield SettingsForm(id="exp-form")
        with Horizontal(id="exp-bar"):
            yield Static("", id="exp-status", markup=False)
            fresh = Checkbox("launch fresh", False, compact=True, id="exp-fresh")
            fresh.tooltip = "Launch from step 0, dropping checkpoints and metrics (not for Launch all)"
            yield fresh
        yield LabFooter(compact=True, show_command_palette=False)

    async def on_mount(self) -> None:
        self.load()
        self.target = self._first_target()
        self._check_document()
        await self._show_target()

    # -- the document -------------------------------------------------------------------------
    def load(self) -> None:
        """Read the file as a document; when it cannot be parsed, say why and edit nothing."""
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

    @property
    def dirty(self) -> bool:
        return self.doc is not None and tomlkit.dumps(self.doc) != self.disk_text

    def _table(self, path: KeyPath) -> Any:
        try:
            return document_item(self.doc, path)
        except (KeyError, IndexError, TypeError):
            return None

    def _suites(self) -> dict:
        suites = self._table(("suites",))
        return suites if isinstance(suites, dict) else {}

    def _entries(self, suite: str) -> list:
        runs = self._table(("suites", suite, "runs"))
        return list(runs) if isinstance(runs, list) else []

    def _entry_name(self, suite: str, index: int) -> str:
        entries = self._entries(suite)
        entry = entries[index] if 0 <= index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        return str(name) if name is not None else f"(run {index + 1})"

    def _levels(self, target: Target) -> tuple[list[dict], dict]:
        """The settings below a level (least specific first) and the level's own settings."""
        defaults = settings_of(plain(self._table(("defaults",))))
        if target.kind == "defaults":
            return [], defaults
        suite = settings_of(plain(self._table(("suites", target.suite))))
        if target.kind == "run":
            return [defaults, suite], settings_of(plain(self._table(target.path)))
        return [defaults], suite

    def _check_document(self) -> None:
        """Expand the edited document as `validate` would; update the tree, form and status."""
        if self.doc is None:
            self.problems = []
        else:
            try:
                self.experiments = parse_experiments(tomlkit.dumps(self.doc), self.path)
                self.problems = []
            except ExperimentsError as e:
                self.problems = e.problems
        self._update_tree()
        self._show_problems()
        self._update_status()

    # -- the tree -------------------------------------------------------------------------------
    def _first_target(self) -> Target:
        suites = self._suites()
        default = self.doc.get("default_suite") if self.doc is not None else None
        for name in [default] + list(suites):
            if name in suites:
                if self._entries(name):
                    return Target("run", name, 0)
                return Target("suite", name)
        return Target("defaults")

    def _grid_runs(self, suite: str) -> list[str]:
        """Names of the suite's runs that no run entry names: the runs its grid makes."""
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        if "grid" not in (self._table(("suites", suite)) or {}):
            return []
        entries = {self._entry_name(suite, i) for i in range(len(self._entries(suite)))}
        names = [r.base_name for r in self.experiments.suites[suite].runs if r.base_name not in entries]
        return list(dict.fromkeys(names))

    def _run_count(self, suite: str) -> int | None:
        if self.experiments is None or suite not in self.experiments.suites:
            return None
        return len(self.experiments.suites[suite].runs)

    def _tree_nodes(self) -> list[tuple[Target, Text, list[tuple[Target, Text]] | None]]:
        def has_problems(suite: str) -> bool:
            prefix = format_key_path(("suites", suite))
            return any(p.key == prefix or p.key.startswith((prefix + ".", prefix + "[")) for p in self.problems)

        nodes: list = [(Target("defaults"), Text.assemble(("[defaults]", "bold"), ("  every run starts here", "dim")), None)]
        for name, table in self._suites().items():
            if not isinstance(table, dict):
                continue
            count = None if has_problems(name) else self._run_count(name)
            desc = str(table.get("description", ""))
            label = Text.assemble(
                (name, "bold"),
                (f"  {count} run{'s' if count != 1 else ''}" if count is not None else "  ⚠ problems", "dim" if count is not None else "red"),
                (f"  {desc}" if desc else "", "italic dim"),
            )
            children = [(Target("run", name, i), Text(self._entry_name(name, i))) for i in range(len(self._entries(name)))]
            children += [(Target("grid_run", name, name=g), Text.assemble((g, "italic"), ("  grid", "dim"))) for g in self._grid_runs(name)]
            nodes.append((Target("suite", name), label, children))
        return nodes

    def _update_tree(self) -> None:
        tree: Tree[Target] = self.query_one("#exp-tree", Tree)
        nodes = self._tree_nodes()
        signature = [(t, label.plain, [(c, cl.plain) for c, cl in children or []]) for t, label, children in nodes]
        if signature == self._tree_signature:
            return
        first_build = self._tree_signature is None
        self._tree_signature = signature
        expanded = {n.data.suite for n in tree.root.children if n.data is not None and n.is_expanded}
        tree.clear()
        cursor = None
        for target, label, children in nodes:
            if children is None:
                node = tree.root.add_leaf(label, data=target)
            else:
                open_ = target.suite == self.target.suite or (not first_build and target.suite in expanded)
                node = tree.root.add(label, data=target, expand=open_)
                for child, child_label in children:
                    leaf = node.add_leaf(child_label, data=child)
                    cursor = leaf if child == self.target else cursor
            cursor = node if target == self.target else cursor
        if cursor is not None:
            tree.call_after_refresh(tree.move_cursor, cursor)

    @on(Tree.NodeHighlighted, "#exp-tree")
    async def _node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        target = event.node.data
        if target is None or target == self.target:
            return
        dropped = self.form.own_errors()
        if dropped:  # an invalid value was never written to the document
            self.notify(f"Not kept (invalid): {', '.join(dropped)}", severity="warning")
        self.target = target
        await self._show_target()

    @on(Tree.NodeSelected, "#exp-tree")
    def _node_selected(self, event: Tree.NodeSelected) -> None:
        if event.node.data == self.target and event.node.data.kind != "suite":
            self.form.focus_first()

    @on(SettingsForm.Leave)
    def _leave_form(self) -> None:
        self.query_one("#exp-tree", Tree).focus()

    # -- the form ------------------------------------------------------------------------------
    @property
    def form(self) -> SettingsForm:
        return self.query_one("#exp-form", SettingsForm)

    async def _show_target(self) -> None:
        form = self.form
        if self.doc is None:
            await form.show(FormData("defaults", "Cannot edit the file", notice=self.load_problem or "", read_only=True))
            return
        if self.target.kind == "run" and self._table(self.target.path) is None:
            self.target = Target("suite", self.target.suite) if self.target.suite in self._suites() else Target("defaults")
        await form.show(self._form_data(self.target))
        self._show_problems()
        self._update_status()

    def _written_text(self, table: Any, key: str) -> str:
        """A value as the file writes it (1e-3 stays 1e-3), strings without quotes."""
        value = table[key]
        if isinstance(value, str):
            return str(value)
        return value.as_string() if hasattr(value, "as_string") else toml_value(plain(value))

    def _inherited(self, t: Target) -> tuple[dict[str, str], list[tuple[str, str]], str]:
        """What each field of a level would be if left empty, the inherited skip paths, and a note."""
        below, own = self._levels(t)
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

    def _form_data(self, t: Target) -> FormData:
        if t.kind == "grid_run":
            return self._grid_run_data(t)
        _, own = self._levels(t)
        table = self._table(t.path)
        values = {key: self._written_text(table, key) for key in FORM_SETTINGS if key in own}
        placeholders, inherited_rows, note = self._inherited(t)
        rows = []
        if isinstance(own.get("skips"), dict):
            written = table["skips"]
            rows = [(str(d), written[d].as_string() if hasattr(written[d], "as_string") else format_value(r))
                    for d, r in own["skips"].items()]
        inherit_from = {"defaults": "the built-in defaults", "suite": "[defaults]", "run": "[defaults] and the suite"}[t.kind]
        notice = f"Empty fields inherit: the dim placeholder is what this level gets from {inherit_from}."
        if t.kind == "defaults":
            title = Text.assemble(("[defaults]", "bold"), ("  every run starts from these", "dim"))
        elif t.kind == "suite":
            desc = str((table or {}).get("description", ""))
            count = self._run_count(t.suite)
            runs = f"  ·  {count} runs" if count is not None else ""
            title = Text.assemble(("Suite ", "dim"), (t.suite, "bold"), (runs, "dim"), (f"\n{desc}" if desc else "", "italic"))
        else:
            name = self._entry_name(t.suite, t.index)
            title = Text.assemble(("Run ", "dim"), (f"{t.suite}/{name}", "bold"), (f"  ·  {format_key_path(t.path)}", "dim"))
            values["name"] = str(plain(table.get("name", "")))
            refs = self._table(("suites", t.suite, "references"))
            if isinstance(refs, dict) and name in refs:
                values["reference"] = self._written_text(refs, name)
            placeholders["reference"] = "none"
            seeds = self._seeds_in_force(t)
            if seeds:
                notice += f" Replicated over seeds {seeds}: one run per seed, named {name}#SEED."
            if "grid" in (self._table(("suites", t.suite)) or {}):
                notice += " The suite's grid crosses this entry with every grid point."
        return FormData(t.kind, title, notice, False, values, placeholders, rows, inherited_rows, note)

    def _seeds_in_force(self, t: Target) -> list | None:
        for path in (t.path, ("suites", t.suite), ("defaults",)):
            table = plain(self._table(path))
            if isinstance(table, dict) and "seeds" in table:
                return table["seeds"]
        return None

    def _grid_run_data(self, t: Target) -> FormData:
        specs = self._specs_named(t.suite, t.name)
        grid = self._table(("suites", t.suite, "grid"))
        grid_text = grid.as_string() if hasattr(grid, "as_string") else ""
        title = Text.assemble(("Grid run ", "dim"), (f"{t.suite}/{t.name}", "bold"))
        notice = (f"Made by the grid of [suites.{t.suite}]: grid = {grid_text}. Read-only: change the grid "
                  "with the grid builder (g), or the suite's settings.")
        if not specs:
            return FormData("grid_run", title, notice, True)
        config = specs[0].config.to_dict()
        values = {k: format_value(config[k]) for k in FORM_SETTINGS if k in config}
        values["name"] = t.name
        if specs[0].reference is not None:
            values["reference"] = format_value(specs[0].reference)
        rows = [(str(d), format_value(r)) for d, r in specs[0].config.skips]
        return FormData("grid_run", title, notice, True, values, {}, rows, [], "")

    def _specs_named(self, suite: str, base_name: str) -> list[RunSpec]:
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        return [r for r in self.experiments.suites[suite].runs if r.base_name == base_name]

    # -- edits -----------------------------------------------------------------------------------
    @on(SettingsForm.Edited)
    def _edited(self, event: SettingsForm.Edited) -> None:
        event.stop()
        t = self.target
        if self.doc is not None and t.kind == "defaults" and "defaults" not in self.doc:
            self.doc.add("defaults", tomlkit.table())
        if self.doc is None or t.kind == "grid_run" or not isinstance(self._table(t.path), dict):
            return
        form, key = self.form, event.key
        if key in form.own_errors():
            self._show_problems()
            self._update_status()
            return  # an invalid value is not written; the form says why
        if key == "name":
            self._rename(form.text("name").strip())
        elif key == "reference":
            self._set_reference(form.text("reference"))
        elif key == "skips":
            rows = form.skip_list.texts()
            value = {str(int(d)): float(value_from_text(f"skips.{d}", r)) for d, r in rows} if rows else None
            current = plain(self._table(t.path).get("skips"))
            same = value is None and current is None or (
                isinstance(current, dict) and value is not None
                and {int(d): float(r) for d, r in current.items()} == {int(d): r for d, r in value.items()})
            if not same:
                set_key(self.doc, t.path, "skips", value)
        else:
            text = form.text(key)
            value = value_from_text(key, text) if text.strip() else None
            current = plain(self._table(t.path).get(key))
            if not (type(value) is type(current) and value == current):
                set_key(self.doc, t.path, key, value)
        self.form.show_inherited(*self._inherited(t))
        self._check_document()

    def _rename(self, name: str) -> None:
        t = self.target
        old = plain(self._table(t.path).get("name"))
        if not name or name == old:
            return
        set_key(self.doc, t.path, "name", name)
        refs = self._table(("suites", t.suite, "references"))
        if isinstance(refs, dict) and old in refs:
            text = refs[old].as_string()
            set_key(self.doc, ("suites", t.suite, "references"), old, None)
            self._set_reference(text)  # under the new name

    def _set_reference(self, text: str) -> None:
        t = self.target
        name = self._entry_name(t.suite, t.index)
        suite_path = ("suites", t.suite)
        refs = self._table(suite_path + ("references",))
        value = number_from_text(text) if text.strip() else None
        if value is not None and isinstance(refs, dict) and refs.get(name) == value:
            return
        if isinstance(refs, dict):
            set_key(self.doc, suite_path + ("references",), name, value)
            if not plain(self._table(suite_path + ("references",))):
                set_key(self.doc, suite_path, "references", None)
        elif value is not None:
            set_key(self.doc, suite_path, "references", {name: value})

    # -- checks ---------------------------------------------------------------------------------
    def _cross_problems(self) -> dict[str, str]:
        """A run entry's settings checked together (check_config), by the key blamed."""
        if self.target.kind != "run" or self.doc is None:
            return {}
        below, own = self._levels(self.target)
        out: dict[str, str] = {}
        for key, message in check_config(resolve_settings(*below, own)):
            out.setdefault(key, message)
        return out

    def _document_problems(self) -> tuple[dict[str, str], list[Problem]]:
        """The edited file's problems: those of a field of the form, by field, and the rest."""
        t = self.target
        prefix = format_key_path(t.path) if t.kind != "grid_run" else None
        reference_key = None
        if t.kind == "run":
            reference_key = format_key_path(("suites", t.suite, "references", self._entry_name(t.suite, t.index)))
        by_field: dict[str, str] = {}
        other: list[Problem] = []
        for p in self.problems:
            field = None
            if prefix and p.key.startswith(prefix + "."):
                rest = p.key[len(prefix) + 1:].strip('"')
                if rest in FORM_SETTINGS or rest in ("name", "skips") or rest.startswith("skips."):
                    field = rest
            elif reference_key and p.key == reference_key:
                field = "reference"
            if field and field not in by_field:
                by_field[field] = p.message
            else:
                other.append(p)
        return by_field, other

    def _show_problems(self) -> None:
        by_field, other = self._document_problems()
        by_field.update(self._cross_problems())
        lines = []
        if other:
            count = f"{len(other)} problem{'s' if len(other) != 1 else ''}"
            lines = [f"The file has {count} elsewhere (as `dropres-lab validate` reports them):"]
            lines += [f"  {p}" for p in other[:8]]
            if len(other) > 8:
                lines.append(f"  ... and {len(other) - 8} more")
        self.form.show_problems(by_field, lines)

    def blocking_problems(self) -> list[str]:
        """Why the edits cannot be saved or launched now (empty when they can)."""
        if self.doc is None:
            return [self.load_problem or "the file could not be read"]
        fields = {**self._document_problems()[0], **self._cross_problems(), **self.form.own_errors()}
        out = [f"{key}: {msg}" for key, msg in fields.items()]
        return out + [str(p) for p in self._document_problems()[1]]

    def _update_status(self) -> None:
        status = self.query_one("#exp-status", Static)
        if self.doc is None:
            status.update(self.load_problem or "")
            return
        parts = [self.path.name]
        if self.experiments is not None:
            parts.append(f"{len(self.experiments.suites)} suites, {len(self.experiments.runs)} runs")
        parts.append("unsaved changes" if self.dirty else "saved")
        blocking = len(self.blocking_problems())
        if blocking:
            parts.append(f"{blocking} problem{'s' if blocking != 1 else ''}")
        status.update("  ·  ".join(parts))
        self.sub_title = f"{self.path.name}{' (unsaved)' if self.dirty else ''}"

    # -- actions ----------------------------------------------------------------------------------
    def action_save(self) -> bool:
        """Check the edited file as `validate` would, then write it atomically (comments kept)."""
        self._check_document()
        problems = self.blocking_problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self.notify(problems[0] + more, title="Not saved", severity="error", timeout=8)
            return False
        if not self.dirty:
            return True
        if self._disk_changed() and not self._overwrite:
            self._overwrite = True
            self.notify(f"{self.path.name} changed on disk since the lab read it: ctrl+s again writes "
                        "over those changes, ctrl+r loads them instead of yours", title="Not saved",
                        severity="warning", timeout=10)
            return False
        save_document(self.path, self.doc)
        self.disk_text = tomlkit.dumps(self.doc)
        self._overwrite = False
        self._update_status()
        self.notify(f"Saved {self.path}", title="Saved")
        return True

    def _disk_changed(self) -> bool:
        try:
            return self.path.read_text(encoding="utf-8") != self.disk_text
        except (OSError, UnicodeDecodeError):
            return False

    async def on_screen_resume(self) -> None:
        """Back on this screen: pick up edits made to the file elsewhere, if there are none here."""
        if self.doc is not None and not self.dirty and self._disk_changed():
            await self.action_revert()

    async def action_revert(self) -> None:
        """Discard the edits: read the file again."""
        self.load()
        self._tree_signature = None
        self._overwrite = False
        self._check_document()
        await self._show_target()
        self.notify(f"Read {self.path} again", title="Reverted")

    def _suite_of_target(self) -> str | None:
        if self.target.suite is None:
            self.notify("Select a suite or one of its runs first", severity="warning")
        return self.target.suite

    async def _select(self, target: Target) -> None:
        self.target = target
        self._check_document()
        await self._show_target()

    def _unique_name(self, suite: str, base: str) -> str:
        names = {self._entry_name(suite, i) for i in range(len(self._entries(suite)))}
        if base not in names:
            return base
        n = 2
        while f"{base}{n}" in names:
            n += 1
        return f"{base}{n}"

    async def _insert_entry(self, suite: str, index: int | None, text: str, name: str) -> None:
        runs = self._table(("suites", suite, "runs"))
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
        await self._select(Target("run", suite, index))

    async def action_new_run(self) -> None:
        """Add a run entry (it inherits everything) after the selected one."""
        suite = self._suite_of_target() if self.doc is not None else None
        if suite is None:
            return
        table = self._table(("suites", suite)) or {}
        if "grid" in table and "runs" not in table:
            self.notify(f"Suite {suite} is a grid: a run entry would be crossed with every grid point. "
                        "Change the grid (g) instead.", severity="warning", timeout=8)
            return
        index = self.target.index + 1 if self.target.kind == "run" else None
        name = self._unique_name(suite, "run")
        await self._insert_entry(suite, index, toml_value({"name": name}), name)
        self.form.row("name").control.focus()
        self.notify(f"Added run {suite}/{name}; give it a name and settings", title="New run")

    async def action_duplicate(self) -> None:
        """Copy the selected run entry (its settings as written) under a new name."""
        t = self.target
        if t.kind != "run" or self.doc is None:
            self.notify("Select a run entry to duplicate", severity="warning")
            return
        entry = self._table(t.path)
        name = self._unique_name(t.suite, f"{self._entry_name(t.suite, t.index)}-copy")
        await self._insert_entry(t.suite, t.index + 1, entry.as_string(), name)
        self.notify(f"Added run {t.suite}/{name}", title="Duplicated")

    async def action_delete(self) -> None:
        """Remove the selected run entry (and its reference); saved with ctrl+s."""
        t = self.target
        if t.kind != "run" or self.doc is None:
            self.notify("Select a run entry to delete (grid runs: change the grid)", severity="warning")
            return
        name = self._entry_name(t.suite, t.index)
        refs = self._table(("suites", t.suite, "references"))
        if isinstance(refs, dict) and name in refs:
            self._set_reference("")
        runs = self._table(("suites", t.suite, "runs"))
        del runs[t.index]
        if not len(runs) and "grid" in self._table(("suites", t.suite)):
            set_key(self.doc, ("suites", t.suite), "runs", None)
        left = len(self._entries(t.suite))
        await self._select(Target("run", t.suite, min(t.index, left - 1)) if left else Target("suite", t.suite))
        self.notify(f"Deleted run {t.suite}/{name} (not saved yet; ctrl+r reverts)", title="Deleted")

    def action_grid(self) -> None:
        """Open the grid builder for the selected suite."""
        suite = self._suite_of_target() if self.doc is not None else None
        if suite is None:
            return
        grid = self._table(("suites", suite, "grid"))
        grid_values = plain(grid) if isinstance(grid, dict) else {}
        below, own = self._levels(Target("suite", suite))
        n_layer = resolve_settings(*below, own)["n_layer"]
        keys = ["dropout", *DROPOUT_SITES] + [f"skips.{d}" for d in range(1, 2 * n_layer + 1)]
        keys += [k for k in FIELDS if k not in keys and k != "skips"]
        keys += [k for k in grid_values if k not in keys]
        self.app.push_screen(
            GridBuilder(suite, keys, grid_values, grid.as_string() if grid is not None else "", partial(self._grid_preview, suite)),
            partial(self._grid_done, suite),
        )

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

    def _grid_preview(self, suite: str, change: GridChange) -> Preview:
        """The suite's run names with the change applied, expanded as the file would be."""
        doc = self._suite_alone(self.doc, suite)
        dropped = self._apply_grid(doc, suite, change)
        try:
            experiments = parse_experiments(tomlkit.dumps(doc), self.path)
        except ExperimentsError as e:
            return [], [f"{p.key}: {p.message}" if p.key else p.message for p in e.problems], []
        notes = [f"drops the references of runs the grid no longer makes: {', '.join(dropped)}"] if dropped else []
        return [r.name for r in experiments.suites[suite].runs], [], notes

    async def _grid_done(self, suite: str, change: GridChange | None) -> None:
        if change is None:
            return
        dropped = self._apply_grid(self.doc, suite, change)
        await self._select(Target("suite", suite))
        count = self._run_count(suite)
        note = f"; dropped {len(dropped)} references to runs it no longer makes" if dropped else ""
        self.notify(f"Suite {suite} now has {count} runs{note} (not saved yet)", title="Grid changed")

    def _launch(self, specs: list[RunSpec], what: str, fresh: bool | None = None) -> None:
        problems = self.blocking_problems()
        if problems:
            self.notify(problems[0], title="Cannot launch", severity="error", timeout=8)
            return
        if not specs:
            self.notify(f"{what}: no runs to launch", severity="warning")
            return
        if self.dirty and not self.action_save():
            return
        fresh = self.query_one("#exp-fresh", Checkbox).value if fresh is None else fresh
        settings = getattr(self.app, "driver_settings", None) or DriverSettings()
        todo = self._to_train(specs, fresh)
        count = f"{len(specs)} run{'s' if len(specs) != 1 else ''}"
        lines = [f"Queues {count}{' from step 0 (fresh)' if fresh else ''} and starts a background driver if none runs."]
        if len(todo) < len(specs):
            lines.append(f"{len(specs) - len(todo)} of them already have results or are training: "
                         f"{len(todo)} to train.")
        key = (tuple((s.run_key, s.config.identity_hash()) for s in todo),
               settings.device, settings.workers, settings.group_size)

        def confirmed(choice: str | None) -> None:
            if choice == LAUNCH:
                self.post_message(self.LaunchRequested(list(specs), fresh))
                self.notify(f"{what}: {count}" + (" (fresh)" if fresh else ""), title="Launch")

        self.app.push_screen(LaunchScreen(f"{what}: launch {count}?", " ".join(lines), todo, settings,
                                          self._estimates, key, self.estimator, self._busy()), confirmed)

    def _to_train(self, specs: list[RunSpec], fresh: bool) -> list[RunSpec]:
        """The runs a launch will actually train: not those with results (unless fresh) or
        training now, as far as the app's view of the store knows."""
        live = getattr(self.app, "live", {})
        todo = []
        for spec in specs:
            known = live.get(make_run_id(spec.suite, spec.name, spec.config.identity_hash()))
            status = known.row.status if known is not None else None
            if status == "running" or (status in ("finished", "diverged") and not fresh):
                continue
            todo.append(spec)
        return todo

    def _busy(self) -> str | None:
        """Why not to measure now: runs training would slow the measuring and be slowed by it."""
        live = getattr(self.app, "live", {})
        if getattr(self.app, "driver_alive", False) and any(r.row.status == "running" for r in live.values()):
            return ("Not measured now: runs are training, and measuring beside them would slow them and read "
                    "slow (run `dropres-lab bench` when the machine is idle).")
        return None

    def _current_specs(self, suite: str) -> list[RunSpec]:
        self._check_document()
        if self.experiments is None or suite not in self.experiments.suites:
            return []
        return self.experiments.suites[suite].runs

    def action_launch(self) -> None:
        """Launch the selected run (its replicates, its grid crossings) or suite."""
        t = self.target
        if t.kind == "defaults":
            self.notify("Select a run or a suite to launch (A launches everything not yet finished)", severity="warning")
            return
        runs = self._current_specs(t.suite)
        if t.kind == "suite":
            self._launch(runs, f"Suite {t.suite}")
            return
        name = t.name if t.kind == "grid_run" else self._entry_name(t.suite, t.index)
        specs = [r for r in runs if r.base_name == name or (t.kind == "run" and r.base_name.startswith(f"{name},"))]
        self._launch(specs, f"Run {t.suite}/{name}")

    def action_launch_suite(self) -> None:
        """Launch every run of the selected run's suite."""
        suite = self._suite_of_target()
        if suite is not None:
            self._launch(self._current_specs(suite), f"Suite {suite}")

    def action_launch_all(self) -> None:
        """Launch every run of every suite; finished ones stay results (never fresh)."""
        self._check_document()
        runs = self.experiments.runs if self.experiments is not None else []
        self._launch(runs, "Everything not yet finished", fresh=False)


__all__ = ["ExperimentsScreen", "Target"]
