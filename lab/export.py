"""`dropres-lab results --format csv|json`: every run of a store, streamed suite by suite.

An export of 100,000 runs must neither take a minute nor hold every row: building all of a
suite's rows first (as the tables do, `lab.results.result_rows`) cost 20 s and 725 MB. So a
suite is read from the store already ranked (`Store.ranked`, in one read snapshot) in passes:

1. its settings only: what the suite varies (`SettingsSpread`), the columns of a CSV, and which
   base names hold copies that differ in more than their seed (`copy_settings`; rare, and
   those few base names are read again whole);
2. only when there are such copies: the comparable sets (`ComparableSets`), which otherwise
   come out of pass 1 too;
3. whole rows, each made into its `ResultRow` (`lab.results.place` and `ComparableSets.test`,
   the same steps as `result_rows`) and written at once.

The output is exactly what `to_json` / `to_csv` of `result_rows` give (tests compare them).
Merged replicates (`--replicates`) still build each suite in memory: a merged row needs all of
its replicates, and such tables are a tenth the size.
"""

from __future__ import annotations

import csv
import io
from typing import Callable, Iterator, NamedTuple

from .core.config import RunConfig
from .results import (
    ComparableSets,
    ResultRow,
    SettingsSpread,
    comparable_key,
    copy_keys,
    csv_header,
    csv_lines,
    csv_row,
    place,
    result_rows,
    setting_keys,
    single_row,
    stream_text,
    to_csv,
    varied_settings,
    within_tolerance,
)
from .stats import DEFAULT_TOLERANCE
from .store import Store


class _Stored(NamedTuple):
    """What `single_row` reads of a run besides its settings (a `RunRow` without them)."""

    run_id: str
    suite: str
    name: str
    base_name: str
    status: str
    step: int
    max_iters: int
    final_val: float | None
    best_val: float | None
    final_train: float | None
    exact_val: float | None
    reference: float | None
    wall_s: float | None
    tokens_per_s: float | None
    error: str | None
    dtype: str | None


class RankedSuite:
    """One suite of the store, ranked, with what its rows need from the whole suite (passes 1
    and 2 above); `rows()` then reads and yields its `ResultRow`s one at a time (pass 3)."""

    def __init__(self, store: Store, suite: str, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.store, self.suite, self.tolerance = store, suite, tolerance
        spread = SettingsSpread()
        bases: dict[str, int] = {}  # base name -> its first run's settings (seeds aside), hashed
        differing: dict[str, None] = {}  # base names whose runs differ in more than the seed
        sets = ComparableSets()  # the sets, were there no such base names
        self.best: float | None = None
        for at, r in enumerate(store.ranked(suite, ["base_name", "name", "config", "dtype", "exact_val", "best_val"])):
            config = RunConfig.stored_settings(r["config"])
            spread.add(config)
            base = r["base_name"] or r["name"]
            fingerprint = hash(tuple(v for k, v in config.items() if k not in ("seed", "data_seed", "skips"))
                               + tuple(config["skips"].items()))
            if bases.setdefault(base, fingerprint) != fingerprint:
                differing[base] = None
            if at == 0:
                self.best = r["best_val"]
            exact = r["exact_val"]
            sets.add("[]", r["dtype"], at, at + 1, exact, [exact], [(config["seed"], config["data_seed"])])
        self.count = spread.count
        self.varied = spread.varied()
        self.settings = spread.keys()
        self.copy_keys = copy_keys(self._varied_in(base) for base in bases if base in differing)
        if self.copy_keys:
            sets = ComparableSets()
            for at, r in enumerate(store.ranked(suite, ["config", "dtype", "exact_val"])):
                config = RunConfig.stored_settings(r["config"])
                exact = r["exact_val"]
                sets.add(comparable_key(config, self.copy_keys), r["dtype"], at, at + 1, exact, [exact],
                         [(config["seed"], config["data_seed"])])
        sets.close()
        self.sets = sets

    def _varied_in(self, base: str) -> list[str]:
        return varied_settings([RunConfig.stored_settings(r["config"])
                                for r in self.store.ranked(self.suite, ["config"], base_name=base)])

    def rows(self) -> Iterator[ResultRow]:
        """The suite's rows as `result_rows` makes them, in rank order, read as they go."""
        for at, r in enumerate(self.store.ranked(self.suite, _Stored._fields + ("config",))):
            run = _Stored._make(r[:-1])
            row = single_row(run, RunConfig.stored_settings(r[-1]))
            place(row, at + 1, self.best, self.varied)
            self.sets.test(row, comparable_key(row.config, self.copy_keys), at)
            within_tolerance(row, self.tolerance)
            yield row


def export(store: Store, suites: list[str], fmt: str, replicates: bool, write: Callable[[str], object]) -> None:
    """Write the CSV or JSON of every run of `suites` (a header and rows, or a JSON list with
    one run per line), suite by suite, as it is read."""
    with store.snapshot():
        if replicates:  # a merged row needs all of its replicates: each suite is built in memory
            ranked = (result_rows(store.runs(s), replicates=True) for s in suites)
            if fmt == "json":
                stream_text(ranked, "json", write)
            else:
                write(to_csv([r for rows in ranked for r in rows]))
        elif fmt == "json":
            stream_text((RankedSuite(store, s).rows() for s in suites), "json", write)
        elif len(suites) == 1:  # one table: the settings columns are the suite's own
            suite = RankedSuite(store, suites[0])
            header, settings = csv_header(False, suite.settings)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(header)
            for rows in _batches(suite.rows()):
                writer.writerows(csv_row(r, False, settings) for r in rows)
                write(buf.getvalue())
                buf.seek(0)
                buf.truncate()
        else:  # one header for every suite: every setting, and every skip depth any run of the store has
            every = RunConfig().to_dict()
            every["skips"] = {str(d): 0.0 for d in store.skip_depths()}
            settings = setting_keys([every])
            first = True
            for s in suites:
                for rows in _batches(RankedSuite(store, s).rows()):
                    write(csv_lines(rows, settings, header=first))
                    first = False


def _batches(rows: Iterator[ResultRow], size: int = 2000) -> Iterator[list[ResultRow]]:
    """Rows a few thousand at a time: one write per row is slow, one for all is big."""
    batch: list[ResultRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
