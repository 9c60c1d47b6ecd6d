"""What a report shows of one suite, read from the store once: runs, result rows and curves.

The figures and report.md are drawn from a `SuiteData` so that they never touch the store and
every number in them comes from one read. Replicates are merged as `lab.results` merges them
(`result_rows(..., replicates=True)`): the figures and the results table name the same rows.
A row's curve is the mean of its replicates' validation losses at each evaluation step, with
the 95 % interval of that mean where two or more replicates reached the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from lab.results import ResultRow, fmt_setting, result_rows, setting_value, varied_settings
from lab.store import RunRow, Store

if TYPE_CHECKING:
    from lab.claims import ClaimResult


class ReportError(Exception):
    """A report that cannot be written as asked (unknown suite, no runs, unwritable folder):
    one line for the user, exit code 2 on the command line."""


@dataclass(frozen=True)
class Band:
    """One result row's validation curve: the mean over its replicates at each evaluation step,
    and the 95 % interval of that mean (None where fewer than two replicates have the step)."""

    steps: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]

    @property
    def has_band(self) -> bool:
        return any(v is not None for v in self.low)


@dataclass(frozen=True)
class SweptAxis:
    """How the swept-setting figures place rows along x: one position per row, in `order`.

    With one varied setting whose values are all numbers, rows sit in the order of that
    value and are labelled by it (`setting` names the axis); otherwise they sit in the suite's
    order and are labelled by run name, as the results table names them.
    """

    setting: str | None
    order: tuple[int, ...]  # indices into SuiteData.rows
    ticks: tuple[str, ...]


@dataclass
class SuiteData:
    """One suite as the report shows it (see the module docstring)."""

    suite: str
    description: str
    runs: list[RunRow]  # every run of the suite in the store, in store order
    rows: list[ResultRow]  # replicates merged, ranked as the results table ranks them
    labels: list[str]  # how each row is named in legends and on axes (unique within the suite)
    curves: list[Band]  # each row's validation curve
    per_run: list[list[RunRow]]  # each row's runs
    claims: list[ClaimResult] = field(default_factory=list)  # the suite's claims, tested (`lab.claims`)

    def axis(self) -> SweptAxis:
        """Where the swept-setting figures put each row (see `SweptAxis`)."""
        by_store_order = sorted(range(len(self.rows)), key=lambda i: self._first_index(i))
        keys = varied_settings([r.config for r in self.rows])
        if len(keys) == 1:
            values = [setting_value(r.config, keys[0]) for r in self.rows]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                order = sorted(by_store_order, key=lambda i: values[i])
                return SweptAxis(keys[0], tuple(order), tuple(fmt_setting(values[i]) for i in order))
        return SweptAxis(None, tuple(by_store_order), tuple(self.labels[i] for i in by_store_order))

    def _first_index(self, i: int) -> int:
        ids = set(self.rows[i].run_ids)
        return next((k for k, run in enumerate(self.runs) if run.run_id in ids), len(self.runs))


def read_suites(store_dir: Path, suites: Sequence[str] | None, experiments: Any = None) -> list[SuiteData]:
    """The named suites (None or empty: every suite in the store) with their curves and claims.

    `experiments` (a `lab.experiments.Experiments`, optional) gives descriptions, tolerances
    and claims, and tells a suite defined there but not trained yet ("has no runs in the
    store") from a misspelt one ("no suite", with the close matches). Claims may name runs of
    other suites ("suite/name"): those suites' runs are read too, to test them.
    """
    from lab.claims import claim_results, referenced_suites, suite_tolerances
    from lab.store import DB_NAME

    if not (store_dir / DB_NAME).is_file():
        raise ReportError(f"no runs yet at {store_dir}; run `dropres-lab run --headless` first")
    defined = experiments.suites if experiments is not None else {}
    with Store.open(store_dir) as store:
        present = store.suites()
        names = list(dict.fromkeys(suites or present))
        if not names:
            raise ReportError(f"no runs yet at {store_dir}; run `dropres-lab run --headless` first")
        for name in names:
            if name not in present:
                raise ReportError(_missing_suite(name, present, list(defined), store_dir))
        wanted = referenced_suites(experiments, names)  # the claims' other suites too
        everything = [r for r in store.runs() if r.suite in wanted]
        chosen = [r for r in everything if r.suite in names]
        curves = {r.run_id: [(step, loss) for step, _, loss, _ in store.metrics(r.run_id, "val")] for r in chosen}
    rows = result_rows(chosen, replicates=True, tolerances=suite_tolerances(experiments))
    claims = claim_results(experiments, everything, names)
    out = []
    for name in names:
        runs = [r for r in chosen if r.suite == name]
        suite_rows = [r for r in rows if r.suite == name]
        description = defined[name].description if name in defined else ""
        out.append(_suite_data(name, description, runs, suite_rows, curves, claims.get(name, [])))
    return out


def _missing_suite(name: str, present: Sequence[str], known: Sequence[str], store_dir: Path) -> str:
    if name in known:
        return f"suite {name!r} has no runs in the store at {store_dir}; train it first: dropres-lab run --headless {name}"
    import difflib

    close = difflib.get_close_matches(name, list(present) + [k for k in known if k not in present], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"no suite {name!r} in the store at {store_dir}; {hint}suites with runs: {', '.join(present)}"


def _suite_data(suite: str, description: str, runs: list[RunRow], rows: list[ResultRow],
                curves: dict[str, list[tuple[int, float]]], claims: list) -> SuiteData:
    by_id = {r.run_id: r for r in runs}
    per_run = [[by_id[i] for i in row.run_ids] for row in rows]
    return SuiteData(suite, description, runs, rows, row_labels(rows),
                     [mean_band([curves[r.run_id] for r in members]) for members in per_run], per_run, claims)


def row_labels(rows: Sequence[ResultRow]) -> list[str]:
    """Each row's name as the results table shows it; rows sharing a name (a `--max-iters` copy
    beside the full runs) get the settings that tell them apart, e.g. "skip1 (max_iters=1000)"."""
    labels = []
    for row in rows:
        same = [r for r in rows if r.name == row.name]
        if len(same) == 1:
            labels.append(row.name)
            continue
        keys = varied_settings([r.config for r in same])
        differs = [f"{k}={fmt_setting(setting_value(row.config, k))}" for k in keys]
        if len({r.dtype_used for r in same}) > 1:  # replicates are split by the dtype they trained in
            differs.append(row.dtype_used or "not started")
        labels.append(f"{row.name} ({', '.join(differs)})")
    return labels


def mean_band(curves: Sequence[Sequence[tuple[int, float]]]) -> Band:
    """The mean curve of replicates and its 95 % t-interval at each step (see `Band`); a
    non-finite loss (a diverged evaluation) leaves that replicate out at that step."""
    from lab.stats import mean_interval

    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, loss in curve:
            if math.isfinite(loss):
                by_step.setdefault(step, []).append(loss)
    steps = sorted(by_step)
    mean, low, high = [], [], []
    for step in steps:
        interval = mean_interval(by_step[step])
        mean.append(interval.mean)
        low.append(interval.low)
        high.append(interval.high)
    return Band(tuple(steps), tuple(mean), tuple(low), tuple(high))


def per_run_values(members: Sequence[RunRow], key: str) -> list[float]:
    """The finite values of one loss (or "gap": final val - final train) over a row's runs."""
    values: list[Any] = []
    for r in members:
        if key == "gap":
            values.append(None if r.final_val is None or r.final_train is None else r.final_val - r.final_train)
        else:
            values.append(getattr(r, key))
    return [float(v) for v in values if v is not None and math.isfinite(v)]
