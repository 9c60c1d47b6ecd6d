"""`dropres-lab report`: report.md and figures for suites in the store.

`write_report` reads the suites once (`data.read_suites`), draws each suite's figures
(`figures`, matplotlib, imported only here) and writes report.md beside them (`markdown`).
The command line and the TUI's Results screen both call it; neither draws anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .data import ReportError, SuiteData, read_suites

__all__ = ["ReportError", "Written", "write_report"]


@dataclass(frozen=True)
class Written:
    """What a report wrote: report.md and the figures, and the suites it covers."""

    markdown: Path
    figures: list[Path]
    suites: list[str]

    def summary(self) -> str:
        """One line for the user: where the report is."""
        from lab.formatting import counted

        return f"report of {', '.join(self.suites)} written to {self.markdown} ({counted(len(self.figures), 'figure')} beside it)"


def write_report(store_dir: Path, suites: Sequence[str] | None, output: Path, fmt: str = "png",
                 experiments_file: Path | None = None) -> Written:
    """Write report.md and the figures of `suites` (None: every suite in the store) into `output`.

    `experiments_file` (optional) gives suite descriptions, tolerances and the claims to test,
    and tells a suite defined there but not yet trained from a misspelt one. Raises
    ReportError with one line for a user's mistake.
    """
    from lab import __version__

    from .figures import FORMATS, write_figures
    from .markdown import report_markdown

    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    data = read_suites(store_dir, suites, _experiments(experiments_file))
    folder = _writable_folder(output)
    figures: list[Path] = []
    try:
        for suite in data:
            figures += write_figures(suite, folder, fmt)
        markdown = folder / "report.md"
        from lab.core.atomic import write_atomic

        write_atomic(markdown, report_markdown(data, fmt, store_dir, __version__))
    except OSError as e:
        raise ReportError(f"cannot write the report to {folder}: {e.strerror or e}") from None
    return Written(markdown.resolve(), [p.resolve() for p in figures], [d.suite for d in data])


def _experiments(path: Path | None):
    """The experiments file (descriptions, tolerances, claims), or None when there is none."""
    if path is None or not path.is_file():
        return None
    from lab.experiments import ExperimentsError, load_experiments

    try:
        return load_experiments(path)
    except ExperimentsError as exc:
        first = exc.problems[0] if exc.problems else exc
        raise ReportError(f"{first} (`dropres-lab validate --file {path}` lists every problem)") from None


def _writable_folder(output: Path) -> Path:
    """`output`, created if need be; a one-line ReportError if it cannot hold the report."""
    folder = output.expanduser()
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"--output {output} is a file; give a folder for report.md and the figures")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".dropres-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ReportError(f"cannot write the report to {output}: {e.strerror or e}") from None
    return folder
