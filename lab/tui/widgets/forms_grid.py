"""The grid builder: "this key over these values", previewed as the runs it makes, then added.

The preview comes from the owner (the Experiments screen), which expands the would-be file
with `parse_experiments`, so the names shown are exactly the names the runs will have and a
problem is the message `dropres-lab validate` would print.
"""

from __future__ import annotations

from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from lab.experiments_document import GridChange, Preview
from lab.experiments_fields import parse_values
from lab.formatting import counted
from lab.toml_edit import toml_value


class GridBuilder(ModalScreen[GridChange | None]):
    """Pick a key and its values, see the runs they make, add them to the suite's grid."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "add", "Add to suite"),
    ]

    def __init__(self, suite: str, keys: list[str], grid: dict[str, list[Any]], grid_text: str,
                 preview: Callable[[GridChange], Preview]) -> None:
        super().__init__()
        self.suite = suite
        self.keys = keys
        self.grid = grid
        self.grid_text = grid_text
        self.preview_fn = preview
        self.names: list[str] = []
        self.problems: list[str] = []
        self.notes: list[str] = []

    def compose(self) -> ComposeResult:
        first = next(iter(self.grid), "dropout")
        with Vertical(id="grid-dialog"):
            yield Static(f"Grid builder: suite {self.suite}", id="grid-title", markup=False)
            yield Static(f"Current grid: {self.grid_text or 'none'}", id="grid-current", markup=False)
            with Horizontal(classes="field-line"):
                yield Label("key", classes="field-label")
                yield Select([(k, k) for k in self.keys], value=first if first in self.keys else Select.NULL,
                             allow_blank=False, compact=True, id="grid-key")
            with Horizontal(classes="field-line"):
                yield Label("values", classes="field-label")
                yield Input(self._values_text(first), placeholder="comma-separated, e.g. 0.0, 0.2, 0.5",
                            compact=True, id="grid-values", select_on_focus=False)
            with Horizontal(classes="field-line"):
                yield Label("", classes="field-label")
                yield Checkbox("replace the whole grid (off: add or change this key)", False,
                               compact=True, id="grid-replace")
            yield Static("", id="grid-summary", markup=False)
            with VerticalScroll(id="grid-preview"):
                yield Static("", id="grid-preview-text", markup=False)
            with Horizontal(id="grid-buttons"):
                yield Button("Add to suite", variant="primary", id="grid-add")
                yield Button("Cancel", id="grid-cancel")

    def on_mount(self) -> None:
        self.update_preview()
        self.query_one("#grid-values", Input).focus()

    def _values_text(self, key: str) -> str:
        values = self.grid.get(key)
        return ", ".join(toml_value(v).strip('"') for v in values) if values else ""

    def change(self) -> GridChange:
        key = str(self.query_one("#grid-key", Select).value)
        values = parse_values(key, self.query_one("#grid-values", Input).value)
        return GridChange(key, values, self.query_one("#grid-replace", Checkbox).value)

    def update_preview(self) -> None:
        change = self.change()
        if not change.values:
            self.names, self.problems, self.notes = [], ["list at least one value, e.g. 0.0, 0.2, 0.5"], []
        else:
            self.names, self.problems, self.notes = self.preview_fn(change)
        summary = self.query_one("#grid-summary", Static)
        if self.problems:
            summary.update(f"Cannot add: {counted(len(self.problems), 'problem')}")
            text = "\n".join(self.problems)
        else:
            summary.update(f"Preview: suite {self.suite} would have {counted(len(self.names), 'run')}"
                           + "".join(f"; {note}" for note in self.notes))
            text = "\n".join(self.names)
        summary.set_class(bool(self.problems), "-error")
        self.query_one("#grid-preview-text", Static).update(text)
        self.query_one("#grid-add", Button).disabled = bool(self.problems)

    @on(Select.Changed, "#grid-key")
    def _key_changed(self, event: Select.Changed) -> None:
        values = self.query_one("#grid-values", Input)
        with self.prevent(Input.Changed):
            values.value = self._values_text(str(event.value))
        self.update_preview()

    @on(Input.Changed, "#grid-values")
    @on(Checkbox.Changed, "#grid-replace")
    def _edited(self) -> None:
        self.update_preview()

    @on(Button.Pressed, "#grid-add")
    def action_add(self) -> None:
        self.update_preview()
        if self.problems:
            self.notify(self.problems[0], title="Grid not added", severity="error")
            return
        self.dismiss(self.change())

    @on(Button.Pressed, "#grid-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
