"""What a user types into the Experiments form, read and checked: the fields, text as values.

The form (`lab.tui.widgets.forms`) and the document model (`lab.experiments_document`) both
need to know which fields a level has and whether typed text means something the file can
hold; this is that one rule set, on top of `lab.core.config.check_value` (a setting) and
`lab.experiments` (names, references, a suite's tolerance and claims). Empty text means "inherit" wherever a field can
inherit.
"""

from __future__ import annotations

from typing import Any

from lab.core.config import DROPOUT_SITES, check_value, value_from_text
from lab.experiments import claim_name_problem, claim_problems, name_problem, reference_problem, tolerance_problem

#: The form's sections and the settings each shows, top to bottom.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Model shape", ("n_layer", "n_head", "n_embd", "block_size", "batch_size")),
    ("Dropout", ("dropout", *DROPOUT_SITES)),
    ("Skip paths", ("skips",)),
    ("Conventions", ("norm", "skip_dropout")),
    ("Schedule", ("max_iters", "lr", "min_lr", "warmup_iters", "eval_interval", "eval_iters")),
    ("Seed", ("seed",)),
)

#: Every setting the form edits (the `dropout` shorthand included), in form order.
FORM_SETTINGS: tuple[str, ...] = tuple(k for _, keys in SECTIONS for k in keys if k != "skips")

#: Fields of a run entry only: its name and its published reference loss.
RUN_FIELDS = ("name", "reference")

#: A skip row as typed: (depth text, rate text).
SkipText = tuple[str, str]


def number_from_text(text: str) -> object:
    """A number typed as text, or the stripped text when it is not one (for a message)."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


def field_problem(key: str, text: str) -> str | None:
    """Why one field's text is wrong on its own (empty text means "inherit" and is fine)."""
    if key == "name":  # a run entry needs its name; other fields inherit when empty
        return name_problem(text)
    if not text.strip():
        return None
    if key == "reference":
        return reference_problem(number_from_text(text))
    if key == "tolerance":
        return tolerance_problem(number_from_text(text))
    return check_value(key, value_from_text(key, text))


def skip_row_problems(rows: list[SkipText]) -> list[str | None]:
    """Each skip row's problem: a depth or rate the rule set refuses, one missing, or a depth
    listed twice (a table holds each depth once, so the file could not say what the rows say)."""
    out: list[str | None] = []
    seen: set[int] = set()
    for depth_text, rate_text in rows:
        depth, rate = depth_text.strip(), rate_text.strip()
        msg = None
        if not depth:
            msg = "give the skip path a depth (the sub-layers it spans, 1 = the ordinary residual)"
        else:
            msg = check_value("skips", {depth: 0.0})
        if not msg and not rate:
            msg = f"give skip depth {depth} a rate (0 keeps the path without dropout)"
        if not msg:
            msg = check_value("skips", {depth: value_from_text(f"skips.{depth}", rate)})
        if not msg and int(depth) in seen:
            msg = f"skip depth {int(depth)} is listed twice; give each depth one rate"
        if not msg:
            seen.add(int(depth))
        out.append(msg)
    return out


def next_free_depth(rows: list[SkipText]) -> int:
    """The smallest depth no row names: what "+ add skip path" proposes."""
    taken = set()
    for depth, _ in rows:
        try:
            taken.add(int(depth.strip()))
        except ValueError:
            pass
    depth = 1
    while depth in taken:
        depth += 1
    return depth


def parse_values(key: str, text: str) -> list[Any]:
    """Comma-separated values, each read as the setting reads typed text."""
    return [value_from_text(key, part) for part in text.split(",") if part.strip()]


__all__ = [
    "claim_name_problem", "claim_problems", "FORM_SETTINGS", "RUN_FIELDS", "SECTIONS", "SkipText", "field_problem", "next_free_depth",
    "number_from_text", "parse_values", "skip_row_problems",
]
