"""The lab's read-only view (`--read-only`, also `dropres-lab serve --read-only`): every screen
opens, and no key launches, cancels, edits, saves or exports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.experiments import load_experiments
from lab.store import Store
from lab.tui.app import LabApp
from lab.tui.screens.quit import ChoiceScreen

SIZE = (120, 36)


def files_of(*paths: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `paths` (and the paths themselves) with its bytes and mtime; not
    SQLite's -wal and -shm files, which exist while any connection (a reader too) is open."""
    found = {}
    for root in paths:
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            if not path.name.endswith(("-wal", "-shm")):
                found[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def enabled_actions(app: LabApp) -> set[str]:
    return {b.action for _, b, enabled, _ in app.screen.active_bindings.values() if enabled}


def test_read_only_lab_shows_every_screen_and_writes_nothing(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lab_dir)
    experiments = lab_dir / "experiments.toml"
    spec = load_experiments(experiments).select(["beta"])[0]
    with Store.open(lab_dir / "runs") as store:  # a queued run: x would cancel it, R restart it
        store.enqueue(spec.suite, spec.name, spec.base_name, spec.config, spec.reference)
    before = files_of(experiments, lab_dir / "runs")

    async def go() -> None:
        app = LabApp(lab_dir / "runs", experiments, start_mode="runs", read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert app.sub_title.startswith("read-only")
            actions = enabled_actions(app)
            assert {"toggle_mark", "compare", "show('results')"} <= actions
            assert not actions & {"cancel_run", "resume_run", "restart_run"}
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Mark", "Results"} <= titles and not titles & {"Cancel", "Resume", "Restart", "Stop all runs"}
            await pilot.press("x", "r", "R")
            await pilot.pause()
            assert not isinstance(app.screen, ChoiceScreen)
            app.action_stop_all()  # reached another way, it is refused as well
            app._act("cancel", next(iter(app.live)))

            await pilot.press("f4")
            await pilot.pause()
            assert app.current_mode == "results" and "export" not in enabled_actions(app)
            await pilot.press("e")
            await pilot.pause()
            assert type(app.screen).__name__ == "ResultsScreen"

            await pilot.press("f2")
            await pilot.pause()
            screen = app.screen
            assert app.current_mode == "experiments"
            assert not enabled_actions(app) & set(type(screen).WRITES)
            inputs = list(screen.query("SettingsForm Input"))
            assert inputs and all(i.disabled for i in inputs)
            assert screen.query_one("#exp-fresh").disabled
            await pilot.press("l", "A", "n", "ctrl+s", "g")
            await pilot.pause()
            assert app.screen is screen  # no launch dialog, no name prompt, no grid
            await pilot.press("q")  # read-only quits at once: it never asks about runs in flight
            await pilot.pause()
        app.store.close()
        assert app.return_code == 0

    asyncio.run(go())
    assert files_of(experiments, lab_dir / "runs") == before
    with Store.open(lab_dir / "runs") as store:
        assert [r.status for r in store.runs()] == ["queued"]
