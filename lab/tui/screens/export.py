"""A small dialog: where to write the results table, and as CSV or Markdown; and the writing."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from lab.formatting import counted

SUFFIX = {"csv": ".csv", "markdown": ".md"}


def write_export(path: Path, text: str, n_rows: int) -> tuple[str, SeverityLevel]:
    """Write an exported table atomically; returns what to tell the user and its severity."""
    from lab.core.atomic import write_atomic

    target = path.expanduser()
    if target.is_dir():
        return f"{target} is a folder; give a file name, e.g. {target / 'results.csv'}", "error"
    if not target.parent.is_dir():
        return f"the folder {target.parent} does not exist; create it first or choose another", "error"
    try:
        write_atomic(target, text)
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror or exc}", "error"
    return f"wrote {counted(n_rows, 'row')} to {target}", "information"


class ExportScreen(ModalScreen[tuple[Path, str] | None]):
    """Returns (path, "csv" | "markdown"), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: Path) -> None:
        super().__init__()
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label("Export the table shown", classes="dialog-title")
            with RadioSet(id="export-format"):
                yield RadioButton("CSV (full precision)", value=True, id="fmt-csv")
                yield RadioButton("Markdown", id="fmt-markdown")
            yield Label("File")
            yield Input(str(self.default_path), id="export-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    @property
    def fmt(self) -> str:
        return "markdown" if self.query_one("#fmt-markdown", RadioButton).value else "csv"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        box = self.query_one("#export-path", Input)
        path = Path(box.value)
        if path.suffix in SUFFIX.values():
            box.value = str(path.with_suffix(SUFFIX[self.fmt]))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-ok":
            self._done()
        else:
            self.dismiss(None)

    def _done(self) -> None:
        value = self.query_one("#export-path", Input).value.strip()
        if not value:
            self.notify("give a file name", severity="warning")
            return
        self.dismiss((Path(value).expanduser(), self.fmt))

    def action_cancel(self) -> None:
        self.dismiss(None)
