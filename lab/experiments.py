"""experiments.toml -> validated, expanded run specs.

experiments.toml is the user's main interface: it names suites of runs, and every other part of
the lab (the headless driver, `validate`, `inspect`, the TUI) sees it only through this module.
So this module does two things carefully:

* it expands the file by one documented set of rules (below), into `RunSpec`s whose `config`
  is the fully resolved `RunConfig` (run identity is computed on that, never on the text);
* it validates *everything* before anything runs, and reports every problem at once, each
  with the file, the line where one can be found, the key path and a fix.

The rules for individual settings (types, ranges, n_embd % n_head, skip depth within the
sub-layer count, rate 1 only for "paper" skip paths) live in `lab.core.config` and are used
from there, so a rule and its message exist exactly once.

Expansion rules
---------------
* Override order: ``[defaults]`` < ``[suites.NAME]`` < run entry / grid point. A run entry and
  the grid point it is crossed with form one level; a key set in both is an error.
* ``dropout`` is shorthand for the four per-site keys (`DROPOUT_SITES`) at the level where it
  is written; a per-site key at the same or a more specific level wins.
* ``skips = { 1 = 0.025 }`` replaces the inherited table whole. A quoted dotted key
  ``"skips.2" = 0.99`` (in a grid, or in any settings table) changes one depth of the
  inherited table; at one level the whole table is applied first, then the dotted keys.
  Depth keys are positive integers. (An *unquoted* ``skips.2 = 0.99`` is, in TOML, the table
  ``skips = { 2 = 0.99 }`` and so replaces the table.)
* ``grid = { key = [values], ... }`` is the cartesian product in key order; with ``runs`` too,
  every run entry is crossed with every grid point (entries outer, points inner).
* Names: a run entry is named by its ``name``; a grid point by ``key=value`` pairs joined
  by "," in grid key order; an entry crossed with a point by ``entry,point``
  (e.g. ``skip1,skips.2=0.99``). Values are written by `format_value`: numbers in their
  shortest exact decimal form without exponent or trailing ".0" (0.0 -> ``0``,
  1e-05 -> ``0.00001``, 0.99 -> ``0.99``), integers as integers, booleans as
  ``true``/``false``, strings as they are.
* ``seeds = [..]`` (in defaults, a suite or a run entry) makes replicates: each run becomes
  one run per seed, named ``name#seed``, with ``seed`` set. ``seed`` and ``seeds`` are two
  forms of one setting, so the override order applies between them: a ``seed`` written at a
  more specific level than the ``seeds`` in force gives a single run (no suffix); both at the
  same level is an error.
* A relative ``data`` path is relative to the folder of the experiments file that names it,
  as paths in any configuration file are (not to the working folder); the spec holds it
  absolute, so the run's identity names the file it trains on wherever the lab is started.
  The corpus name ``"tinyshakespeare"``, absolute paths and ``~`` paths are kept as written.
* ``references = { "name" = loss }`` attaches a published value to the runs of that name
  (to every replicate of it); a reference that names no run is an error.
* ``tolerance = 0.03`` (a suite's, default 0.03): how far a mean final val may be from its
  reference and still count as reproduced.
* ``claims = [ { better = "a", than = "b", metric = "exact_val" } ]`` states that run "a"
  reaches a lower loss than run "b" (metric: exact_val, the default, final_val or best_val);
  names are run names as in ``references`` (replicated runs by their base name), or
  ``"suite/name"`` for a run of another suite. `lab.claims` tests them.
* A suite with neither ``runs`` nor ``grid`` is an error (it would be an empty suite).
* Run and suite names must be usable as path components and in ``SUITE/RUN``: not empty,
  no "/", "\\", "#" (reserved for replicates), control characters or leading ".".
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import os
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from lab.core.config import DROPOUT_SITES, SETTING_KEYS, RunConfig, check_config, check_value, default_values
from lab.run_id import make_run_id
from lab.toml_edit import KeyPath, format_key_path
from lab.toml_lines import key_lines, line_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOP_KEYS = ("default_suite", "defaults", "suites")
DEFAULTS_KEYS = SETTING_KEYS + ("seeds",)
SUITE_KEYS = SETTING_KEYS + ("seeds", "description", "runs", "grid", "references", "claims", "tolerance")
CLAIM_KEYS = ("better", "than", "metric")
#: Losses a claim can be about; exact_val (the whole validation split, once) is the default.
CLAIM_METRICS = ("exact_val", "final_val", "best_val")
#: How far a mean final val may be from its published reference and count as reproduced.
DEFAULT_TOLERANCE = 0.03
RUN_ENTRY_KEYS = SETTING_KEYS + ("seeds", "name")
#: The one `data` value that names a corpus rather than a file (the default).
CORPUS_NAME = RunConfig.data


# -- public types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One run to train: where it comes from, what it is called, and its resolved settings."""

    suite: str
    name: str  # unique within the suite; "base#seed" for replicates
    config: RunConfig
    reference: float | None = None  # published val loss to compare against, if any
    base_name: str = ""  # the name without "#seed", so replicates can be aggregated

    @property
    def run_key(self) -> str:
        """"SUITE/RUN": how the CLI and the store name a run."""
        return f"{self.suite}/{self.name}"

    @property
    def run_id(self) -> str:
        """The store's id for this run: views find its row by it without recomputing it."""
        return make_run_id(self.suite, self.name, self.config.identity_hash())


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an experiments file, phrased so the user can fix it."""

    file: str
    line: int | None
    key: str  # key path such as "suites.x.runs[2].dropout"; "" when the whole file is meant
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ExperimentsError(Exception):
    """Raised with every problem found, so a user fixes a file in one round, not one per run."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Claim:
    """A claim to test: run `better` reaches a lower `metric` than run `than`.

    Names are base run names of the claim's suite, or "suite/name" for another suite's run.
    """

    better: str
    than: str
    metric: str = "exact_val"

    def refers_to(self, own_suite: str) -> tuple[tuple[str, str], tuple[str, str]]:
        """((suite, name) of `better`, (suite, name) of `than`), resolving bare names to `own_suite`."""
        return split_claim_name(self.better, own_suite), split_claim_name(self.than, own_suite)

    def __str__(self) -> str:
        metric = "" if self.metric == "exact_val" else f" ({self.metric})"
        return f"{self.better} < {self.than}{metric}"


def split_claim_name(name: str, own_suite: str) -> tuple[str, str]:
    """A claim's run name -> (suite, base run name): "suite/name", or a bare name of `own_suite`."""
    suite, sep, run = name.partition("/")
    return (suite, run) if sep else (own_suite, name)


@dataclass
class Suite:
    """A named list of runs, in file order."""

    name: str
    description: str
    runs: list[RunSpec]
    references: dict[str, float] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE


@dataclass
class Experiments:
    """A validated experiments file: its suites, fully expanded."""

    path: Path
    default_suite: str
    suites: dict[str, Suite]

    @property
    def runs(self) -> list[RunSpec]:
        """Every run of every suite, in file order."""
        return [run for suite in self.suites.values() for run in suite.runs]

    def select(self, suites: list[str] | None = None, only: str | None = None) -> list[RunSpec]:
        """The runs of the named suites (None or [] means `default_suite`), in order.

        `only` is an fnmatch glob on run names (matched against the name and the name without
        its `#seed`). Unknown suites, or a glob that matches nothing, raise ExperimentsError:
        an empty selection is always a user mistake, and saying so beats silently doing nothing.
        """
        names = list(dict.fromkeys(suites or [self.default_suite]))
        problems = [self._problem(n, _unknown_suite_message(n, self.suites)) for n in names if n not in self.suites]
        if problems:
            raise ExperimentsError(problems)
        runs = [r for n in names for r in self.suites[n].runs]
        if only is not None:
            runs = [r for r in runs if fnmatch.fnmatchcase(r.name, only) or fnmatch.fnmatchcase(r.base_name, only)]
            if not runs:
                raise ExperimentsError([self._problem(",".join(names), f"no run matches --only {only!r}; run names look like {self.suites[names[0]].runs[0].name!r}")])
        return runs

    def get(self, ref: str) -> RunSpec:
        """The run named by "SUITE/RUN" (see `parse_run_ref`)."""
        return parse_run_ref(self, ref)

    def _problem(self, key: str, message: str) -> Problem:
        return Problem(str(self.path), None, key, message)


def parse_run_ref(experiments: Experiments, ref: str) -> RunSpec:
    """Resolve "SUITE/RUN" to exactly one run, or raise ExperimentsError saying what exists.

    Suite names cannot contain "/", so the first "/" separates suite from run. A replicated
    run must be named with its seed ("quick/skip1#1338"); naming only its base lists them.
    """
    def fail(message: str) -> ExperimentsError:
        return ExperimentsError([experiments._problem(ref, message)])

    suite_name, sep, run_name = ref.partition("/")
    if not sep or not suite_name or not run_name:
        raise fail("expected SUITE/RUN, e.g. quick/skip1")
    suite = experiments.suites.get(suite_name)
    if suite is None:
        raise fail(_unknown_suite_message(suite_name, experiments.suites))
    for run in suite.runs:
        if run.name == run_name:
            return run
    replicates = [r.name for r in suite.runs if r.base_name == run_name]
    if replicates:
        raise fail(f"{run_name!r} has replicates; name one of: {', '.join(replicates)}")
    names = [r.name for r in suite.runs]
    close = difflib.get_close_matches(run_name, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"runs in {suite_name}: {', '.join(names)}"
    raise fail(f"suite {suite_name!r} has no run {run_name!r}; {hint}")


def resolve_data(data: str, folder: str | os.PathLike) -> str:
    """A `data` setting as a path valid from any working folder: a relative path is joined to
    `folder` (the experiments file's; the working folder for `--data` on the command line).
    The corpus name, absolute paths and "~" paths are returned as they are."""
    if data == CORPUS_NAME or data.startswith("~") or os.path.isabs(data):
        return data
    return os.path.normpath(os.path.join(os.path.abspath(folder), data))


# -- loading --------------------------------------------------------------------------------


def load_experiments(path: str | os.PathLike) -> Experiments:
    """Read, validate and expand an experiments file; raise ExperimentsError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentsError([Problem(str(p), None, "", "file not found; pass an experiments file with --file, or create experiments.toml")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExperimentsError([Problem(str(p), None, "", f"cannot read the file: {e}")]) from None
    return parse_experiments(text, p)


def parse_experiments(text: str, path: str | os.PathLike = "<string>") -> Experiments:
    """Validate and expand experiments from TOML text (the TUI checks edits with this before saving)."""
    file = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentsError([_syntax_problem(file, text, e)]) from None
    checker = _Checker()
    experiments = checker.check(data, Path(path))
    if checker.problems:
        lines = key_lines(text)
        problems = [Problem(file, line_for(lines, p), format_key_path(p), m) for p, m in checker.problems]
        problems.sort(key=lambda p: (p.line is None, p.line or 0))  # top to bottom, like the file
        raise ExperimentsError(problems)
    assert experiments is not None
    return experiments


def _syntax_problem(file: str, text: str, error: Exception) -> Problem:
    """tomllib reports positions only inside its message: "... (at line 4, column 3)"."""
    msg = str(error)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    line = int(m.group(1)) if m else getattr(error, "lineno", None)
    if line is None and "end of document" in msg:
        line = len(text.splitlines()) or 1
    text = re.sub(r"\s*\(at (line \d+, )?(column \d+|end of document)\)", "", msg)
    col = f" at column {m.group(2)}" if m else (" at the end of the file" if "end of document" in msg else "")
    return Problem(file, line, "", f"TOML syntax error{col}: {text}; fix the TOML at this point")


# -- names ----------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A grid value as it appears in a run name: short, exact and stable.

    Floats use the shortest digits that round-trip (Python's repr) written without exponent or
    trailing ".0", so 0.0 -> "0", 1e-05 -> "0.00001"; the same number always gives the same name.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        s = format(Decimal(repr(value)), "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def name_problem(name: Any, what: str = "run name") -> str | None:
    """Why `name` cannot name a run or suite (it becomes a path component and half of SUITE/RUN)."""
    if not isinstance(name, str):
        return f"{what} must be a string, got {name!r}"
    if not name.strip():
        return f"{what} must not be empty"
    if "\x00" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{what} {name!r} contains control characters (NUL, newline, ...); use printable characters"
    if "/" in name or "\\" in name:
        return f"{what} {name!r} contains a path separator; names cannot contain '/' or '\\' (they are used as SUITE/RUN and as folder names)"
    if name.startswith("."):
        return f"{what} {name!r} starts with '.'; start it with a letter or digit"
    if "#" in name:
        return f"{what} {name!r} contains '#', which is reserved for replicate seeds (name#seed)"
    if name != name.strip():
        return f"{what} {name!r} has leading or trailing spaces; remove them"
    return None


def reference_problem(value: Any) -> str | None:
    """Why `value` cannot be a reference (a published val loss for a run), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"reference must be a number (a val loss), got {value!r}"
    return None


def tolerance_problem(value: Any) -> str | None:
    """Why `value` cannot be a reproduction tolerance (a non-negative loss difference), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 or value == float("inf"):
        return f"tolerance must be a non-negative number (a val loss difference, e.g. 0.03), got {value!r}"
    return None


def claim_problems(claim: Any) -> list[tuple[str | None, str]]:
    """What is wrong with one claim entry on its own, as (key or None for the whole entry,
    message); names are checked against the runs by `claim_name_problem`."""
    if not isinstance(claim, dict):
        return [(None, f'each claim must be a table like {{ better = "a", than = "b" }}, got {claim!r}')]
    out: list[tuple[str | None, str]] = []
    for key in claim:
        if key not in CLAIM_KEYS:
            out.append((key, _unknown_key_message(key, CLAIM_KEYS, "a claim")))
    for key in ("better", "than"):
        if key not in claim:
            out.append((None, f'claim has no {key}; write {{ better = "run", than = "other run" }}'))
        elif not isinstance(claim[key], str) or not claim[key].strip():
            out.append((key, f"{key} must be a run name (a string), got {claim[key]!r}"))
    metric = claim.get("metric", "exact_val")
    if metric not in CLAIM_METRICS:
        out.append(("metric", f"metric must be one of {', '.join(CLAIM_METRICS)}, got {metric!r}"))
    if not out and claim["better"] == claim["than"]:
        out.append(("than", f"a claim compares two runs; better and than both name {claim['better']!r}"))
    return out


def claim_name_problem(name: str, own_suite: str, names_by_suite: dict[str, set[str]]) -> str | None:
    """Why a claim's run name names no run: `names_by_suite` maps each suite to its base run
    names. One rule for `validate`, the TUI and loading."""
    suite, run = split_claim_name(name, own_suite)
    if suite not in names_by_suite:
        return f"claim names {name!r}, but there is {_unknown_suite_message(suite, names_by_suite)}"
    names = names_by_suite[suite]
    if run in names:
        return None
    if "#" in run and run.split("#", 1)[0] in names:
        return f"claim names the replicate {name!r}; name the run without its seed ({run.split('#', 1)[0]!r}): a claim compares all its seeds"
    close = difflib.get_close_matches(run, sorted(names), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"run names are: {', '.join(sorted(names))}"
    return f"claim names {name!r}, which matches no run in suite {suite!r}; {hint}"


def _unknown_suite_message(name: str, suites: dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(suites), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"suites are: {', '.join(suites)}"
    return f"no suite named {name!r}; {hint}"


def _unknown_key_message(key: str, valid: tuple[str, ...], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "remove it or check the spelling"
    return f"unknown key {key!r} in {where}; {hint}"


# -- validation and expansion -----------------------------------------------------------------


@dataclass
class _Assign:
    """One setting written somewhere in the file: the key as written, its value, and where."""

    key: str
    value: Any
    path: KeyPath


@dataclass
class _Entry:
    """A run entry or grid point: the most specific level of a run."""

    name: str
    assigns: list[_Assign]
    path: KeyPath  # where its name is written, or where to point when nothing is more specific
    seeds: tuple[list[int], KeyPath] | None = None


_Problems = list  # of (KeyPath, message)

# Keys whose cross-key problems may be caused by another key; the most specific one is blamed.
_RELATED = {"n_embd": ("n_embd", "n_head"), "min_lr": ("min_lr", "lr")}


class _Checker:
    """Walks the parsed file once, collecting (key path, message) problems and building specs."""

    def __init__(self) -> None:
        self.problems: _Problems = []
        self.reported = 0  # problems found so far, counting those still being grouped
        self.names_lost = False  # the suite being checked dropped a run for its name or its grid
        self.folder = Path(".")  # the experiments file's folder (set by `check`)
        self.run_names: dict[str, tuple[set[str], bool]] = {}  # suite -> (base run names, all known)
        self.suites_lost: set[str] = set()  # suites dropped whole (so their names are unknown)
        self.claim_paths: list[tuple[str, Claim, KeyPath]] = []  # claims whose names are checked last
        self._seen: set[tuple[KeyPath, str]] = set()
        # Whole-run problems, grouped so one mistake in [defaults] is one message, not one per run.
        self._run_problems: dict[tuple[KeyPath, str], list[str]] = {}

    def add(self, path: KeyPath, message: str) -> None:
        self.reported += 1
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.problems.append((path, message))

    def add_run_problem(self, path: KeyPath, message: str, run_key: str) -> None:
        self.reported += 1
        self._run_problems.setdefault((path, message), []).append(run_key)

    def flush_run_problems(self) -> None:
        for (path, message), runs in self._run_problems.items():
            shown = ", ".join(repr(r) for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            self.add(path, f"{message} ({'run' if len(runs) == 1 else 'runs'} {shown})")
        self._run_problems.clear()

    # -- top level ----------------------------------------------------------------------------
    def check(self, data: dict, path: Path) -> Experiments | None:
        self.folder = path.parent  # relative `data` paths are relative to the file's folder
        for key in data:
            if key not in TOP_KEYS:
                if key in SETTING_KEYS:
                    self.add((key,), f"settings go in [defaults] or in a [suites.NAME] table, not at the top level; move {key!r} there")
                else:
                    self.add((key,), _unknown_key_message(key, TOP_KEYS, "the file"))
        defaults = self.settings(data.get("defaults", {}), ("defaults",), DEFAULTS_KEYS, "[defaults]")
        default_seeds = self.seeds(data.get("defaults", {}), ("defaults",))
        suites_data = data.get("suites")
        suites: dict[str, Suite] = {}
        if suites_data is None or suites_data == {}:
            self.add(("suites",), 'no suites; add one, e.g. [suites.quick] with runs = [{ name = "a" }]')
        elif not isinstance(suites_data, dict):
            self.add(("suites",), "suites must be a table of [suites.NAME] tables")
        else:
            for name, table in suites_data.items():
                suite = self.suite(name, table, defaults, default_seeds)
                if suite is not None:
                    suites[name] = suite
                elif name not in self.run_names:
                    self.suites_lost.add(name)
            self.check_claim_names()
        self.flush_run_problems()
        default_suite = data.get("default_suite")
        if default_suite is None:
            first = f' = "{next(iter(suites_data))}"' if isinstance(suites_data, dict) and suites_data else ""
            self.add(("default_suite",), f"default_suite is missing; add default_suite{first} at the top of the file (it is what runs when no suite is named)")
        elif not isinstance(default_suite, str):
            self.add(("default_suite",), f"default_suite must be a suite name (a string), got {default_suite!r}")
        elif isinstance(suites_data, dict) and default_suite not in suites_data:
            self.add(("default_suite",), _unknown_suite_message(default_suite, suites_data))
        if self.problems:
            return None
        return Experiments(path=path, default_suite=default_suite, suites=suites)

    # -- settings tables ----------------------------------------------------------------------
    def settings(self, table: Any, path: KeyPath, valid: tuple[str, ...], where: str) -> list[_Assign]:
        """Check a settings table; return its valid settings (invalid ones are reported, dropped)."""
        if not isinstance(table, dict):
            self.add(path, f"{where} must be a table of settings, got {table!r}")
            return []
        out: list[_Assign] = []
        for key, value in table.items():
            if key in valid and key not in SETTING_KEYS:
                continue  # structural keys (name, runs, grid, ...) are checked by the caller
            assign = self.setting(key, value, path + (key,), valid, where)
            if assign is not None:
                out.append(assign)
        return out

    def setting(self, key: str, value: Any, path: KeyPath, valid: tuple[str, ...], where: str) -> _Assign | None:
        """Check one written setting with the config rules; None (after reporting) when invalid."""
        if key.startswith("skips."):
            depth = key[len("skips."):]
            msg = check_value("skips", {depth: value})
            if msg:
                self.add(path, msg)
                return None
            return _Assign(key, value, path)
        if key not in SETTING_KEYS:
            self.add(path, _unknown_key_message(key, valid, where))
            return None
        if key == "skips" and isinstance(value, dict):
            good = {}
            for depth, rate in value.items():
                msg = check_value("skips", {depth: rate})
                if msg:
                    self.add(path + (depth,), msg)
                else:
                    good[depth] = rate
            return _Assign(key, good, path) if len(good) == len(value) else None
        msg = check_value(key, value)
        if msg:
            self.add(path, msg)
            return None
        return _Assign(key, value, path)

    def seeds(self, table: Any, path: KeyPath) -> tuple[list[int], KeyPath] | None:
        """`seeds = [..]` of a level, checked with the `seed` rule; None when absent or invalid."""
        if not isinstance(table, dict) or "seeds" not in table:
            return None
        seeds, spath = table["seeds"], path + ("seeds",)
        if not isinstance(seeds, list) or not seeds:
            self.add(spath, f"seeds must be a non-empty list of integers, e.g. [1337, 1338, 1339], got {seeds!r}")
            return None
        ok = True
        for i, s in enumerate(seeds):
            msg = check_value("seed", s)
            if msg:
                self.add(spath + (i,), msg)
                ok = False
            elif seeds.index(s) != i:
                self.add(spath + (i,), f"seed {s} is listed twice; each replicate needs its own seed")
                ok = False
        return (list(seeds), spath) if ok else None

    # -- suites -------------------------------------------------------------------------------
    def suite(self, name: str, table: Any, defaults: list[_Assign], default_seeds) -> Suite | None:
        path: KeyPath = ("suites", name)
        msg = name_problem(name, "suite name")
        if msg:
            self.add(path, msg)
        if not isinstance(table, dict):
            self.add(path, f"suite {name!r} must be a table ([suites.{name}]) of settings, runs and grid")
            return None
        description = table.get("description", "")
        if not isinstance(description, str):
            self.add(path + ("description",), f"description must be a string, got {description!r}")
            description = ""
        level = self.settings(table, path, SUITE_KEYS, f"suite {name!r}")
        seeds = (default_seeds, self.seeds(table, path))  # by level: defaults, suite
        self.names_lost = False
        entries = self.run_entries(table, path)
        points = self.grid_points(table, path)
        # A run dropped for its name or an unusable grid key leaves the suite's names unknown, so
        # a reference to it cannot be called unmatched; a run with bad settings still has its name.
        names_known = not self.names_lost
        if entries is None and points is None:
            self.add(path, f'suite {name!r} has no runs; add runs = [{{ name = "..." }}] or a grid = {{ key = [values] }}')
            return None
        entries = self.cross(entries, points)
        specs = self.expand(name, entries, defaults, level, seeds)
        references = self.references(table, path, {e.name for e in entries}, check_unmatched=names_known)
        specs = [RunSpec(s.suite, s.name, s.config, references.get(s.base_name), s.base_name) for s in specs]
        self.run_names[name] = ({e.name for e in entries}, names_known)
        tolerance = table.get("tolerance", DEFAULT_TOLERANCE)
        msg = tolerance_problem(tolerance)
        if msg:
            self.add(path + ("tolerance",), msg)
            tolerance = DEFAULT_TOLERANCE
        return Suite(name, description, specs, references, self.claims(name, table, path), float(tolerance))

    def claims(self, suite: str, table: dict, path: KeyPath) -> list[Claim]:
        """`claims = [{ better, than, metric }]`: checked on their own here, their run names
        once every suite is known (`check_claim_names`)."""
        if "claims" not in table:
            return []
        claims, cpath = table["claims"], path + ("claims",)
        if not isinstance(claims, list):
            self.add(cpath, f'claims must be a list of tables like [{{ better = "a", than = "b" }}], got {claims!r}')
            return []
        out = []
        for i, claim in enumerate(claims):
            problems = claim_problems(claim)
            for key, message in problems:
                self.add(cpath + ((i,) if key is None else (i, key)), message)
            if not problems:
                out.append(Claim(claim["better"], claim["than"], claim.get("metric", "exact_val")))
                self.claim_paths.append((suite, out[-1], cpath + (i,)))
        return out

    def check_claim_names(self) -> None:
        """Every claim's runs exist (in its suite, or "suite/name" in another); a suite whose
        run names are not all known (a run dropped for its name) is not checked against."""
        names = {suite: known for suite, (known, _) in self.run_names.items()}
        for suite, claim, path in self.claim_paths:
            for key in ("better", "than"):
                ref = getattr(claim, key)
                target, _ = split_claim_name(ref, suite)
                if target in self.run_names and not self.run_names[target][1]:
                    continue
                if target not in self.run_names and target in self.suites_lost:
                    continue
                msg = claim_name_problem(ref, suite, names)
                if msg:
                    self.add(path + (key,), msg)

    def run_entries(self, table: dict, path: KeyPath) -> list[_Entry] | None:
        """The suite's `runs` (None when it has none): each needs a safe, unique name."""
        if "runs" not in table:
            return None
        runs, rpath = table["runs"], path + ("runs",)
        if not isinstance(runs, list) or not runs:
            self.add(rpath, 'runs must be a non-empty list of tables, e.g. [{ name = "skip1", skips = { 1 = 0.025 } }]')
            self.names_lost = True
            return []
        entries: list[_Entry] = []
        for i, entry in enumerate(runs):
            epath = rpath + (i,)
            if not isinstance(entry, dict):
                self.add(epath, f'each run must be a table like {{ name = "skip1", dropout = 0.1 }}, got {entry!r}')
                self.names_lost = True
                continue
            before = self.reported
            assigns = self.settings(entry, epath, RUN_ENTRY_KEYS, "a run entry")
            seeds = self.seeds(entry, epath)
            name = entry.get("name")
            if name is None or name_problem(name):
                self.names_lost = True
            if name is None:
                if self.reported == before:  # { nam = "a" } already says "did you mean 'name'"
                    self.add(epath, 'run entry has no name; add name = "..." (it names the run in results)')
                continue
            msg = name_problem(name)
            if msg:
                self.add(epath + ("name",), msg)
                continue
            first = next((e for e in entries if e.name == name), None)
            if first is not None:
                self.add(epath + ("name",), f"duplicate run name {name!r} (also at {format_key_path(first.path)}); give each run its own name")
                continue
            entries.append(_Entry(name, assigns, epath + ("name",), seeds))
        return entries

    def grid_points(self, table: dict, path: KeyPath) -> list[_Entry] | None:
        """The cartesian product of the suite's `grid` (None when it has none), named key=value,..."""
        if "grid" not in table:
            return None
        n_before = self.reported
        points = self._grid_points(table, path)
        self.names_lost |= self.reported > n_before
        return points

    def _grid_points(self, table: dict, path: KeyPath) -> list[_Entry]:
        grid, gpath = table["grid"], path + ("grid",)
        if not isinstance(grid, dict):
            self.add(gpath, f"grid must be a table of key = [values], e.g. {{ dropout = [0.0, 0.2] }}, got {grid!r}")
            return []
        if not grid:
            self.add(gpath, 'grid is empty; add key = [values], e.g. { "skips.2" = [0.0, 0.5] }, or remove it')
            return []
        axes: list[list[_Assign]] = []
        for key, values in grid.items():
            kpath = gpath + (key,)
            if not isinstance(values, list):
                self.add(kpath, f"grid values must be a list, e.g. [{format_value(values)}], got {values!r}")
                continue
            if not values:
                self.add(kpath, f"grid {key!r} has no values; list at least one or remove the key")
                continue
            if key == "seeds":
                self.add(kpath, "seeds is not a grid key; write seeds = [...] beside the grid to make replicates")
                continue
            if not (key in SETTING_KEYS or key.startswith("skips.")):
                self.add(kpath, _unknown_key_message(key, SETTING_KEYS, "grid (grid keys are settings, or \"skips.N\")"))
                continue
            axis = [self.setting(key, v, kpath + (i,), SETTING_KEYS, "grid") for i, v in enumerate(values)]
            axes.append([a for a in axis if a is not None])
        if len(axes) < len(grid) or not all(axes):
            return []  # a whole key is unusable: the problem is reported, expanding the rest would mislead
        points = []
        for combo in itertools.product(*axes):
            point_name = ",".join(f"{a.key}={format_value(a.value)}" for a in combo)
            msg = name_problem(point_name, "generated run name")
            if msg:
                self.add(gpath, f"{msg}; use runs = [{{ name = ..., {combo[0].key} = ... }}] to name these runs yourself")
                continue
            points.append(_Entry(point_name, list(combo), gpath))
        return points

    def cross(self, entries: list[_Entry] | None, points: list[_Entry] | None) -> list[_Entry]:
        """Every run entry crossed with every grid point; a key set by both is an error."""
        if points is None:
            return entries or []
        if entries is None:
            return points
        grid_keys = {a.key for a in points[0].assigns} if points else set()
        for entry in entries:
            for a in entry.assigns:
                if a.key in grid_keys:
                    self.add(a.path, f"{a.key!r} is also varied by the grid; set it in the run entry or in the grid, not both")
            entry.assigns = [a for a in entry.assigns if a.key not in grid_keys]
        return [
            _Entry(f"{e.name},{p.name}", e.assigns + p.assigns, e.path, e.seeds)
            for e in entries
            for p in points
        ]

    def expand(self, suite: str, entries: list[_Entry], defaults: list[_Assign], level: list[_Assign], seeds: tuple) -> list[RunSpec]:
        """Resolve each entry over defaults < suite < entry, check it whole, and make replicates."""
        specs: list[RunSpec] = []
        first_path: dict[str, KeyPath] = {}
        for entry in entries:
            if entry.name in first_path:  # a grid listing one value twice
                self.add(entry.path, f"duplicate run name {entry.name!r}: a grid value is listed twice; remove the repeat")
                continue
            first_path[entry.name] = entry.path
            values, origin = default_values(), {}
            for rank, assigns in enumerate((defaults, level, entry.assigns)):
                _apply(values, origin, assigns, rank)
            problems = check_config(values)
            for key, message in problems:
                self.add_run_problem(_blame(key, origin, entry.path), message, f"{suite}/{entry.name}")
            if problems:
                continue
            values["data"] = resolve_data(values["data"], self.folder)
            replicates = self.replicates(seeds + (entry.seeds,), origin.get("seed"))
            if replicates is None:
                specs.append(RunSpec(suite, entry.name, RunConfig.from_dict(values), None, entry.name))
            for seed in replicates or ():
                config = RunConfig.from_dict({**values, "seed": seed})
                specs.append(RunSpec(suite, f"{entry.name}#{seed}", config, None, entry.name))
        return specs

    def replicates(self, seeds_by_level: tuple, seed_origin: tuple | None) -> list[int] | None:
        """The seeds a run is replicated over, or None for a single run.

        The most specific of `seed` and `seeds` wins, as for any setting; both at one level
        is ambiguous and reported (an empty list is returned so no run is made).
        """
        levels = [rank for rank, s in enumerate(seeds_by_level) if s is not None]
        if not levels:
            return None
        rank = levels[-1]
        seed_rank, seed_path = seed_origin or (-1, None)
        if seed_rank == rank:
            self.add(seed_path, "seed and seeds are both set at this level; keep seed for one run or seeds for replicates")
            return []
        return None if seed_rank > rank else seeds_by_level[rank][0]

    def references(self, table: dict, path: KeyPath, names: set[str], check_unmatched: bool) -> dict[str, float]:
        """`references = { "name" = loss }`: numbers, each naming a run of the suite."""
        if "references" not in table:
            return {}
        refs, rpath = table["references"], path + ("references",)
        if not isinstance(refs, dict):
            self.add(rpath, f'references must be a table of "run name" = val loss, got {refs!r}')
            return {}
        out = {}
        for name, value in refs.items():
            kpath = rpath + (name,)
            msg = reference_problem(value)
            if msg:
                self.add(kpath, msg)
            elif name not in names:
                if check_unmatched:
                    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.5)
                    hint = f"did you mean {close[0]!r}?" if close else f"run names are: {', '.join(sorted(names))}"
                    self.add(kpath, f"reference {name!r} matches no run in this suite; {hint}")
            else:
                out[name] = float(value)
        return out


def _apply(values: dict, origin: dict, assigns: list[_Assign], rank: int) -> None:
    """Apply one level: `dropout` then per-site keys; `skips` table then "skips.N" keys; the rest."""
    by_key = {a.key: a for a in assigns}
    order = ["dropout", *DROPOUT_SITES, "skips"]
    ordered = [by_key[k] for k in order if k in by_key]
    ordered += [a for a in assigns if a.key not in order and a.key.startswith("skips.")]
    ordered += [a for a in assigns if a.key not in order and not a.key.startswith("skips.")]
    for a in ordered:
        if a.key == "dropout":
            for site in DROPOUT_SITES:
                values[site], origin[site] = a.value, (rank, a.path)
        elif a.key == "skips":
            values["skips"] = {int(d): r for d, r in a.value.items()}
            for k in [k for k in origin if k.startswith("skips.")]:
                del origin[k]
            for d in a.value:
                origin[f"skips.{int(d)}"] = (rank, a.path + (d,))
        elif a.key.startswith("skips."):
            depth = int(a.key[len("skips."):])
            values["skips"] = {**values["skips"], depth: a.value}
            origin[f"skips.{depth}"] = (rank, a.path)
        else:
            values[a.key], origin[a.key] = a.value, (rank, a.path)


def resolve_settings(*levels: dict) -> dict[str, Any]:
    """The settings a run gets from raw settings tables, least specific first ([defaults], the
    suite, the run entry), by the override rules above.

    Keys that are not settings, and values that fail their own check, are skipped: this shows
    what a level inherits while it is being edited (the TUI's placeholders and cross-key
    checks); `parse_experiments` is what validates a file.
    """
    values, origin = default_values(), {}
    for rank, table in enumerate(levels):
        assigns = []
        for key, value in table.items():
            if key.startswith("skips."):
                ok = check_value("skips", {key[len("skips."):]: value}) is None
            elif key in SETTING_KEYS:
                ok = check_value(key, value) is None
            else:
                ok = False
            if ok:
                assigns.append(_Assign(key, value, ()))
        _apply(values, origin, assigns, rank)
    return values


def _blame(key: str, origin: dict, fallback: KeyPath) -> KeyPath:
    """Where a whole-run problem should point: the most specific place that set one of its keys."""
    related = _RELATED.get(key, (key, "n_layer", "skip_dropout") if key.startswith("skips.") else (key,))
    found = [origin[k] for k in related if k in origin]
    if not found:
        return fallback
    return max(found, key=lambda rank_path: rank_path[0])[1]
