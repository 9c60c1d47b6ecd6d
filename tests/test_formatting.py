"""The lab's one spelling of durations, losses, rates, statuses and curves (lab/formatting.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import ROOT
from lab.formatting import SPARK, STATUS_STYLE, counted, fmt_duration, fmt_loss, fmt_rate, sparkline, status_style
from lab.store import STATUSES

MIN, HOUR, DAY = 60, 3600, 86400


@pytest.mark.parametrize("seconds, text", [
    (0, "0.0s"), (0.44, "0.4s"), (42, "42.0s"), (59.94, "59.9s"),
    (59.96, "1m00s"), (MIN, "1m00s"), (3 * MIN + 7, "3m07s"), (HOUR - 1, "59m59s"),
    (HOUR, "1h00m"), (2 * HOUR + 5 * MIN, "2h05m"), (DAY - MIN, "23h59m"),
    (DAY, "1d00h"), (2 * DAY + 4 * HOUR, "2d04h"), (99 * DAY + 23 * HOUR, "99d23h"),
])
def test_compact_durations_fit_a_six_character_column(seconds, text):
    """Table cells (results wall time, Runs and headless ETAs): the same spelling everywhere."""
    assert fmt_duration(seconds) == text and len(text) <= 6


@pytest.mark.parametrize("seconds, text", [
    (0.44, "0.4 s"), (9.94, "9.9 s"), (9.96, "10 s"), (42, "42 s"), (59.6, "1 min 0 s"),
    (12 * MIN + 30, "12 min 30 s"), (HOUR, "1 h 00 min"), (3 * HOUR + 5 * MIN, "3 h 05 min"),
    (DAY, "1 d 0 h"), (2 * DAY + 4 * HOUR, "2 d 4 h"),
])
def test_long_durations_read_as_words(seconds, text):
    """Predictions in sentences (bench, the launch dialog)."""
    assert fmt_duration(seconds, "long") == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00:00"), (5.9, "0:00:05"), (80, "0:01:20"), (HOUR + 2 * MIN + 3, "1:02:03"), (DAY + 1, "24:00:01"),
])
def test_clock_durations_line_up_down_a_log(seconds, text):
    assert fmt_duration(seconds, "clock") == text


@pytest.mark.parametrize("form", ["compact", "long", "clock"])
def test_no_duration_is_blank_and_a_negative_one_is_zero(form):
    assert fmt_duration(None, form) == fmt_duration(math.nan, form) == fmt_duration(math.inf, form) == ""
    assert fmt_duration(-3.0, form) == fmt_duration(0.0, form)


def test_an_unknown_duration_form_is_an_error():
    with pytest.raises(ValueError, match="unknown duration form"):
        fmt_duration(1.0, "short")  # type: ignore[arg-type]


def test_losses_have_four_decimals_and_show_divergence():
    assert fmt_loss(1.23456) == "1.2346" and fmt_loss(12.0) == "12.0000" and fmt_loss(0) == "0.0000"
    assert fmt_loss(None) == ""
    assert fmt_loss(math.nan) == "nan" and fmt_loss(math.inf) == "inf"


def test_rates_have_thousands_separators():
    assert fmt_rate(12345.6) == "12,346" and fmt_rate(0.0) == "0" and fmt_rate(None) == ""


def test_every_store_status_has_its_own_style():
    """Each status the store can hold is coloured, and no two look alike (failed is not diverged)."""
    assert set(STATUS_STYLE) == set(STATUSES)
    assert len(set(STATUS_STYLE.values())) == len(STATUS_STYLE)
    assert all(status_style(s) == STATUS_STYLE[s] != "" for s in STATUSES)
    assert status_style("no such status") == ""


def test_sparkline_rises_with_the_loss():
    assert sparkline([1.0, 2.0, 3.0]) == SPARK[0] + SPARK[len(SPARK) // 2] + SPARK[-1]
    assert sparkline([3.0, 2.0, 1.0]) == SPARK[-1] + SPARK[len(SPARK) // 2] + SPARK[0]


def test_sparkline_of_constant_empty_and_short_series():
    assert sparkline([2.5] * 5) == SPARK[0] * 5  # flat is flat, not an error
    assert sparkline([]) == "" and sparkline([math.nan, None]) == ""
    assert sparkline([4.0]) == SPARK[0]
    assert len(sparkline([1.0, 2.0])) == 2


def test_sparkline_keeps_the_last_values_and_skips_non_finite_ones():
    values = [float(i) for i in range(40)]
    assert len(sparkline(values, width=12)) == 12 and sparkline(values, width=12) == sparkline(values[-12:], width=12)
    assert sparkline([1.0, math.nan, math.inf, None, 3.0]) == sparkline([1.0, 3.0])


def test_the_tui_does_not_import_the_headless_driver():
    """The TUI formats from lab.formatting, so it does not pull in headless (and its workers)."""
    code = "import sys, lab.tui.app; assert 'lab.headless' not in sys.modules, 'lab.headless imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- counts and messages (issue 11, item 9) -------------------------------------------------------


def test_counts_agree_with_their_nouns():
    assert [counted(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert counted(1, "run entry", "run entries") == "1 run entry"
    assert counted(3, "run entry", "run entries") == "3 run entries"


def test_no_message_in_the_lab_spells_a_plural_by_hand():
    """Every "N thing(s)" in a message goes through `counted`: no "1 runs", no "run(s)"."""
    import io
    import re
    import tokenize

    hand_made = re.compile(r"\{'s' if|\{\"s\" if|[a-z]\(s\)")
    offenders = []
    for path in sorted((ROOT / "lab").rglob("*.py")):
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
            docstring = tok.string.startswith(('"""', "'''"))
            if tok.type == tokenize.STRING and not docstring and hand_made.search(tok.string):
                offenders.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}")
    assert offenders == []


def test_the_skip_rate_range_message_does_not_contradict_itself():
    from lab.core.config import check_value

    msg = check_value("skips", {"2": 1.5})
    assert msg.startswith("skips.2 = 1.5 is outside [0, 1]")
    assert "[0, 1)" not in msg and 'skip_dropout = "paper"' in msg


def test_an_empty_field_is_never_an_error():
    """Empty text means "inherit": no field of the form says "must be a number, got ''"."""
    from lab.experiments_fields import FORM_SETTINGS, field_problem

    for key in FORM_SETTINGS + ("reference",):
        for text in ("", "   ", "\t"):
            assert field_problem(key, text) is None, key
