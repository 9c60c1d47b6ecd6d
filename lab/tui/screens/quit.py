"""Dialogs that ask before something irreversible: quitting with unsaved edits or runs in flight,
restarting, and what to do with edits a lab left unsaved."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ChoiceScreen(ModalScreen[str | None]):
    """A question with a few buttons; returns the chosen button's id, None for escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, text: str, choices: list[tuple[str, str, str]], id: str | None = None) -> None:
        """`choices`: (id, label, variant) per button, the first one focused."""
        super().__init__(id=id)
        self.title_text = title
        self.text = text
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, classes="dialog-text")
            with Vertical(classes="dialog-choices"):
                for key, label, variant in self.choices:
                    yield Button(label, id=key, variant=variant)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query(Button).first().focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


STOP = "stop"
LEAVE = "leave"


class QuitScreen(ChoiceScreen):
    """Quitting while a driver trains: stop the runs, leave them running, or stay."""

    def __init__(self, running: int, queued: int, headless: bool) -> None:
        counts = ", ".join(p for p in (f"{running} running" if running else "",
                                        f"{queued} queued" if queued else "") if p)
        driver = ("A headless `dropres-lab run --headless` is training them: stopping asks it to stop too; "
                  "leaving lets it carry on in its terminal."
                  if headless else "If you leave, the background driver keeps training them after the lab closes.")
        super().__init__(
            f"Runs in flight: {counts}",
            f"{driver} Reopen the lab at any time to see their progress.",
            [(STOP, "Stop runs (checkpointed, resumable)", "warning"),
             (LEAVE, "Leave running in the background", "primary"),
             ("cancel", "Cancel", "default")],
            id="quit-dialog",
        )


SAVE = "save"
DISCARD = "discard"


class UnsavedEditsScreen(ChoiceScreen):
    """Quitting with unsaved edits of experiments.toml: save them, discard them, or stay."""

    def __init__(self, file_name: str) -> None:
        super().__init__(
            f"Unsaved edits to {file_name}",
            f"Save writes them to {file_name} (if it has no problems; otherwise the lab stays open "
            "and says why). Discard drops them.",
            [(SAVE, "Save and quit", "primary"),
             (DISCARD, "Discard and quit", "warning"),
             ("cancel", "Cancel", "default")],
            id="unsaved-dialog",
        )


class RecoveredEditsScreen(ChoiceScreen):
    """At start: a lab ended (its terminal closed, say) with unsaved edits; restore or discard them."""

    RESTORE = "restore"
    DISCARD = DISCARD

    def __init__(self, file_name: str, copy_name: str) -> None:
        super().__init__(
            f"Unsaved edits to {file_name} from an earlier session",
            f"A lab ended without saving them; they were kept in {copy_name}. Restore makes them this "
            f"session's unsaved edits (ctrl+s saves them over {file_name} as it is now); discard drops them.",
            [(self.RESTORE, "Restore the edits", "primary"),
             (DISCARD, "Discard them", "warning")],
            id="recovered-dialog",
        )
