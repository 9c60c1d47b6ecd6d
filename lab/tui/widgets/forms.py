"""The settings form of the Experiments screen: one row per setting, and the skip-path list.

The form shows one level of experiments.toml ([defaults], a [suites.NAME] table or one run
entry): what that level writes, with what it inherits as each field's placeholder. It checks
each field as it is typed with the one rule set (`lab.experiments_fields`, on
`lab.core.config.check_value`) and says why beside the field; the screen that owns it hands
valid edits to the document model (`lab.experiments_document`) and hands back the checks that
need more than one field (`show_problems`). Skip rows are what the file will hold: "+ add
skip path" adds the next free depth, and a row the file could not hold (a depth listed twice,
a missing rate) is an error on the row.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Select, Static

from lab.core.config import field_spec
from lab.experiments_document import FormData, Title
from lab.experiments_fields import (
    FORM_SETTINGS,
    RUN_FIELDS,
    SECTIONS,
    SkipText,
    field_problem,
    next_free_depth,
    skip_row_problems,
)

_HELP = {
    "name": "the run's name (results, SUITE/RUN)",
    "reference": "published val loss to compare against (the suite's references)",
    "dropout": "shorthand: sets the four sites below",
}


class FieldValidator(Validator):
    """Checks a field with the rule set, so Input's own invalid styling follows it."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def validate(self, value: str) -> ValidationResult:
        msg = field_problem(self.key, value)
        return self.failure(msg) if msg else self.success()


class ShowsError:
    """A form row with a `.field-error` label under it: shows the rule set's message, or hides it."""

    _error: str

    def show_error(self, message: str | None) -> None:
        message = message or ""
        if message != self._error:
            self._error = message
            error = self.query_one(".field-error", Label)
            error.update(message)
            error.set_class(bool(message), "-shown")
            self.set_class(bool(message), "-invalid")


class FieldRow(ShowsError, Vertical):
    """A setting: label, input (or select), a line of help, and the message when it is wrong."""

    def __init__(self, key: str, label: str | None = None) -> None:
        super().__init__(classes="field-row", id=f"row-{key}")
        self.key = key
        self.label = label or key
        spec = field_spec(key)
        self.choices = spec.choices if spec and spec.kind == "choice" else ()
        self.help = _HELP.get(key) or (spec.help if spec else "")
        self._error = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-line"):
            yield Label(self.label, classes="field-label")
            if self.choices:
                yield Select([(c, c) for c in self.choices], prompt="inherit", compact=True,
                             id=f"field-{self.key}", classes="field-input")
            else:
                yield Input(compact=True, validators=[FieldValidator(self.key)], valid_empty=True,
                            id=f"field-{self.key}", classes="field-input", select_on_focus=False)
            yield Static(self.help, classes="field-help", markup=False)
        yield Label("", classes="field-error", markup=False)

    @property
    def control(self) -> Input | Select:
        return self.query_one(f"#field-{self.key}")  # type: ignore[return-value]

    @property
    def text(self) -> str:
        control = self.control
        if isinstance(control, Select):
            return "" if control.value is Select.NULL else str(control.value)
        return control.value

    def set_text(self, text: str, placeholder: str) -> None:
        control = self.control
        self.set_placeholder(placeholder)
        if isinstance(control, Select):
            control.value = text if text in self.choices else Select.NULL
        else:
            control.value = text
            control.cursor_position = len(text)

    def set_placeholder(self, placeholder: str) -> None:
        """Show what the setting inherits when the field is empty."""
        control = self.control
        if isinstance(control, Select):
            control.prompt = f"inherit ({placeholder})" if placeholder else "inherit"
        else:
            control.placeholder = placeholder

    @property
    def own_error(self) -> str | None:
        return None if isinstance(self.control, Select) else field_problem(self.key, self.text)



class SkipRow(ShowsError, Vertical):
    """One skip path: depth (sub-layers spanned), dropout rate, and a remove button."""

    def __init__(self, number: int, depth: str = "", rate: str = "") -> None:
        super().__init__(classes="skip-row", id=f"skip-{number}")
        self.number = number
        self._initial = (depth, rate)
        self._error = ""

    def compose(self) -> ComposeResult:
        depth, rate = self._initial
        with Horizontal(classes="field-line"):
            yield Label("depth", classes="skip-label")
            yield Input(depth, compact=True, id=f"skip-depth-{self.number}", classes="skip-depth",
                        select_on_focus=False)
            yield Label("rate", classes="skip-label")
            yield Input(rate, compact=True, id=f"skip-rate-{self.number}", classes="skip-rate",
                        select_on_focus=False)
            yield Button("remove", compact=True, id=f"skip-remove-{self.number}", classes="skip-remove")
        yield Label("", classes="field-error", markup=False)

    @property
    def texts(self) -> SkipText:
        return (self.query_one(".skip-depth", Input).value, self.query_one(".skip-rate", Input).value)


class SkipList(Vertical):
    """The skip paths written at this level, as rows of depth and rate that can be added and removed.

    With no rows the level inherits its skip table. The rows written replace the inherited
    table whole (as `skips = {...}` does), so adding the first row starts from a copy of the
    inherited paths.
    """

    class Changed(Message):
        """Rows were added, removed or edited."""

    def __init__(self) -> None:
        super().__init__(id="skips")
        self._count = 0
        self.inherited: list[SkipText] = []

    def compose(self) -> ComposeResult:
        yield Vertical(id="skip-rows")
        with Horizontal(classes="field-line"):
            yield Button("+ add skip path", compact=True, id="skip-add")
            yield Static("", id="skip-note", markup=False)
        yield Label("", classes="field-error", id="skips-error", markup=False)

    @property
    def rows(self) -> list[SkipRow]:
        return list(self.query(SkipRow))

    def _new_row(self, depth: str = "", rate: str = "") -> SkipRow:
        self._count += 1
        return SkipRow(self._count, depth, rate)

    async def set_rows(self, rows: list[SkipText]) -> None:
        container = self.query_one("#skip-rows")
        await container.remove_children()
        if rows:
            await container.mount_all([self._new_row(d, r) for d, r in rows])

    async def add_row(self) -> SkipRow:
        """Add a row for the smallest depth not listed yet, rate 0 (after copying the inherited
        paths, when this level had none): every row says a path the file will hold."""
        container = self.query_one("#skip-rows")
        if not self.rows and self.inherited:
            await container.mount_all([self._new_row(d, r) for d, r in self.inherited])
        row = self._new_row(str(next_free_depth(self.texts())), "0")
        await container.mount(row)
        self.post_message(self.Changed())
        return row

    async def remove_row(self, row: SkipRow) -> None:
        await row.remove()
        self.post_message(self.Changed())

    @on(Button.Pressed, "#skip-add")
    async def _add_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        row = await self.add_row()
        rate = row.query_one(".skip-rate", Input)
        rate.focus()
        rate.select_all()  # typing replaces the 0

    @on(Button.Pressed, ".skip-remove")
    async def _remove_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        row = next(a for a in event.button.ancestors if isinstance(a, SkipRow))
        await self.remove_row(row)

    @on(Input.Changed)
    def _row_edited(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed())

    def texts(self) -> list[SkipText]:
        """(depth, rate) text of every row, top to bottom."""
        return [row.texts for row in self.rows]

    def _row_problems(self) -> list[tuple[SkipRow, str | None]]:
        """Each row with its own problem (`skip_row_problems`: a depth listed twice, say)."""
        rows = self.rows
        return list(zip(rows, skip_row_problems([row.texts for row in rows])))

    def errors(self) -> list[str]:
        return [msg for _, msg in self._row_problems() if msg]

    def show_errors(self, by_depth: dict[str, str], general: str | None) -> None:
        """Show each row's own problem, else the message for its depth; `general` below the list."""
        for row, msg in self._row_problems():
            row.show_error(msg or by_depth.get(row.texts[0].strip()))
        error = self.query_one("#skips-error", Label)
        error.update(general or "")
        error.set_class(bool(general), "-shown")

    def set_note(self, text: str) -> None:
        self.query_one("#skip-note", Static).update(text)


class SettingsForm(VerticalScroll):
    """Every setting of one level of experiments.toml, checked as it is typed.

    The form itself takes no focus: Tab from the tree lands on its first field, never on an
    invisible container (where a key such as x would act on the screen instead of typing).
    Focusing a field scrolls it into view, so the form needs no keys of its own.
    """

    can_focus = False

    class Edited(Message):
        """The user changed a field: `key` is a setting, "skips", "name" or "reference"."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: FormData | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="form-title")
        yield Static("", id="form-notice", markup=False)
        with Vertical(id="section-run", classes="form-section"):
            yield Static("Run", classes="section-title")
            yield FieldRow("name")
            yield FieldRow("reference")
        for title, keys in SECTIONS:
            with Vertical(classes="form-section"):
                yield Static(title, classes="section-title")
                for key in keys:
                    if key == "skips":
                        yield SkipList()
                    else:
                        yield FieldRow(key, "dropout (all)" if key == "dropout" else None)
        yield Static("", id="form-problems", markup=False)

    # -- reading and writing the fields ---------------------------------------------------------
    def row(self, key: str) -> FieldRow:
        return self.query_one(f"#row-{key}", FieldRow)

    @property
    def skip_list(self) -> SkipList:
        return self.query_one(SkipList)

    def text(self, key: str) -> str:
        return self.row(key).text

    async def show(self, data: FormData) -> None:
        """Show one level: its written values, inherited placeholders, notice and mode."""
        self.data = data
        with self.prevent(Input.Changed, Select.Changed, SkipList.Changed):
            self.set_title(data.title)
            notice = self.query_one("#form-notice", Static)
            notice.update(data.notice)
            notice.display = bool(data.notice)
            self.query_one("#section-run").display = data.kind in ("run", "grid_run")
            for key in RUN_FIELDS + FORM_SETTINGS:
                self.row(key).set_text(data.values.get(key, ""), data.placeholders.get(key, ""))
            skip_list = self.skip_list
            skip_list.inherited = data.inherited_skips
            skip_list.set_note(data.skips_note)
            await skip_list.set_rows(data.skips)
        self.set_read_only(data.read_only)
        self.show_problems({}, [])

    def set_title(self, title: Title) -> None:
        """The heading: which level this is (it follows a run's renames)."""
        self.query_one("#form-title", Static).update(Text.assemble(*title))

    async def show_skip_rows(self, rows: list[SkipText]) -> None:
        """Show these skip rows, unless the rows shown already say exactly this."""
        if self.skip_list.texts() != rows:
            with self.prevent(SkipList.Changed):
                await self.skip_list.set_rows(rows)

    def show_inherited(self, placeholders: dict[str, str], inherited_skips: list[SkipText], note: str) -> None:
        """Update what empty fields inherit (another field of the level changed it, say)."""
        for key in FORM_SETTINGS:
            self.row(key).set_placeholder(placeholders.get(key, ""))
        self.skip_list.inherited = inherited_skips
        self.skip_list.set_note(note)

    def set_read_only(self, read_only: bool) -> None:
        if self.has_class("-read-only") == read_only and not read_only:
            return  # the common case: editable before and after
        for widget in self.query("Input, Select, Button"):
            widget.disabled = read_only
        self.set_class(read_only, "-read-only")

    def own_errors(self) -> dict[str, str]:
        """Each field's problem on its own (the rule set's message), by key; "skips" for the rows."""
        errors = {}
        for key in RUN_FIELDS + FORM_SETTINGS:
            if key in RUN_FIELDS and (self.data is None or self.data.kind != "run"):
                continue
            msg = self.row(key).own_error
            if msg:
                errors[key] = msg
        skip_errors = self.skip_list.errors()
        if skip_errors:
            errors["skips"] = skip_errors[0]
        return errors

    def show_problems(self, by_field: dict[str, str], other: list[str]) -> None:
        """Show each field's own problem, else the one given for it; `other` at the bottom.

        `by_field` keys are settings, "name", "reference", "skips" (the list as a whole) and
        "skips.N" (the row of depth N).
        """
        for key in RUN_FIELDS + FORM_SETTINGS:
            row = self.row(key)
            row.show_error(row.own_error or by_field.get(key))
        by_depth = {k[len("skips."):]: m for k, m in by_field.items() if k.startswith("skips.")}
        self.skip_list.show_errors(by_depth, by_field.get("skips"))
        problems = self.query_one("#form-problems", Static)
        problems.update("\n".join(other))
        problems.display = bool(other)

    # -- events ---------------------------------------------------------------------------------
    @on(Input.Changed, ".field-input")
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Edited(event.input.id.removeprefix("field-")))

    @on(Select.Changed, ".field-input")
    def _select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Edited(event.select.id.removeprefix("field-")))

    @on(SkipList.Changed)
    def _skips_changed(self, event: SkipList.Changed) -> None:
        event.stop()
        self.post_message(self.Edited("skips"))

    def focus_first(self) -> None:
        """Focus the first field that can be edited."""
        for control in self.query(".field-input"):
            node, shown = control, True
            while node is not None and node is not self:
                shown, node = shown and node.display, node.parent
            if shown and not control.disabled:
                control.focus()
                return
