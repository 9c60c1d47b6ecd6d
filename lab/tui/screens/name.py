"""A dialog that asks for a name, checked as it is typed (a new suite's, a suite's new name)."""

from __future__ import annotations

from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class NameScreen(ModalScreen[str | None]):
    """Ask for a name; returns it, or None for escape. Enter takes it only when `problem`
    (the document model's rule, e.g. `suite_name_problem`) finds nothing wrong, and the
    problem is shown under the field as it is typed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, text: str, value: str, problem: Callable[[str], str | None],
                 ok_label: str = "OK") -> None:
        super().__init__(id="name-dialog")
        self.title_text = title
        self.text = text
        self.value = value
        self.problem = problem
        self.ok_label = ok_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, classes="dialog-text", markup=False)
            yield Input(self.value, id="name-input")
            yield Label("", id="name-problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok_label, id="name-ok", variant="primary")
                yield Button("Cancel", id="name-cancel")

    def on_mount(self) -> None:
        name = self.query_one("#name-input", Input)
        name.focus()
        name.select_all()  # typing replaces the proposed name
        self._check()

    def _check(self) -> str | None:
        problem = self.problem(self.query_one("#name-input", Input).value)
        self.query_one("#name-problem", Label).update(problem or "")
        self.query_one("#name-ok", Button).disabled = problem is not None
        return problem

    @on(Input.Changed, "#name-input")
    def _typed(self) -> None:
        self._check()

    @on(Input.Submitted, "#name-input")
    @on(Button.Pressed, "#name-ok")
    def _take(self) -> None:
        if self._check() is None:
            self.dismiss(self.query_one("#name-input", Input).value)

    @on(Button.Pressed, "#name-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["NameScreen"]
