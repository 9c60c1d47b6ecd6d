"""report.md: the settings, results, claims, figures and provenance of each suite, as Markdown.

Pure text from `SuiteData` (no store, no matplotlib): the results table is `lab.results`'
Markdown (the same cells `dropres-lab results --format markdown` prints), so the report and
the command never disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from lab.formatting import counted
from lab.results import _md, columns, common_settings, fmt_setting, to_markdown

from .data import SuiteData
from .figures import FIGURES, figure_name

#: What a replicate interval covers, said once at the top of every report.
INTERVAL_NOTE = (
    "Intervals are 95 % Student-t intervals over a row's replicates (n - 1 degrees of freedom). "
    "Replicates (`seeds = [...]`) differ in initialisation and dropout masks; the order of training "
    "batches comes from `data_seed`, which they share, so the intervals leave data-order variance out "
    "unless the suite also sets `data_seeds = [...]`. A row with one run shows \"1 seed\" and no interval."
)


def report_markdown(suites: Sequence[SuiteData], fmt: str, store_dir: Path, version: str,
                    generated: datetime | None = None) -> str:
    """The whole report.md for `suites`, embedding their figures (written beside it as `fmt`)."""
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# dropres-lab report",
        "",
        f"{', '.join(s.suite for s in suites)} — {counted(sum(len(s.runs) for s in suites), 'run')} "
        f"from the store at `{store_dir}`, written {when} by dropres-lab {version}.",
        "",
        INTERVAL_NOTE,
        "",
        "Losses are in nats per character. *final val*: the last evaluation's estimate "
        "(`eval_iters` random batches), the value the paper publishes; *exact val*: the whole "
        "validation split once at the end, the steadier number the comparisons use.",
        "",
    ]
    for data in suites:
        lines += suite_section(data, fmt)
    return "\n".join(lines).rstrip() + "\n"


def suite_section(data: SuiteData, fmt: str) -> list[str]:
    """One suite: its settings, results, figures and the provenance of its runs."""
    lines = [f"## {data.suite}", ""]
    if data.description:
        lines += [data.description, ""]
    lines += ["### Settings", "", "Shared by every run (the table's columns are what differs):", ""]
    shared = common_settings([run.config.to_dict() for run in data.runs])
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| {_md(key)} | {_md(fmt_setting(value))} |" for key, value in shared.items()]
    lines += ["", "### Results", ""]
    table = to_markdown(data.rows).split("\n", 2)[2]  # without its "### suite" heading
    lines += [table.rstrip(), ""]
    note = results_note(data)
    lines += [note, ""] if note else []
    lines += ["### Claims", ""]
    if data.claims:
        from lab.claims import claims_markdown

        lines += [claims_markdown(data.suite, data.claims).split("\n", 2)[2].rstrip(), ""]
    else:
        lines += ["No claims stated for this suite (`claims = [...]` in experiments.toml).", ""]
    lines += ["### Figures", ""]
    for stem, what in FIGURES:
        name = figure_name(data.suite, stem, fmt)
        lines += [f"![{data.suite}: {what}]({name})", "", f"*{what.capitalize()}.*", ""]
    lines += provenance_section(data)
    return lines


def results_note(data: SuiteData) -> str:
    """How to read the statistics columns the suite's table has (and only those)."""
    headers = [c.header for c in columns(data.rows)]
    parts = []
    if "exact 95% CI" in headers:
        parts.append("*exact 95% CI*: the interval of the mean exact val.")
    if "vs best (exact val)" in headers:
        parts.append(
            "*vs best*: the row's mean exact val minus that of the best row it may be compared with (same "
            "settings apart from what the suite varies, same dtype used"
            + ("; *set* numbers these sets" if "set" in headers else "")
            + "), its 95 % interval and two-sided p-value (Welch's test, or the paired test where both rows "
              "have the same seeds), then `worse` (p < 0.05) or `n.s.`; \"1 seed\": no test.")
    if any(h.startswith("Δ ref") for h in headers):
        parts.append(f"*Δ ref*: mean final val minus the published value, ✓ within the tolerance of "
                     f"±{fmt_setting(_tolerance(data))}, ✗ outside it.")
    return " ".join(parts)


def _tolerance(data: SuiteData) -> float:
    return data.rows[0].tolerance if data.rows else 0.03


def provenance_section(data: SuiteData) -> list[str]:
    """Which code, library and hardware produced each run, as the store recorded it at launch
    (lab, git commit, torch, python, corpus) and when training started (device, dtype)."""
    lines = ["### Provenance", "",
             "| run | run id | status | lab | git commit | torch | python | device | dtype | corpus sha256 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in data.runs:
        p = run.provenance
        sha = str(p.get("corpus_sha256") or "")[:12]
        cells = [run.name, run.run_id, run.status, p.get("lab"), p.get("git_commit") or "unknown", p.get("torch"),
                 p.get("python"), run.device or p.get("device"), run.dtype or p.get("dtype"), sha]
        lines.append("| " + " | ".join(_md("" if c is None else str(c)) for c in cells) + " |")
    return lines + [""]
