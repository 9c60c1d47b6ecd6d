"""The Experiments screen: tree, forms checked as typed, save keeping comments, grids, launch."""

from __future__ import annotations

import asyncio
import functools
import textwrap
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Button, Checkbox, Input, Select, Tree

from lab.bench import GroupCost, Prediction, bench_suite, plan_suite, shape_key, simulate_schedule
from lab.experiments import load_experiments
from lab.experiments_document import recovery_path
from lab.store import DriverLock, Store
from lab.toml_edit import load_document, set_key
from lab.tui.screens.experiments import ExperimentsScreen, Target
from lab.tui.app import LabApp
from lab.tui.screens.launch import LaunchScreen
from lab.tui.screens.quit import QuitScreen, RecoveredEditsScreen, UnsavedEditsScreen
from lab.tui.widgets.forms import SkipRow
from lab.tui.widgets.forms_grid import GridBuilder

SIZE = (120, 36)

EXPERIMENTS = textwrap.dedent("""\
    # Test experiments: these comments must survive every edit.
    default_suite = "quick"

    [defaults]              # every run starts from these
    n_layer = 2
    n_head = 4
    n_embd = 64
    block_size = 32
    batch_size = 4
    dropout = 0.1           # shorthand for the four sites
    skips = { 1 = 0.0 }
    max_iters = 100
    lr = 1e-3
    min_lr = 1e-4
    eval_interval = 50
    eval_iters = 5

    [suites.quick]
    description = "two hand-written runs"
    max_iters = 50          # quick: fewer steps
    runs = [
      # the baseline
      { name = "base" },
      { name = "skip2", skips = { 1 = 0.025, 2 = 0.5 } },
    ]
    references = { base = 1.5 }

    # a grid suite
    [suites.sweep]
    description = "attention dropout sweep"
    grid = { attn_dropout = [0.0, 0.2] }
    """)

COMMENTS = [line.strip() for line in EXPERIMENTS.splitlines() if "#" in line]


def known_costs(specs, device, workers, group_size, *, progress=None, cancel=None) -> Prediction:
    """A stand-in for `lab.bench.bench_suite`: the real plan and schedule replay, with every
    group costing 60 s plus 1 s per configuration-step... per configuration (no measuring)."""
    plan = plan_suite(specs, "cpu", 2, group_size, 0)
    if progress is not None:
        progress(plan, 0, 1)
    cost = GroupCost(step_s=0.0, window_s=0.0, setup_s=60.0)
    costs = {shape_key([r.config for r in g]): cost for g in plan.groups}
    schedule = simulate_schedule(plan.runs, 2, plan.group_size, lambda g: 60.0 * len(g))
    known_costs.calls += 1  # type: ignore[attr-defined]
    return Prediction(plan, costs, schedule, startup_s=5.0, measure_s=0.0)


known_costs.calls = 0  # type: ignore[attr-defined]


class Host(App):
    """The smallest app that shows the screen, and records what it asks to launch."""

    TITLE = "dropres-lab"

    def __init__(self, path: Path, estimator=known_costs, state=None) -> None:
        super().__init__()
        self.path = path
        self.estimator = estimator
        self.state = state
        self.launched: list[ExperimentsScreen.LaunchRequested] = []

    def on_mount(self) -> None:
        self.push_screen(ExperimentsScreen(self.path, estimator=self.estimator, state=self.state))

    def on_experiments_screen_launch_requested(self, message: ExperimentsScreen.LaunchRequested) -> None:
        self.launched.append(message)


@pytest.fixture
def toml_path(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS, encoding="utf-8")
    return path


def sync(test):
    """Run an async test with asyncio (the suite needs no async plugin)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


def screen_of(app: App) -> ExperimentsScreen:
    screen = app.screen
    assert isinstance(screen, ExperimentsScreen)
    return screen


async def select(pilot, target: Target) -> ExperimentsScreen:
    """Move the tree's cursor to a level, as the arrow keys would, and wait for its form."""
    screen = screen_of(pilot.app)
    tree = screen.query_one("#exp-tree", Tree)
    node = next(n for n in _nodes(tree.root) if n.data == target)
    if node.parent is not None and not node.parent.is_root:
        node.parent.expand()
    await pilot.pause()
    tree.move_cursor(node)
    await pilot.pause()
    await pilot.pause()
    assert screen.target == target
    return screen


def _nodes(node):
    for child in node.children:
        yield child
        yield from _nodes(child)


async def type_into(pilot, control: Input, text: str, keys: bool = False) -> None:
    """Focus a field and replace its text: key by key, or (faster) as a paste would."""
    control.focus()
    if keys:
        control.value = ""
        await pilot.press(*text)
    else:
        control.value = text
    await pilot.pause()


def no_blink(app: App) -> None:
    for control in app.screen.query(Input):
        control.cursor_blink = False


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_run_form(snap_compare, toml_path):
    async def run_before(pilot):
        await pilot.pause()
        await select(pilot, Target("run", "quick", 1))
        no_blink(pilot.app)

    assert snap_compare(Host(toml_path), terminal_size=SIZE, run_before=run_before)


def test_snapshot_form_with_errors(snap_compare, toml_path):
    async def run_before(pilot):
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        form = screen.form
        await type_into(pilot, form.row("n_embd").control, "66")  # not divisible by n_head = 4
        await type_into(pilot, form.row("n_layer").control, "two")
        await type_into(pilot, form.query(".skip-rate").last(Input), "1.5")
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.pause()
        form.scroll_to_widget(form.row("n_layer"), top=True, animate=False)
        await pilot.pause()
        no_blink(pilot.app)

    assert snap_compare(Host(toml_path), terminal_size=SIZE, run_before=run_before)


async def wait_until(pilot, predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.05)


async def launch_enabled(pilot) -> LaunchScreen:
    """The launch dialog once measured: Launch is disabled while it measures."""
    dialog = pilot.app.screen
    assert isinstance(dialog, LaunchScreen)
    await wait_until(pilot, lambda: not dialog.launch_button.disabled)
    return dialog


# -- forms, save, comments ------------------------------------------------------------------------


@sync
async def test_tree_lists_suites_runs_and_grid_runs(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        tree = screen.query_one("#exp-tree", Tree)
        labels = {n.data: str(n.label) for n in _nodes(tree.root)}
        assert "two hand-written runs" in labels[Target("suite", "quick")]
        assert "2 runs" in labels[Target("suite", "quick")]
        assert labels[Target("run", "quick", 0)] == "base"
        assert "attn_dropout=0.2" in labels[Target("grid_run", "sweep", name="attn_dropout=0.2")]
        assert screen.target == Target("run", "quick", 0)  # the default suite's first run


@sync
async def test_fill_field_save_keeps_comments(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        form = screen.form
        assert form.row("lr").control.placeholder == "0.001"  # inherited from [defaults]
        assert form.row("max_iters").control.placeholder == "50"  # inherited from the suite
        await type_into(pilot, form.row("lr").control, "0.002", keys=True)
        await type_into(pilot, form.row("reference").control, "1.25")
        await type_into(pilot, form.row("dropout").control, "0.3")  # the sites now inherit 0.3
        assert form.row("mlp_dropout").control.placeholder == "0.3"
        await type_into(pilot, form.row("dropout").control, "")
        assert form.row("mlp_dropout").control.placeholder == "0.1"
        assert screen.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not screen.dirty

        screen = await select(pilot, Target("suite", "quick"))
        assert screen.form.row("max_iters").control.value == "50"
        await type_into(pilot, screen.form.row("max_iters").control, "80")
        await pilot.press("ctrl+s")
        await pilot.pause()

    text = toml_path.read_text(encoding="utf-8")
    for comment in COMMENTS:
        assert comment.split("#", 1)[1] in text
    assert '{ name = "base", lr = 0.002 }' in text
    assert "max_iters = 80          # quick: fewer steps" in text  # the comment keeps its column
    assert "lr = 1e-3" in text  # untouched values stay as written
    assert "references = { base = 1.25 }" in text
    runs = {r.name: r for r in load_experiments(toml_path).suites["quick"].runs}
    assert runs["base"].config.lr == 0.002
    assert runs["base"].config.max_iters == 80
    assert runs["base"].reference == 1.25


@sync
async def test_clearing_a_field_inherits_again(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("suite", "quick"))
        await type_into(pilot, screen.form.row("max_iters").control, "")
        assert screen.form.row("max_iters").control.placeholder == "100"
        assert screen.action_save()
    assert "max_iters = 50" not in toml_path.read_text(encoding="utf-8")
    assert load_experiments(toml_path).suites["quick"].runs[0].config.max_iters == 100


@sync
async def test_invalid_values_block_saving_and_say_why(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        form = screen.form
        await type_into(pilot, form.row("n_embd").control, "66")
        error = form.row("n_embd").query_one(".field-error")
        assert "n_embd = 66 is not divisible by n_head = 4" in str(error.render())
        assert error.display
        assert not screen.action_save()
        assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS

        await type_into(pilot, form.row("n_embd").control, "")
        assert not form.row("n_embd").query_one(".field-error").display
        rate = form.query(".skip-rate").last(Input)
        await type_into(pilot, rate, "1.5")
        row_error = form.query(SkipRow).last().query_one(".field-error")
        assert "skips.2 = 1.5 is outside [0, 1]" in str(row_error.render())
        assert any("skips.2 = 1.5" in p for p in screen.blocking_problems())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS

        # Launching is refused too, and nothing is posted.
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        await pilot.pause()
        assert app.launched == []

        await type_into(pilot, rate, "0.5")
        assert screen.blocking_problems() == []
        await type_into(pilot, form.row("n_head").control, "3")  # cross-key: 64 % 3
        assert "n_embd = 64 is not divisible by n_head = 3" in str(form.row("n_embd").query_one(".field-error").render())
        assert not screen.action_save()


@sync
async def test_document_problems_are_shown_with_validate_messages(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        await type_into(pilot, screen.form.row("name").control, "base")  # a duplicate name
        message = str(screen.form.row("name").query_one(".field-error").render())
        assert "duplicate run name 'base'" in message
        assert not screen.action_save()
        await type_into(pilot, screen.form.row("name").control, "skip2/x")
        assert "contains a path separator" in str(screen.form.row("name").query_one(".field-error").render())
        await type_into(pilot, screen.form.row("name").control, "")
        assert "run name must not be empty" in str(screen.form.row("name").query_one(".field-error").render())
        assert not screen.action_save()


@sync
async def test_changes_on_disk_are_not_overwritten_unasked(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        await type_into(pilot, screen.form.row("seed").control, "5")
        toml_path.write_text(EXPERIMENTS + "# edited elsewhere\n", encoding="utf-8")
        assert not screen.action_save()  # warned: the file changed since it was read
        assert toml_path.read_text(encoding="utf-8").endswith("# edited elsewhere\n")
        await pilot.press("ctrl+r")  # take the file's version instead
        await pilot.pause()
        assert not screen.dirty and screen.form.row("seed").control.value == ""
        await type_into(pilot, screen.form.row("seed").control, "6")
        assert screen.action_save()
    text = toml_path.read_text(encoding="utf-8")
    assert "# edited elsewhere" in text and '{ name = "base", seed = 6 }' in text


@sync
async def test_add_and_remove_skip_rows(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        form = screen.form
        assert not list(form.query(SkipRow))  # inherits [defaults]
        await pilot.click("#skip-add")
        await pilot.pause()
        rows = list(form.query(SkipRow))
        # the inherited path, then the next free depth (issue 10, fault 3: never a blank row that
        # reads like a depth-1 path the file does not have)
        assert [r.texts for r in rows] == [("1", "0"), ("2", "0")]
        await type_into(pilot, rows[1].query_one(".skip-depth", Input), "2")
        await type_into(pilot, rows[1].query_one(".skip-rate", Input), "0.3")
        assert screen.doc["suites"]["quick"]["runs"][0]["skips"].unwrap() == {"1": 0.0, "2": 0.3}

        await pilot.click(f"#skip-remove-{rows[0].number}")
        await pilot.pause()
        assert [r.texts for r in form.query(SkipRow)] == [("2", "0.3")]
        assert screen.doc["suites"]["quick"]["runs"][0]["skips"].unwrap() == {"2": 0.3}

        await type_into(pilot, form.query_one(".skip-depth", Input), "9")  # beyond 2 * n_layer
        message = str(form.query_one(SkipRow).query_one(".field-error").render())
        assert "skip depth 9 spans more than the 4 sub-layers of 2 blocks" in message
        assert not screen.action_save()
        await type_into(pilot, form.query_one(".skip-depth", Input), "2")
        assert screen.action_save()

        row = form.query_one(SkipRow)
        await pilot.click(f"#skip-remove-{row.number}")  # no rows: inherit [defaults] again
        await pilot.pause()
        assert "skips" not in screen.doc["suites"]["quick"]["runs"][0]
        assert screen.action_save()
    assert load_experiments(toml_path).suites["quick"].runs[0].config.skips == ((1, 0.0),)


@sync
async def test_grid_builder_previews_names_and_adds_a_grid(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("suite", "sweep"))
        await pilot.press("g")
        await pilot.pause()
        builder = app.screen
        assert isinstance(builder, GridBuilder)
        values = builder.query_one("#grid-values", Input)
        assert values.value == "0.0, 0.2"  # the suite's current values for its first key
        builder.query_one("#grid-key", Select).value = "skips.1"
        await pilot.pause()
        await type_into(pilot, values, "0, 0.1")
        assert builder.names == ["attn_dropout=0,skips.1=0", "attn_dropout=0,skips.1=0.1",
                                 "attn_dropout=0.2,skips.1=0", "attn_dropout=0.2,skips.1=0.1"]
        assert "attn_dropout=0.2,skips.1=0.1" in str(builder.query_one("#grid-preview-text").render())

        await type_into(pilot, values, "0, 1.5")  # a problem: shown with the validate message
        assert builder.names == []
        assert any("skips.1 = 1.5 is outside [0, 1]" in p for p in builder.problems)
        assert builder.query_one("#grid-add", Button).disabled

        await type_into(pilot, values, "0, 0.1")
        await pilot.click("#grid-add")
        await pilot.pause()
        assert app.screen is screen
        tree = screen.query_one("#exp-tree", Tree)
        grid_runs = [n.data.name for n in _nodes(tree.root) if n.data.kind == "grid_run" and n.data.suite == "sweep"]
        assert len(grid_runs) == 4
        assert screen.action_save()

        await pilot.press("g")  # replace the whole grid
        await pilot.pause()
        builder = app.screen
        builder.query_one("#grid-key", Select).value = "lr"
        builder.query_one("#grid-replace", Checkbox).value = True
        await pilot.pause()
        await type_into(pilot, builder.query_one("#grid-values", Input), "0.001, 0.002, 0.003")
        assert builder.names == ["lr=0.001", "lr=0.002", "lr=0.003"]
        await pilot.press("escape")  # cancelled: nothing changes
        await pilot.pause()
        assert not screen.dirty

    text = toml_path.read_text(encoding="utf-8")
    assert 'grid = { attn_dropout = [0.0, 0.2], "skips.1" = [0.0, 0.1] }' in text
    assert "# a grid suite" in text
    assert [r.name for r in load_experiments(toml_path).suites["sweep"].runs][-1] == "attn_dropout=0.2,skips.1=0.1"


@sync
async def test_grid_runs_are_read_only(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("grid_run", "sweep", name="attn_dropout=0.2"))
        form = screen.form
        assert form.row("attn_dropout").control.value == "0.2"
        assert form.row("attn_dropout").control.disabled
        assert "Read-only" in str(form.query_one("#form-notice").render())
        await pilot.press("n")  # a grid suite gets no run entries: they would be crossed
        await pilot.pause()
        assert "runs" not in screen.doc["suites"]["sweep"]


@sync
async def test_new_duplicate_delete_run(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("d")
        await pilot.pause()
        assert screen.target == Target("run", "quick", 2)
        assert screen.form.row("name").control.value == "skip2-copy"
        assert [r.texts for r in screen.form.query(SkipRow)] == [("1", "0.025"), ("2", "0.5")]

        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("n")
        await pilot.pause()
        assert screen.target == Target("run", "quick", 3)
        name = screen.form.row("name").control
        assert name.has_focus and name.value == "run"
        await type_into(pilot, name, "fresh-one")
        await type_into(pilot, screen.form.row("seed").control, "7")

        await select(pilot, Target("run", "quick", 0))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("x")  # delete "base" and its reference
        await pilot.pause()
        assert screen.target == Target("run", "quick", 0)
        assert screen.form.row("name").control.value == "skip2"
        assert screen.action_save()

    text = toml_path.read_text(encoding="utf-8")
    assert '{ name = "base" }' not in text and "references" not in text
    assert "# the baseline" in text and "# quick: fewer steps" in text
    runs = load_experiments(toml_path).suites["quick"].runs
    assert [r.name for r in runs] == ["skip2", "skip2-copy", "fresh-one"]
    assert runs[1].config.skips == runs[0].config.skips
    assert runs[2].config.seed == 7


@sync
async def test_launch_posts_the_selected_specs(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        screen.query_one("#exp-tree", Tree).focus()
        # Every launch asks first; enter (the focused Launch button) or the same key again confirms.
        for key, confirm in (("l", "enter"), ("L", "L")):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, LaunchScreen)
            await launch_enabled(pilot)
            await pilot.press(confirm)
            await pilot.pause()
        screen.query_one("#exp-fresh", Checkbox).value = True
        await select(pilot, Target("grid_run", "sweep", name="attn_dropout=0"))
        screen.query_one("#exp-tree", Tree).focus()
        for key in ("l", "A"):
            await pilot.press(key)
            await launch_enabled(pilot)
            await pilot.press(key)
            await pilot.pause()
    launched = [([s.run_key for s in m.specs], m.fresh) for m in app.launched]
    assert launched == [
        (["quick/skip2"], False),
        (["quick/base", "quick/skip2"], False),
        (["sweep/attn_dropout=0"], True),
        (["quick/base", "quick/skip2", "sweep/attn_dropout=0", "sweep/attn_dropout=0.2"], False),  # never fresh
    ]
    assert app.launched[0].specs[0].config.skips == ((1, 0.025), (2, 0.5))
    assert app.launched[1].specs[0].reference == 1.5


@sync
async def test_launch_saves_pending_edits_first(toml_path):
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        await type_into(pilot, screen.form.row("max_iters").control, "20")
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        await pilot.pause()
        assert not screen.dirty
        await launch_enabled(pilot)
        await pilot.press("enter")
        await pilot.pause()
    assert [s.config.max_iters for s in app.launched[0].specs] == [20]
    assert "{ name = \"base\", max_iters = 20 }" in toml_path.read_text(encoding="utf-8")


def test_set_key_keeps_layout(toml_path):
    doc = load_document(toml_path)
    set_key(doc, ("defaults",), "dropout", 0.25)
    set_key(doc, ("defaults",), "warmup_iters", 10)  # new: after the last setting
    set_key(doc, ("suites", "quick"), "n_layer", 3)  # new: above runs and references
    set_key(doc, ("suites", "quick", "runs", 1), "lr", 0.01)
    text = doc.as_string()
    assert "dropout = 0.25          # shorthand for the four sites" in text
    assert "eval_iters = 5\nwarmup_iters = 10\n\n[suites.quick]" in text
    assert 'max_iters = 50          # quick: fewer steps\nn_layer = 3\nruns = [' in text
    assert '{ name = "skip2", skips = { 1 = 0.025, 2 = 0.5 }, lr = 0.01 },' in text




@sync
async def test_launch_asks_first_with_the_predicted_wall_time(toml_path):
    app = Host(toml_path)
    calls = known_costs.calls
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("suite", "quick"))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        dialog = app.screen
        assert isinstance(dialog, LaunchScreen)
        assert "Suite quick: launch 2 runs?" in dialog.title_text
        # Two shapes (skip depths differ), one group each on the two workers: 5 s start + 60 s.
        expected = "2 runs in 2 groups on 2 workers (CPU, 1 thread each): predicted wall time 1 min 5 s"
        await wait_until(pilot, lambda: expected in dialog.estimate_text)
        await pilot.press("escape")  # cancel: nothing is launched
        await pilot.pause()
        assert app.launched == [] and app.screen is screen

        await pilot.press("l")  # the same runs and settings again: the estimate is kept, not remeasured
        await pilot.pause()
        assert expected in app.screen.estimate_text and known_costs.calls == calls + 1
        await pilot.press("enter")
        await pilot.pause()
    assert [[s.run_key for s in m.specs] for m in app.launched] == [["quick/base", "quick/skip2"]]


@sync
async def test_the_launch_dialog_measures_this_machine_and_stops_measuring_when_left(toml_path):
    import multiprocessing

    quick = functools.partial(bench_suite, steps_budget_s=0.05)
    app = Host(toml_path, estimator=quick)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        assert "measuring this machine" in app.screen.estimate_text  # at once: the UI does not wait
        await wait_until(pilot, lambda: multiprocessing.active_children())  # measuring processes started
        await pilot.press("escape")
        await wait_until(pilot, lambda: not multiprocessing.active_children())  # measuring ended
        await pilot.press("l")
        dialog = app.screen
        await wait_until(pilot, lambda: "predicted wall time" in dialog.estimate_text, timeout=60)
        assert "1 run in 1 group on 1 worker (CPU" in dialog.estimate_text
        await pilot.press("l")
        await pilot.pause()
    assert [[s.run_key for s in m.specs] for m in app.launched] == [["quick/base"]]


# -- issue 10: nothing typed crashes or is lost ---------------------------------------------------

SHIPPED = Path(__file__).resolve().parents[1] / "experiments.toml"


@sync
async def test_clearing_a_field_typed_at_the_suite_level_inherits_again(tmp_path):
    """Issue 10, fault 1, the exact keys: on quick/skip1, Up (suite quick), Tab Tab (n_layer),
    Backspace, 3, Backspace. It raised KeyError: 'n_layer' and the app died with the edits.
    (Since issue 11 the form takes no focus of its own: one Tab reaches n_layer.)"""
    path = tmp_path / "experiments.toml"
    path.write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    app = Host(path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        assert screen.target == Target("run", "quick", 0)  # quick/skip1
        await pilot.press("up")
        await pilot.pause()
        assert screen.target == Target("suite", "quick")
        await pilot.press("tab")
        n_layer = screen.form.row("n_layer").control
        assert n_layer.has_focus and n_layer.value == "2"
        for key in ("backspace", "3", "backspace"):
            await pilot.press(key)
            await pilot.pause()
        assert app.is_running and app.screen is screen
        assert n_layer.value == "" and n_layer.placeholder == "16"  # inherits [defaults] again
        assert "n_layer" not in screen.doc["suites"]["quick"]
        assert screen.action_save()
    assert load_experiments(path).suites["quick"].runs[0].config.n_layer == 16


@sync
async def test_added_skip_paths_are_what_the_file_says(toml_path):
    """Issue 10, fault 3: "+ add skip path" picks the next free depth; a duplicate depth is an
    error on its row that blocks saving; after a save the rows are the file's."""
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("suite", "quick"))
        form = screen.form
        await pilot.click("#skip-add")
        await pilot.pause()
        rows = list(form.query(SkipRow))
        assert [r.texts for r in rows] == [("1", "0"), ("2", "0")]
        assert rows[1].query_one(".skip-rate", Input).has_focus
        await pilot.press("5")  # the selected 0 is replaced
        await pilot.pause()
        assert rows[1].texts == ("2", "5")
        assert "outside [0, 1]" in str(rows[1].query_one(".field-error").render())
        await type_into(pilot, rows[1].query_one(".skip-rate", Input), "0.5")
        assert screen.doc["suites"]["quick"]["skips"].unwrap() == {"1": 0.0, "2": 0.5}

        await type_into(pilot, rows[0].query_one(".skip-depth", Input), "2")  # now depth 2 twice
        assert "skip depth 2 is listed twice" in str(rows[1].query_one(".field-error").render())
        assert not screen.action_save()
        assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS
        assert screen.doc["suites"]["quick"]["skips"].unwrap() == {"1": 0.0, "2": 0.5}  # unchanged

        await pilot.click(f"#skip-remove-{rows[1].number}")
        await pilot.pause()
        await type_into(pilot, form.query_one(".skip-rate", Input), "0.50")
        assert screen.action_save()
        await pilot.pause()
        assert [r.texts for r in form.query(SkipRow)] == [("2", "0.5")]  # as the file writes it
    assert "skips = { 2 = 0.5 }" in toml_path.read_text(encoding="utf-8")
    assert load_experiments(toml_path).suites["quick"].runs[0].config.skips == ((2, 0.5),)


@sync
async def test_a_new_run_is_named_by_typing_and_the_header_follows_renames(toml_path):
    """Issue 10, fault 5: typing after "n" gives the name typed (not "runmine"); the form's
    header and the tree follow a rename."""
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 1))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("n")
        await pilot.pause()
        await pilot.press(*"mine")
        await pilot.pause()
        assert screen.form.row("name").control.value == "mine"
        assert "quick/mine" in str(screen.form.query_one("#form-title").render())
        tree = screen.query_one("#exp-tree", Tree)
        assert "mine" in [str(n.label) for n in _nodes(tree.root)]
        await type_into(pilot, screen.form.row("name").control, "theirs", keys=True)
        assert "quick/theirs" in str(screen.form.query_one("#form-title").render())
        assert "quick/mine" not in str(screen.form.query_one("#form-title").render())
        assert screen.action_save()
    assert [r.name for r in load_experiments(toml_path).suites["quick"].runs] == ["base", "skip2", "theirs"]


async def edit_in_the_lab(pilot, app) -> ExperimentsScreen:
    """In the whole lab: an unsaved edit (seed = 5 on quick/base)."""
    await pilot.pause()
    screen = await select(pilot, Target("run", "quick", 0))
    await type_into(pilot, screen.form.row("seed").control, "5")
    assert screen.dirty
    screen.query_one("#exp-tree", Tree).focus()
    return screen


@sync
async def test_quitting_with_unsaved_edits_asks_and_save_writes_them(toml_path):
    """Issue 10, fault 2: q with unsaved edits asks; "Save and quit" (focused) saves, then quits."""
    app = LabApp(toml_path.parent / "runs", toml_path, start_mode="experiments")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await edit_in_the_lab(pilot, app)
            assert recovery_path(toml_path).exists()  # kept beside the file while unsaved
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, UnsavedEditsScreen)
            await pilot.press("enter")
            await pilot.pause()
        assert not app.is_running
    finally:
        app.store.close()
    assert '{ name = "base", seed = 5 }' in toml_path.read_text(encoding="utf-8")
    assert not recovery_path(toml_path).exists()


@sync
async def test_quitting_with_unsaved_edits_discard_and_cancel(toml_path):
    """Cancel (escape) stays with the edits, ctrl+q and the palette's Quit ask the same
    question; "Discard and quit" leaves the file as it was and no recovery copy."""
    app = LabApp(toml_path.parent / "runs", toml_path, start_mode="experiments")
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await edit_in_the_lab(pilot, app)
            for ask in ("q", "ctrl+q"):
                await pilot.press(ask)
                await pilot.pause()
                assert isinstance(app.screen, UnsavedEditsScreen)
                await pilot.press("escape")
                await pilot.pause()
                assert app.is_running and app.screen is screen and screen.dirty
            await app.action_quit()  # what the command palette's Quit runs
            await pilot.pause()
            assert isinstance(app.screen, UnsavedEditsScreen)
            await pilot.click("#discard")
            await pilot.pause()
        assert not app.is_running
    finally:
        app.store.close()
    assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS
    assert not recovery_path(toml_path).exists()


@sync
async def test_a_save_that_fails_keeps_the_lab_open_and_says_why(toml_path):
    app = LabApp(toml_path.parent / "runs", toml_path, start_mode="experiments")
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await edit_in_the_lab(pilot, app)
            await type_into(pilot, screen.form.row("n_head").control, "3")  # 64 % 3: not saved
            screen.query_one("#exp-tree", Tree).focus()
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("enter")  # save and quit
            await pilot.pause()
            assert app.is_running and app.screen is screen
            notes = [n.message for n in app._notifications]
            assert any("n_embd = 64 is not divisible by n_head = 3" in n for n in notes)
            assert screen.dirty
    finally:
        app.store.close()
    assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS


@sync
async def test_unsaved_edits_are_asked_about_before_runs_in_flight(toml_path):
    """Both apply: the edits are asked about first, then the runs in flight."""
    store_dir = toml_path.parent / "runs"
    with Store.open(store_dir) as store:
        spec = load_experiments(toml_path).suites["quick"].runs[0]
        store.enqueue(spec.suite, spec.name, spec.base_name, spec.config, spec.reference)
    lock = DriverLock(store_dir).acquire()  # a driver holds the store: the run is in flight
    app = LabApp(store_dir, toml_path, start_mode="experiments")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await edit_in_the_lab(pilot, app)
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, UnsavedEditsScreen)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, QuitScreen)
            await pilot.click("#leave")
            await pilot.pause()
        assert not app.is_running
    finally:
        app.store.close()
        lock.release()
    assert '{ name = "base", seed = 5 }' in toml_path.read_text(encoding="utf-8")


@sync
async def test_edits_left_unsaved_are_offered_at_the_next_start(toml_path):
    """A lab that ended with unsaved edits (its terminal closed) left a recovery copy: the next
    lab opens on Experiments and offers it; restore makes them unsaved edits, discard drops them."""
    recovered = EXPERIMENTS.replace('{ name = "base" }', '{ name = "base", seed = 5 }')
    for choice in ("restore", "discard"):
        recovery_path(toml_path).write_text(recovered, encoding="utf-8")
        app = LabApp(toml_path.parent / "runs", toml_path)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await pilot.pause()
                assert isinstance(app.screen, RecoveredEditsScreen)
                await pilot.click(f"#{choice}")
                await pilot.pause()
                screen = screen_of(app)
                if choice == "restore":
                    assert screen.dirty and screen.form.row("seed").control.value == "5"
                    assert recovery_path(toml_path).exists()  # still unsaved
                else:
                    assert not screen.dirty and screen.form.row("seed").control.value == ""
                    assert not recovery_path(toml_path).exists()
        finally:
            app.store.close()
        assert toml_path.read_text(encoding="utf-8") == EXPERIMENTS


@sync
async def test_every_level_of_a_file_the_rules_refuse_can_be_visited_and_typed_into(tmp_path):
    """Nothing in the file or typed in the form crashes the screen: every node of the tree,
    Enter into its form, a key typed, back to the tree."""
    from test_experiments_document import BROKEN

    path = tmp_path / "experiments.toml"
    path.write_text(BROKEN, encoding="utf-8")
    app = Host(path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        tree = screen.query_one("#exp-tree", Tree)
        for node in list(_nodes(tree.root)):
            if node.parent is not None and not node.parent.is_root:
                node.parent.expand()
                await pilot.pause()
            tree.focus()
            tree.move_cursor(node)
            await pilot.pause()
            await pilot.press("enter", "1", "backspace", "escape")
            await pilot.pause()
            assert app.is_running and app.screen is screen
        assert screen.model.problems


# -- issue 11: keyboard travel, the form's header, the launch dialog, suites ------------------------


@sync
async def test_tab_reaches_a_field_escape_returns_to_the_tree_and_focus_is_visible(toml_path):
    """Item 5: the first Tab lands on the first field (typing `x` types, it does not delete the
    run); Esc from any control of the screen is back on the tree; the focused field and its
    label look different from the others (colour, and reversed for a terminal without it)."""
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        tree = screen.query_one("#exp-tree", Tree)
        assert tree.has_focus and screen.target == Target("run", "quick", 0)
        await pilot.press("tab")
        name = screen.form.row("name").control
        assert name.has_focus
        await pilot.press("end", "x")
        await pilot.pause()
        assert name.value == "basex" and len(screen.model.entries("quick")) == 2  # typed, not deleted

        await pilot.pause()
        focused, other = screen.form.row("name"), screen.form.row("reference")
        assert focused.control.styles.background != other.control.styles.background
        label = focused.query_one(".field-label")
        assert label.styles.text_style.reverse and not other.query_one(".field-label").styles.text_style.reverse

        await select(pilot, Target("suite", "quick"))
        tree.focus()
        await pilot.press("tab")
        assert screen.form.row("n_layer").control.has_focus  # the first field the suite level shows
        controls = [screen.form.row("n_layer").control, screen.form.row("norm").control,  # an input, a select
                    screen.query_one("#skip-add"), screen.query_one("#exp-fresh", Checkbox)]
        for control in controls:
            control.focus()
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert tree.has_focus, control


@sync
async def test_each_selection_shows_the_form_from_its_header(toml_path):
    """Item 11: the form kept its scroll position between levels, hiding which level it shows."""
    app = Host(toml_path)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        form = screen.form
        form.row("seed").control.focus()  # the last field: the form scrolls down to it
        await pilot.pause()
        assert form.scroll_y > 0
        await select(pilot, Target("run", "quick", 1))
        await pilot.pause()
        assert form.scroll_y == 0
        assert "quick/skip2" in str(form.query_one("#form-title").render())


class SlowEstimate:
    """An estimator that measures until released, then predicts `hours` of wall time."""

    def __init__(self, hours: float) -> None:
        import threading

        self.release = threading.Event()
        self.hours = hours

    def __call__(self, specs, device, workers, group_size, *, progress=None, cancel=None) -> Prediction:
        while not self.release.wait(0.02):
            if cancel is not None and cancel.is_set():
                from lab.bench import BenchCancelled

                raise BenchCancelled()
        plan = plan_suite(specs, "cpu", 1, group_size, 0)
        schedule = simulate_schedule(plan.runs, 1, plan.group_size, lambda g: self.hours * 3600.0)
        cost = GroupCost(step_s=0.0, window_s=0.0, setup_s=0.0)
        return Prediction(plan, {shape_key([r.config for r in g]): cost for g in plan.groups}, schedule,
                          startup_s=0.0, measure_s=0.0)


@sync
async def test_launch_waits_for_its_estimate_with_cancel_focused(toml_path):
    """Item 6: while measuring, Launch is disabled and Cancel has the focus; neither enter nor
    the launch key starts anything. Once measured, Launch is the default."""
    estimator = SlowEstimate(hours=1)
    app = Host(toml_path, estimator=estimator)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = await select(pilot, Target("run", "quick", 0))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, LaunchScreen) and "measuring this machine" in dialog.estimate_text
        assert dialog.launch_button.disabled and dialog.query_one("#cancel", Button).has_focus
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is dialog and app.launched == []
        estimator.release.set()
        await launch_enabled(pilot)
        assert "predicted wall time 1 h 00 min" in dialog.estimate_text
        assert dialog.launch_button.has_focus
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
    assert [[s.run_key for s in m.specs] for m in app.launched] == [["quick/base"]]


@sync
async def test_a_launch_longer_than_a_day_is_confirmed_deliberately(toml_path):
    """Item 6: `A` offered days of training with Launch as the default button."""
    estimator = SlowEstimate(hours=40)
    estimator.release.set()
    app = Host(toml_path, estimator=estimator)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        await pilot.press("A")
        dialog = app.screen
        assert isinstance(dialog, LaunchScreen)
        await wait_until(pilot, lambda: "predicted wall time" in dialog.estimate_text)
        await pilot.pause()
        days = dialog.estimate_text.split("predicted wall time ")[1].split(" (")[0]  # "5 d 0 h": 3 groups of 40 h
        assert " d " in days
        assert dialog.launch_button.disabled and dialog.query_one("#cancel", Button).has_focus
        await pilot.press("A")  # the opening key again does not launch it
        await pilot.pause()
        assert app.screen is dialog and app.launched == []
        long = dialog.query_one("#launch-long", Checkbox)
        assert long.display and f"for about {days} (over a day)" in str(long.label)
        long.value = True  # ticked: now the launch key confirms
        await pilot.pause()
        assert not dialog.launch_button.disabled
        await pilot.press("A")
        await pilot.pause()
        assert app.screen is screen
    assert len(app.launched) == 1 and len(app.launched[0].specs) == 4


def lab_state_with(path: Path, statuses: dict[str, str]):
    """The lab's view of a store where these runs (by SUITE/RUN) have these statuses."""
    import dataclasses
    from collections import Counter

    from lab.tui.poller import LiveRun
    from lab.tui.state import LabState

    state = LabState(path.parent / "store")
    with Store.open(state.store_dir) as store:
        for spec in load_experiments(path).runs:
            if spec.run_key in statuses:
                row = store.enqueue(spec.suite, spec.name, spec.base_name, spec.config, spec.reference)
                state.live[row.run_id] = LiveRun(dataclasses.replace(row, status=statuses[spec.run_key]))
                state.statuses[row.run_id] = statuses[spec.run_key]
    state.counts = dict(Counter(state.statuses.values()))
    return state


@sync
async def test_a_launch_with_nothing_to_train_is_not_offered(toml_path):
    """Item 6: `l` on a finished run offered Launch for nothing to train."""
    app = Host(toml_path, state=lab_state_with(toml_path, {"quick/base": "finished", "quick/skip2": "running"}))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        for target, key, why in ((Target("run", "quick", 0), "l", "1 run already has a result; tick \"launch fresh\""),
                                 (Target("suite", "quick"), "l", "1 run already has a result; 1 run is training now"),
                                 (Target("run", "quick", 1), "l", "1 run is training now")):
            await select(pilot, target)
            screen.query_one("#exp-tree", Tree).focus()
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen  # no dialog
            assert why in [n.message for n in app._notifications][-1]
        screen.query_one("#exp-fresh", Checkbox).value = True  # fresh: the finished run trains again
        await select(pilot, Target("run", "quick", 0))
        screen.query_one("#exp-tree", Tree).focus()
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)


@sync
async def test_suites_are_added_renamed_and_deleted_from_the_keyboard(toml_path):
    """Item 8: N asks a name (checked as typed), r renames (default_suite follows), X asks and
    deletes (the default moves on); all in the help, saved with ctrl+s."""
    from lab.tui.screens.name import NameScreen

    described = {b.key: b.description for b in ExperimentsScreen.BINDINGS}
    assert (described["N"], described["r"], described["X"]) == ("New suite", "Rename suite", "Delete suite")
    app = Host(toml_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = screen_of(app)
        await pilot.press("N")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, NameScreen)
        await pilot.press(*"quick")
        assert "already a suite named 'quick'" in str(dialog.query_one("#name-problem").render())
        await pilot.press("enter")  # refused: the dialog stays
        await pilot.pause()
        assert app.screen is dialog
        await pilot.press(*"ly", "enter")
        await pilot.pause()
        assert app.screen is screen and screen.target == Target("run", "quickly", 0)
        tree = screen.query_one("#exp-tree", Tree)
        assert any(n.data == Target("run", "quickly", 0) for n in _nodes(tree.root))

        await select(pilot, Target("run", "quick", 1))
        tree.focus()
        await pilot.press("r")
        await pilot.pause()
        await pilot.press(*"fast", "enter")  # the old name is selected: typing replaces it
        await pilot.pause()
        assert screen.target == Target("run", "fast", 1) and screen.doc["default_suite"] == "fast"

        await select(pilot, Target("suite", "fast"))
        tree.focus()
        await pilot.press("X")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen.__mro__[1])  # a ChoiceScreen: asks first
        await pilot.press("enter")  # the focused choice keeps the suite
        await pilot.pause()
        assert "fast" in screen.doc["suites"]
        await pilot.press("X")
        await pilot.pause()
        await pilot.click("#delete")
        await pilot.pause()
        assert "fast" not in screen.doc["suites"] and screen.doc["default_suite"] == "sweep"
        assert screen.action_save()
    experiments = load_experiments(toml_path)
    assert list(experiments.suites) == ["sweep", "quickly"] and experiments.default_suite == "sweep"
    text = toml_path.read_text(encoding="utf-8")
    assert "# a grid suite" in text  # the comment above the next suite stays with it
