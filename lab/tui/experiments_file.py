"""The experiments file as the Results view needs it: its claims and tolerances.

Read again only when the file changes (its mtime), so a redraw costs nothing; None when there
is no file or it has problems (the Experiments screen shows those). The Results screen reads
tolerances and claims from it, and the store poller which suites' runs the claims need
(`claim_suites`), each with its own instance since each works in its own thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


class ExperimentsFile:
    """One experiments file, loaded lazily and again whenever it changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._loaded: tuple[float, Any] | None = None  # (mtime, Experiments or None)

    def get(self) -> Any:
        """The parsed file, or None (absent, unreadable, or with problems)."""
        if self.path is None:
            return None
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        if self._loaded is None or self._loaded[0] != mtime:
            from lab.experiments import ExperimentsError, load_experiments

            try:
                loaded = load_experiments(self.path)
            except ExperimentsError:
                loaded = None
            self._loaded = (mtime, loaded)
        return self._loaded[1]

    def claim_suites(self, suites: Iterable[str]) -> list[str]:
        """The suites whose every run the claims of `suites` need (`lab.claims.referenced_suites`
        of those that have claims); none when no suite among them has any."""
        experiments = self.get()
        if experiments is None:
            return []
        from lab.claims import referenced_suites

        claimed = [s for s in suites if getattr(experiments.suites.get(s), "claims", None)]
        return referenced_suites(experiments, claimed) if claimed else []
