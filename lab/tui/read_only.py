"""The lab's read-only view (`dropres-lab --read-only`, `dropres-lab serve --read-only`).

A view for showing a colleague the runs: every screen and every key that only looks, none of
the keys that write (launch, cancel, resume, restart, stop, edit, save, export). A screen lists
the actions that write in `WRITES`; in a read-only lab `check_action` turns them off, so
Textual leaves them out of the footer and ignores their keys. The app refuses the requests
behind them as well, so nothing reached another way (the command palette) writes either.
"""

from __future__ import annotations

from typing import ClassVar

from .state import LabState

#: What a refused write says (the key did nothing: the notification tells why).
READ_ONLY_NOTE = "read-only view: {what} is off (open the lab without --read-only to do it)"


class WritesOffWhenReadOnly:
    """Mixin for a screen (or the app) with `state: LabState`: `WRITES` actions are off when read-only."""

    WRITES: ClassVar[frozenset[str]] = frozenset()
    state: LabState

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WRITES and self.state.read_only:
            return False
        return super().check_action(action, parameters)  # type: ignore[misc]
