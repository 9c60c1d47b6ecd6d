"""Help: every key of every screen, read from the bindings themselves so it cannot go stale."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

INTRO = (
    "Everything shown is read from the run store, so runs of a headless `dropres-lab run` show "
    "up here too. Launching queues runs and starts a background driver; cancel, resume and stop "
    "are requests it acts on. Keys in the footer can be clicked; ctrl+p searches every action."
)


def key_name(key: str) -> str:
    names = {"question_mark": "?", "space": "space", "escape": "esc", "enter": "enter"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def binding_rows(bindings: Sequence[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) for each described binding; keys of one action are merged."""
    rows: dict[str, list[str]] = {}
    for b in bindings:
        if not isinstance(b, Binding) or not b.description:
            continue
        rows.setdefault(b.description, []).append(key_name(b.key_display or b.key))
    return [(", ".join(keys), desc) for desc, keys in rows.items()]


#: Below this many columns the sections stand in one column (two would wrap every description).
TWO_COLUMNS_MIN = 90


class KeySections:
    """The sections of keys in two columns where they fit, else in one (at 80 columns the
    help is 72 wide); laid out when drawn, so it follows the terminal's size."""

    def __init__(self, sections: list[Group], lines: list[int]) -> None:
        self.sections = sections
        self.lines = lines  # rows of each section, to balance the two columns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width < TWO_COLUMNS_MIN:
            yield Group(*self.sections)
            return
        sides: tuple[list, list] = ([], [])
        height = [0, 0]
        for section, lines in zip(self.sections, self.lines):  # each section into the shorter column
            side = 0 if height[0] <= height[1] else 1
            sides[side].append(section)
            height[side] += lines
        columns = Table.grid(padding=(0, 4))
        columns.add_column(ratio=1)
        columns.add_column(ratio=1)
        columns.add_row(Group(*sides[0]), Group(*sides[1]))
        yield columns


class HelpScreen(ModalScreen[None]):
    """Keys per screen; `sections` is [(title, bindings)]."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "Close")]

    def __init__(self, sections: list[tuple[str, Sequence[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Label("dropres-lab: keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(self._keys_table())

    def _keys_table(self) -> Group:
        """Sections in two columns where the help is wide enough, so every key fits on one screen."""
        sections, lines = [], []
        for title, bindings in self.sections:
            rows = binding_rows(bindings)
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True, min_width=12)
            grid.add_column()
            for keys, desc in rows:
                grid.add_row(keys, desc)
            sections.append(Group(Text(title, style="bold underline"), grid, Text("")))
            lines.append(len(rows) + 2)
        return Group(Text(INTRO, style="dim"), Text(""), KeySections(sections, lines))

    def action_close(self) -> None:
        self.dismiss(None)
