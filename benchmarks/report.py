"""Print a benchmark's Markdown report and, when asked, write it where results are kept."""

from __future__ import annotations

from pathlib import Path


def emit_report(lines: list[str], out: Path | None, filename: str) -> str:
    """Print `lines` as one Markdown text and write it to out/filename when `out` is given."""
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / filename).write_text(text)
    return text
