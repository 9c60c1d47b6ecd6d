"""`dropres-lab report` and the TUI's write-report action, on a tiny suite trained once.

The suite has two settings with two seeds each (so every interval and band is drawn), a
published reference on one of them, and a claim; runs are trained once per module by the real
headless runner, so the provenance in report.md is what a launch records.
"""

from __future__ import annotations

import asyncio
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_DEFAULTS, cli, write_corpus

from lab.cli import app
from lab.report.figures import CURVES_SIZE, DPI, SWEPT_SIZE, figure_paths

SUITE = """
default_suite = "pair"
""" + TINY_DEFAULTS + """
[suites.pair]
description = "Two skip-1 rates, two seeds each"
max_iters = 40
seeds = [1, 2]
grid = {{ "skips.1" = [0.0, 0.1] }}
references = {{ "skips.1=0" = 2.3 }}
claims = [ {{ better = "skips.1=0", than = "skips.1=0.1" }}, {{ better = "skips.1=0.1", than = "skips.1=0", metric = "final_val" }} ]

[suites.untrained]
runs = [ {{ name = "x" }} ]
"""

RUNS = ["skips.1=0#1", "skips.1=0#2", "skips.1=0.1#1", "skips.1=0.1#2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lab folder whose store holds the `pair` suite, trained (4 tiny runs, about a second of training)."""
    folder = tmp_path_factory.mktemp("report")
    corpus = write_corpus(folder / "corpus.txt")
    (folder / "experiments.toml").write_text(SUITE.format(corpus=corpus), encoding="utf-8")
    done = cli(folder, "run", "--headless", "pair", "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def report(folder: Path, *args: str):
    """`dropres-lab report ARGS` in this process (no interpreter start-up per test) on `folder`'s
    store and experiments file; relative --output paths are taken inside `folder`."""
    args = tuple(str(folder / a) if prev == "--output" else a for prev, a in zip(("",) + args, args))
    return CliRunner().invoke(app, ["report", *args, "--store", str(folder / "runs"),
                                    "--file", str(folder / "experiments.toml")])


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header, after checking it is one."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_writes_every_figure_and_a_report_naming_every_run(trained: Path) -> None:
    done = report(trained, "pair", "--output", "out")
    assert done.exit_code == 0, done.output
    folder = trained / "out"
    markdown = folder / "report.md"
    assert str(markdown) in done.stdout and "3 figures" in done.stdout
    figures = figure_paths(["pair"], folder, "png")
    expected = {"val-loss": CURVES_SIZE, "exact-val": SWEPT_SIZE, "gap": SWEPT_SIZE}
    for path in figures:
        size = next(v for k, v in expected.items() if path.name == f"pair-{k}.png")
        assert png_size(path) == (round(size[0] * DPI), round(size[1] * DPI)), path.name
        assert path.stat().st_size > 10_000, f"{path.name} looks empty"
    text = markdown.read_text()
    for path in figures:
        assert f"]({path.name})" in text  # embedded beside report.md
    from lab.launch import git_commit

    commit = git_commit() or "unknown"  # this checkout's commit, as the launch recorded it
    for run in RUNS:  # every run in the provenance, with what it ran on
        line = next(line for line in text.splitlines() if line.startswith(f"| {run} |"))
        assert "| cpu |" in line and f"| {commit} |" in line and "| 0.1.0 |" in line
        assert "| bfloat16 |" in line or "| float32 |" in line  # the dtype actually used
    for row in ("skips.1=0", "skips.1=0.1"):
        assert f"| {row} |" in text  # the results table's rows
    assert "Two skip-1 rates, two seeds each" in text and "data_seed" in text
    claims = text[text.index("### Claims"):text.index("### Figures")]
    for claim in ("| skips.1=0 < skips.1=0.1 | exact_val |", "| skips.1=0.1 < skips.1=0 | final_val |"):
        line = next(line for line in claims.splitlines() if line.startswith(claim))
        assert any(f"| {verdict} |" in line for verdict in ("supported", "contradicted", "inconclusive")), line
    assert "Holm" in claims
    assert "vs best (exact val)" in text and "exact 95% CI" in text  # the statistics columns
    assert "nats per character" in text


def test_report_svg_figures(trained: Path) -> None:
    done = report(trained, "--output", "svg-out", "--format", "svg")  # every suite in the store
    assert done.exit_code == 0, done.output
    for path in figure_paths(["pair"], trained / "svg-out", "svg"):
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg"), path.name
        assert "iteration" in path.read_text() or "nats/character" in path.read_text()
    assert "pair-val-loss.svg" in (trained / "svg-out" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["pairs"], "no suite 'pairs' in the store at "),
    (["untrained"], "suite 'untrained' has no runs in the store at "),
    (["pair", "--output", "experiments.toml"], "experiments.toml is a file; give a folder"),
    (["pair", "--output", "experiments.toml/inside"], "cannot write the report to "),
    (["pair", "--format", "pdf"], "'pdf' is not one of"),
])
def test_report_mistakes_are_one_line_errors(trained: Path, args: list[str], message: str) -> None:
    done = report(trained, *args)
    assert done.exit_code == 2
    assert message in done.stderr, done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)
    if args[0] == "pairs":
        assert "did you mean pair?" in done.stderr


def test_report_without_a_store(tmp_path: Path) -> None:
    done = report(tmp_path)  # a folder without runs/
    assert done.exit_code == 2 and "no runs yet at" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_the_results_screen_writes_the_report_of_its_suite(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.tui.app import LabApp

    monkeypatch.chdir(trained)
    report = trained / "report" / "report.md"
    assert not report.exists()

    async def go() -> list[str]:
        app = LabApp(trained / "runs", trained / "experiments.toml", start_mode="results")
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            assert "Write report" in [c.title for c in app.get_system_commands(app.screen)]
            await pilot.press("w")
            for _ in range(300):
                if any("written to" in n.message for n in app._notifications):
                    break
                await pilot.pause(0.1)
            return [n.message for n in app._notifications]

    messages = asyncio.run(go())
    assert any(f"report of pair written to {report}" in m for m in messages), messages
    text = report.read_text()
    assert "skips.1=0.1#2" in text and "| skips.1=0 < skips.1=0.1 |" in text  # the lab's experiments file: claims
