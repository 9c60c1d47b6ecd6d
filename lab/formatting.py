"""How the lab spells numbers and statuses for people: one place for every front-end.

The headless runner, `dropres-lab results`/`bench` and the TUI show the same quantities (losses,
durations, token rates, run statuses, loss curves). Spelling each one here, once, keeps them
identical everywhere: the same ETA reads the same in the headless table and the Runs screen,
and a diverged run has the same colour in both. Pure Python on purpose: the TUI imports this
without pulling in the trainer, the workers or the headless driver.

Styles are Rich style strings, because they colour Rich `Text` (headless tables, the CLI's
results table and the TUI's table cells alike); Textual widget styling stays in .tcss files.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

__all__ = ["STATUS_STYLE", "VERDICT_STYLE", "counted", "fmt_comparison", "fmt_duration", "fmt_interval", "fmt_loss", "fmt_p", "fmt_rate",
           "sparkline", "status_style", "verdict_style"]


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# -- counts --------------------------------------------------------------------------------


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """A count with its noun agreeing: "1 run", "3 runs", "0 runs"; `plural` where adding
    "s" is wrong ("1 match", "2 matches"). One spelling, so no message says "1 runs"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# -- losses and rates ----------------------------------------------------------------------


def fmt_loss(x: float | None) -> str:
    """A loss to 4 decimals; empty for no value. NaN and infinity read "nan" and "inf": a
    diverged loss is worth seeing as such, not as a blank."""
    return "" if x is None else f"{x:.4f}"


def fmt_rate(x: float | None) -> str:
    """Tokens per second with thousands separators ("12,345"); empty for no value."""
    return "" if x is None else f"{x:,.0f}"


# -- durations -----------------------------------------------------------------------------

DurationForm = Literal["compact", "long", "clock"]


def fmt_duration(seconds: float | None, form: DurationForm = "compact") -> str:
    """A span of time, spelled for where it is shown; empty for no value (or a non-finite one).

    - "compact" (the default), for table cells and one-line status text where width is scarce:
      the results table's wall time, ETAs in the Runs screen, its run panel and the headless
      table: "42.0s", "3m07s", "2h05m", "2d04h" (never more than 6 characters below 100 days).
    - "long", for sentences a person reads once, such as bench predictions ("predicted wall
      time ...", "measured in ..."): "0.4 s", "42 s", "12 min 30 s", "3 h 05 min", "2 d 4 h",
      as precise as a prediction deserves.
    - "clock", for stamps down a log that must line up and sort: "0:00:05", "1:02:03", "26:00:00".

    Negative spans (clock skew between processes) read as zero.
    """
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, float(seconds))
    s = int(round(seconds))
    if form == "clock":
        s = int(seconds)  # a stamp says which second it is in, so it never runs ahead
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if form == "long":
        if seconds < 9.95:
            return f"{seconds:.1f} s"
        if s < 60:
            return f"{s} s"
        if s < 3600:
            return f"{s // 60} min {s % 60} s"
        if s < 86400:
            return f"{s // 3600} h {s % 3600 // 60:02d} min"
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if form != "compact":
        raise ValueError(f"unknown duration form {form!r}")
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# -- statuses ------------------------------------------------------------------------------

#: The Rich style of each run status (every status the store knows). Failed (the run broke)
#: and diverged (training blew up, a result in its own right) differ on purpose.
STATUS_STYLE: dict[str, str] = {
    "queued": "dim",
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "diverged": "magenta",
    "stopped": "yellow",
}


def status_style(status: str) -> str:
    """The Rich style for a run status; plain for a status this lab does not know."""
    return STATUS_STYLE.get(status, "")


# -- curves --------------------------------------------------------------------------------

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float | None], width: int = 16) -> str:
    """The last `width` finite values as block characters, lower loss lower bar; missing and
    non-finite values (a diverged evaluation) are left out. A flat series is a flat line."""
    vals = [v for v in values if _finite(v)][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    top = len(SPARK) - 1
    return "".join(SPARK[min(top, int((v - lo) / span * top + 0.5))] for v in vals)


# -- statistics ----------------------------------------------------------------------------

#: The Rich style of each verdict: a row against its comparable set's best ("best", "worse",
#: "n.s.", "1 seed", "no variance") and a claim ("supported", "contradicted", "inconclusive").
VERDICT_STYLE: dict[str, str] = {
    "best": "bold green",
    "worse": "red",
    "better": "green",
    "n.s.": "",
    "1 seed": "dim",
    "no variance": "dim",
    "supported": "bold green",
    "contradicted": "bold red",
    "inconclusive": "yellow",
}


def verdict_style(verdict: str) -> str:
    """The Rich style for a verdict word; plain for one this lab does not know."""
    return VERDICT_STYLE.get(verdict, "")



def fmt_p(p: float | None) -> str:
    """A p-value as "p=0.12", "p=0.034", "p<0.001"; empty for no test. Two significant
    digits: more would claim a precision a handful of seeds cannot give."""
    if p is None or not math.isfinite(p):
        return ""
    if p < 0.001:
        return "p<0.001"
    return f"p={float(f'{p:.2g}'):g}"


def fmt_interval(low: float | None, high: float | None, signed: bool = True) -> str:
    """A 95 % interval as "[-0.0012, +0.0094]" (signed: a difference) or "[1.5480, 1.5612]"
    (a loss); empty when there is none."""
    if low is None or high is None:
        return ""
    spell = (lambda x: f"{x:+.4f}") if signed else fmt_loss
    return f"[{spell(low)}, {spell(high)}]"


def fmt_comparison(diff: float | None, low: float | None, high: float | None, p: float | None,
                   word: str = "") -> str:
    """A difference with its interval, p-value and verdict word, as every view shows it:
    "+0.0041 [-0.0012, +0.0094] p=0.12 n.s."; parts without a value are left out."""
    parts = ["" if diff is None else f"{diff:+.4f}", fmt_interval(low, high), fmt_p(p), word]
    return " ".join(p for p in parts if p)
