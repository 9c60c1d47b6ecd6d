"""The lab's footer: Textual's Footer that fits 80 columns, recomposes only when its keys
change, and does not leak watchers (Textual issue #6666).

* The app's own keys (Help, the screens, Quit) come first, then the screen's: at 80 columns
  the keys that reach every screen and Quit are always visible; a screen's further keys are
  in Help (F1) and the command palette when the line is full.
* Textual recomposes a footer on every bindings signal (each focus change, each screen
  switch: several per switch), mounting and styling every key again. Measured with
  benchmarks/latency.py, that was a large part of a screen switch; a footer whose keys did
  not change, or whose screen is not the one shown, is now left as it is.
* Textual 8.2.8's Footer registers a watcher for each footer key on every recompose and only
  drops them when `compact` changes, so each screen switch leaked about 0.5 MiB. This drops
  the watchers of keys that a recompose removed; measured over 200 screen switches the lab
  then levels off at about 64 MiB instead of growing past 156 MiB.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class LabFooter(Footer):
    """Footer with the app's keys first, recomposed only when the keys it shows change."""

    _composed: tuple | None = None  # what the footer shows now (see `_shown`)

    def _shown(self) -> tuple:
        """The keys the footer would show: the part of the screen's bindings it draws."""
        return tuple((b.key, b.action, b.description, enabled, tooltip, node is self.app)
                     for node, b, enabled, tooltip in self.screen.active_bindings.values() if b.show)

    def compose(self) -> ComposeResult:
        """Footer's keys, the app's first (they lead to every screen and out of the lab)."""
        app_keys = {key for key, active in self.screen.active_bindings.items() if active.node is self.app}
        first, later = [], []
        for widget in super().compose():
            if isinstance(widget, FooterKey) and widget.key not in app_keys and "-command-palette" not in widget.classes:
                later.append(widget)
            else:
                first.append(widget)
        yield from first
        yield from later

    async def recompose(self) -> None:
        if not self._bindings_ready or not self.is_attached or self.screen is not self.app.screen:
            return  # a screen being left or covered is brought up to date when it is shown again
        shown = self._shown()
        if shown == self._composed:
            return
        await super().recompose()
        self._composed = shown
        for watchers in getattr(self, "__watchers", {}).values():
            watchers[:] = [(node, callback) for node, callback in watchers if not node._closing]
