"""Experiments: the suites and runs of experiments.toml as a tree, a form per level, and launch.

The screen is the view of `lab.experiments_document.ExperimentsDocument`, which owns the
edited file (levels, inheritance, suites, run entries, grids, references, problems, the
recovery copy of unsaved edits): the screen shows what the model says a level holds, hands
each edit to it, and says what happened (notifications, the status bar, dialogs). The tree
is one key away (esc) from anywhere on the screen. Launching asks first, in a dialog that
shows the predicted wall time (`lab.bench`, measured in a thread, kept for the session; see
`LaunchScreen` for when Launch is enabled), then posts `ExperimentsScreen.LaunchRequested`;
the app enqueues the runs. A launch that would train nothing is not offered: it says why.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import tomlkit
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Checkbox, Header, Static, Tree

from lab.experiments import Experiments, RunSpec
from lab.experiments_document import ExperimentsDocument, FormData, GridChange, Target
from lab.formatting import counted
from lab.workers.settings import DriverSettings

from ..read_only import READ_ONLY_NOTE, WritesOffWhenReadOnly
from ..state import LabState
from ..widgets.footer import LabFooter
from ..widgets.forms import SettingsForm
from ..widgets.forms_grid import GridBuilder
from .launch import LAUNCH, Estimate, Estimator, LaunchScreen
from .name import NameScreen
from .quit import ChoiceScreen, RecoveredEditsScreen


class ExperimentsScreen(WritesOffWhenReadOnly, Screen):
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
        Binding("N", "new_suite", "New suite", show=False),
        Binding("r", "rename_suite", "Rename suite", show=False),
        Binding("X", "delete_suite", "Delete suite", show=False),
        Binding("g", "grid", "Grid"),
        Binding("l", "launch", "Launch"),
        Binding("L", "launch_suite", "Launch suite", show=False),
        Binding("A", "launch_all", "Launch all not finished", show=False),
        Binding("ctrl+r", "revert", "Revert to the file", show=False),
        Binding("escape", "focus_tree", "Back to the tree", show=False),
    ]

    WRITES = frozenset({"save", "new_run", "duplicate", "delete", "new_suite", "rename_suite", "delete_suite",
                        "grid", "launch", "launch_suite", "launch_all", "revert"})

    class LaunchRequested(Message):
        """Runs to launch: the app enqueues `specs` (the store keeps finished runs as they are
        unless `fresh`, which restarts them from step 0)."""

        def __init__(self, specs: list[RunSpec], fresh: bool) -> None:
            super().__init__()
            self.specs = specs
            self.fresh = fresh

    def __init__(self, experiments_path: Path, estimator: Estimator | None = None, state: LabState | None = None,
                 driver_settings: DriverSettings | None = None) -> None:
        """`estimator`: what predicts a launch's wall time (default `lab.bench.bench_suite`);
        `state`: the lab's view of the store (which runs have results or are training), none
        when the screen runs alone; `driver_settings`: how a launch will train."""
        super().__init__()
        self.path = Path(experiments_path)
        self.estimator = estimator
        self.state = state or LabState(self.path.parent)
        self.driver_settings = driver_settings or DriverSettings()
        self._estimates: dict[tuple, Estimate] = {}  # (runs, driver settings) -> the launch dialog's estimate
        self.model = ExperimentsDocument(self.path)
        self.target = Target("defaults")
        self._tree_signature: list | None = None
        self._shown: Target | None = None  # the level the form shows
        self._overwrite = False  # the user was told the file changed on disk; save anyway

    @property
    def doc(self) -> tomlkit.TOMLDocument | None:
        """The document being edited (the model's)."""
        return self.model.doc

    @property
    def experiments(self) -> Experiments | None:
        return self.model.experiments

    @property
    def dirty(self) -> bool:
        """Whether there are edits not yet saved."""
        return self.model.dirty

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
            fresh.disabled = self.state.read_only
            yield fresh
        yield LabFooter(compact=True, show_command_palette=False)

    async def on_mount(self) -> None:
        self.model.load()
        self.target = self.model.first_target()
        self._check_document()
        await self._show_target()
        if self.model.recovered is not None and self.state.read_only:
            self.notify(f"{self.model.recovery_path.name} holds edits a lab left unsaved; "
                        + READ_ONLY_NOTE.format(what="restoring them"), timeout=8)
        elif self.model.recovered is not None:
            self.app.push_screen(RecoveredEditsScreen(self.path.name, self.model.recovery_path.name),
                                 self._recovered_choice)

    async def _recovered_choice(self, choice: str | None) -> None:
        """Restore the edits a lab left unsaved (escape too: nothing is lost), or discard them."""
        if choice == RecoveredEditsScreen.DISCARD:
            self.model.discard_recovered()
            self.notify(f"Discarded the unsaved edits; {self.path.name} is as saved", title="Discarded")
            return
        if not self.model.restore_recovered():
            self.notify(f"Cannot read {self.model.recovery_path}; it is left as it was", severity="error", timeout=10)
            return
        self._tree_signature = None
        self._check_document()
        await self._show_target()
        self.notify("Restored the unsaved edits: ctrl+s saves them, ctrl+r drops them", title="Restored")

    def _check_document(self) -> None:
        """Expand the edited document as `validate` would; update the tree, form and status."""
        self.model.check()
        self._update_tree()
        self._show_problems()
        self._update_status()

    # -- the tree -------------------------------------------------------------------------------
    def _tree_nodes(self) -> list[tuple[Target, Text, list[tuple[Target, Text]] | None]]:
        nodes: list = [(Target("defaults"), Text.assemble(("[defaults]", "bold"), ("  every run starts here", "dim")), None)]
        for suite in self.model.suite_summaries():
            count = suite.run_count
            label = Text.assemble(
                (suite.name, "bold"),
                (f"  {counted(count, 'run')}" if count is not None else "  ⚠ problems", "dim" if count is not None else "red"),
                (f"  {suite.description}" if suite.description else "", "italic dim"),
            )
            children = [(Target("run", suite.name, i), Text(name)) for i, name in enumerate(suite.entries)]
            children += [(Target("grid_run", suite.name, name=g), Text.assemble((g, "italic"), ("  grid", "dim")))
                         for g in suite.grid_runs]
            nodes.append((Target("suite", suite.name), label, children))
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

    def action_focus_tree(self) -> None:
        """Back to the tree from anywhere on the screen (a field, a button, the fresh checkbox)."""
        self.query_one("#exp-tree", Tree).focus()

    # -- the form ------------------------------------------------------------------------------
    @property
    def form(self) -> SettingsForm:
        return self.query_one("#exp-form", SettingsForm)

    async def _show_target(self) -> None:
        form = self.form
        if self.model.doc is None:
            await form.show(FormData("defaults", (("Cannot edit the file", ""),),
                                     notice=self.model.load_problem or "", read_only=True))
            return
        self.target = self.model.existing(self.target)
        data = self.model.form_data(self.target)
        await form.show(replace(data, read_only=True) if self.state.read_only else data)
        if self.target != self._shown:  # another level: start at its header, which names it
            form.scroll_home(animate=False, immediate=True)
            self._shown = self.target
        self._show_problems()
        self._update_status()

    @on(SettingsForm.Edited)
    async def _edited(self, event: SettingsForm.Edited) -> None:
        """A field changed: write it into the document (unless the form says it is invalid)."""
        event.stop()
        t, model, form, key = self.target, self.model, self.form, event.key
        if not model.editable(t):
            return
        if key in form.own_errors():
            self._show_problems()
            self._update_status()
            return  # an invalid value is not written; the form says why
        if key == "name":
            model.rename(t, form.text("name").strip())
            form.set_title(model.title(t))
        elif key == "reference":
            model.set_reference(t, form.text("reference"))
        elif key == "skips":
            model.set_skips(t, form.skip_list.texts())
        else:
            model.set_setting(t, key, form.text(key))
        form.show_inherited(*model.inherited(t))
        self._check_document()

    # -- checks ---------------------------------------------------------------------------------
    def _show_problems(self) -> None:
        by_field, other = self.model.document_problems(self.target)
        by_field.update(self.model.cross_problems(self.target))
        lines = []
        if other:
            lines = [f"The file has {counted(len(other), 'problem')} elsewhere (as `dropres-lab validate` reports them):"]
            lines += [f"  {p}" for p in other[:8]]
            if len(other) > 8:
                lines.append(f"  ... and {len(other) - 8} more")
        self.form.show_problems(by_field, lines)

    def blocking_problems(self) -> list[str]:
        """Why the edits cannot be saved or launched now (empty when they can)."""
        return self.model.blocking_problems(self.target, self.form.own_errors() if self.model.doc is not None else {})

    def _update_status(self) -> None:
        status = self.query_one("#exp-status", Static)
        if self.model.doc is None:
            status.update(self.model.load_problem or "")
            return
        parts = [self.path.name]
        if self.experiments is not None:
            parts.append(f"{counted(len(self.experiments.suites), 'suite')}, {counted(len(self.experiments.runs), 'run')}")
        parts.append("unsaved changes" if self.dirty else "saved")
        blocking = len(self.blocking_problems())
        if blocking:
            parts.append(counted(blocking, "problem"))
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
        if self.model.disk_changed() and not self._overwrite:
            self._overwrite = True
            self.notify(f"{self.path.name} changed on disk since the lab read it: ctrl+s again writes "
                        "over those changes, ctrl+r loads them instead of yours", title="Not saved",
                        severity="warning", timeout=10)
            return False
        self.model.save()
        self._overwrite = False
        if self.target.kind != "grid_run":  # the skip rows show exactly what the file says
            self.call_later(self.form.show_skip_rows, self.model.skip_rows(self.target))
        self._update_status()
        self.notify(f"Saved {self.path}", title="Saved")
        return True

    async def on_screen_resume(self) -> None:
        """Back on this screen: pick up edits made to the file elsewhere, if there are none here."""
        if self.model.doc is not None and not self.dirty and self.model.disk_changed():
            await self.action_revert()

    async def action_revert(self) -> None:
        """Discard the edits: read the file again."""
        self._reload()
        await self._show_target()
        self.notify(f"Read {self.path} again", title="Reverted")

    def discard_edits(self) -> None:
        """Drop the unsaved edits (and their recovery copy): the document is the file again."""
        self._reload()
        self.call_later(self._show_target)

    def _reload(self) -> None:
        self.model.revert()
        self._tree_signature = None
        self._overwrite = False
        self._check_document()

    def _suite_of_target(self) -> str | None:
        if self.target.suite is None:
            self.notify("Select a suite or one of its runs first", severity="warning")
        return self.target.suite

    async def _select(self, target: Target) -> None:
        self.target = target
        self._check_document()
        await self._show_target()

    async def action_new_run(self) -> None:
        """Add a run entry (it inherits everything) after the selected one; its name is
        selected, so typing names it."""
        suite = self._suite_of_target() if self.model.doc is not None else None
        if suite is None:
            return
        problem = self.model.why_no_new_run(suite)
        if problem:
            self.notify(problem, severity="warning", timeout=8)
            return
        await self._select(self.model.new_run(self.target))
        name = self.form.row("name").control
        name.focus()
        name.select_all()
        self.notify(f"Added run {suite}/{name.value}: type its name, then its settings", title="New run")

    async def action_duplicate(self) -> None:
        """Copy the selected run entry (its settings as written) under a new name."""
        t = self.target
        if t.kind != "run" or self.model.doc is None:
            self.notify("Select a run entry to duplicate", severity="warning")
            return
        copy = self.model.duplicate(t)
        await self._select(copy)
        self.notify(f"Added run {t.suite}/{self.model.entry_name(copy.suite, copy.index)}", title="Duplicated")

    async def action_delete(self) -> None:
        """Remove the selected run entry (and its reference); saved with ctrl+s."""
        t = self.target
        if t.kind != "run" or self.model.doc is None:
            self.notify("Select a run entry to delete (grid runs: change the grid; X deletes a whole suite)",
                        severity="warning")
            return
        name = self.model.entry_name(t.suite, t.index)
        await self._select(self.model.delete(t))
        self.notify(f"Deleted run {t.suite}/{name} (not saved yet; ctrl+r reverts)", title="Deleted")

    # -- suites -----------------------------------------------------------------------------------
    def _suites_editable(self) -> bool:
        problem = self.model.why_no_suite_edit() if self.model.doc is not None else self.model.load_problem
        if problem:
            self.notify(problem, severity="warning", timeout=8)
        return problem is None

    def action_new_suite(self) -> None:
        """Ask a name, then add [suites.NAME] with one run entry (it inherits everything)."""
        if not self._suites_editable():
            return
        self.app.push_screen(NameScreen(
            "New suite", "Its [suites.NAME] table gets one run entry that inherits everything: name the run, "
            "set what it varies, or build a grid (g).", self.model.unique_suite_name(), self.model.suite_name_problem,
            "Add suite"), self._new_suite_named)

    async def _new_suite_named(self, name: str | None) -> None:
        if name is None:
            return
        await self._select(self.model.new_suite(name))
        self.query_one("#exp-tree", Tree).focus()
        self.notify(f"Added suite {name} with run {name}/run (not saved yet; ctrl+r reverts)", title="New suite")

    def action_rename_suite(self) -> None:
        """Ask the selected suite's new name; default_suite follows it."""
        suite = self._suite_of_target() if self._suites_editable() else None
        if suite is None:
            return
        self.app.push_screen(NameScreen(
            f"Rename suite {suite}", "Its runs, grid and comments stay; default_suite follows it. Results already "
            f"trained stay under {suite} in the store (the new name trains as new runs).", suite,
            partial(self.model.suite_name_problem, current=suite), "Rename"), partial(self._suite_renamed, suite))

    async def _suite_renamed(self, old: str, new: str | None) -> None:
        if new is None or new == old:
            return
        try:
            target = self.model.rename_suite(old, new)
        except ValueError as exc:
            self.notify(str(exc), title="Not renamed", severity="error", timeout=8)
            return
        self._tree_signature = None
        await self._select(target if self.target.kind == "suite" else Target(self.target.kind, new, self.target.index,
                                                                              self.target.name))
        self.notify(f"Renamed suite {old} to {new} (not saved yet; ctrl+r reverts)", title="Renamed")

    def action_delete_suite(self) -> None:
        """Ask, then remove the selected suite; if it was default_suite, the next suite becomes it."""
        suite = self._suite_of_target() if self._suites_editable() else None
        if suite is None:
            return
        problem = self.model.why_no_delete_suite(suite)
        if problem:
            self.notify(problem, severity="warning", timeout=8)
            return
        default = self.doc.get("default_suite") == suite
        entries = counted(len(self.model.entries(suite)), "run entry", "run entries")
        text = (f"Removes [suites.{suite}]: its {entries}, grid and references (not saved until ctrl+s; ctrl+r "
                "reverts). Results already trained stay in the store.")
        if default:
            text += " It is default_suite: the next suite becomes the default."
        self.app.push_screen(ChoiceScreen(f"Delete suite {suite}?", text,
                                          [("cancel", "Keep it", "default"), ("delete", f"Delete suite {suite}", "error")]),
                             partial(self._suite_deleted, suite))

    async def _suite_deleted(self, suite: str, choice: str | None) -> None:
        if choice != "delete":
            return
        target, new_default = self.model.delete_suite(suite)
        await self._select(target)
        note = f"; default_suite is now {new_default}" if new_default else ""
        self.notify(f"Deleted suite {suite}{note} (not saved yet; ctrl+r reverts)", title="Deleted")

    def action_grid(self) -> None:
        """Open the grid builder for the selected suite."""
        suite = self._suite_of_target() if self.model.doc is not None else None
        if suite is None:
            return
        model = self.model
        self.app.push_screen(
            GridBuilder(suite, model.grid_keys(suite), model.grid_values(suite), model.grid_text(suite),
                        partial(model.grid_preview, suite)),
            partial(self._grid_done, suite),
        )

    async def _grid_done(self, suite: str, change: GridChange | None) -> None:
        if change is None:
            return
        dropped = self.model.apply_grid(suite, change)
        await self._select(Target("suite", suite))
        count = self.model.run_count(suite)
        note = f"; dropped {counted(len(dropped), 'reference')} to runs it no longer makes" if dropped else ""
        self.notify(f"Suite {suite} now has {counted(count or 0, 'run')}{note} (not saved yet)", title="Grid changed")

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
        fresh_offered = fresh is None  # Launch all is never fresh
        fresh = self.query_one("#exp-fresh", Checkbox).value if fresh is None else fresh
        settings = self.driver_settings
        todo = self._to_train(specs, fresh)
        if not todo:  # a launch that cannot train anything is not offered
            self.notify(self._nothing_to_train(specs, fresh_offered), title=f"{what}: nothing to train",
                        severity="warning", timeout=8)
            return
        count = counted(len(specs), "run")
        lines = [f"Queues {count}{' from step 0 (fresh)' if fresh else ''} and starts a background driver if none runs."]
        if len(todo) < len(specs):
            done = len(specs) - len(todo)
            lines.append(f"{done} of them already {'has' if done == 1 else 'have'} results or "
                         f"{'is' if done == 1 else 'are'} training: {len(todo)} to train.")
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
        known = self.state.statuses
        todo = []
        for spec in specs:
            status = known.get(spec.run_id)
            if status == "running" or (status in ("finished", "diverged") and not fresh):
                continue
            todo.append(spec)
        return todo

    def _nothing_to_train(self, specs: list[RunSpec], fresh_offered: bool) -> str:
        """Why a launch of `specs` would train nothing: what they are, and what would train them."""
        known = self.state.statuses
        statuses = [known[s.run_id] for s in specs if s.run_id in known]
        running = statuses.count("running")
        done = len(statuses) - running
        parts = []
        if done:
            parts.append(f"{counted(done, 'run')} already {'has' if done == 1 else 'have'} a result")
        if running:
            parts.append(f"{counted(running, 'run')} {'is' if running == 1 else 'are'} training now")
        hint = "; tick \"launch fresh\" to train them again from step 0" if done and fresh_offered else ""
        return "; ".join(parts) + hint

    def _busy(self) -> str | None:
        """Why not to measure now: runs training would slow the measuring and be slowed by it."""
        if self.state.driver_alive and self.state.counts.get("running"):
            return ("Not measured now: runs are training, and measuring beside them would slow them and read "
                    "slow (run `dropres-lab bench` when the machine is idle).")
        return None

    def _current_specs(self, suite: str) -> list[RunSpec]:
        self._check_document()
        return self.model.suite_specs(suite)

    def action_launch(self) -> None:
        """Launch the selected run (its replicates, its grid crossings) or suite."""
        t = self.target
        if t.kind == "defaults":
            self.notify("Select a run or a suite to launch (A launches everything not yet finished)", severity="warning")
            return
        self._check_document()
        specs, what = self.model.target_specs(t)
        self._launch(specs, what)

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
