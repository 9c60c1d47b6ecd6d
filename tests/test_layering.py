"""The layering of DESIGN.md section 3, checked rather than described.

* The lab's interface is a client: opening it (importing `lab.tui.app`) loads neither torch nor
  the training side (`lab.headless`, `lab.workers.local`), so it starts fast and a launch from
  it never waits for torch; checking a launch's corpora is torch-free too.
* `lab.core`, the decoder core, imports nothing from the rest of the lab.
* The TUI's screens and widgets do not know the app class: they post messages and read the
  state they are given; they use only Textual's own `App` API (notify, push_screen, ...).

Imports are read with `ast` (every import, including those under TYPE_CHECKING or inside
functions), and what a fresh interpreter loads is checked in a subprocess.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "lab"


def loaded_after(code: str) -> list[str]:
    """Which of torch, lab.headless and lab.workers.local a fresh interpreter holds after `code`."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps([m for m in ('torch', 'lab.headless', 'lab.workers.local') if m in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved.

    `from X import y` yields X and X.y (y may be a submodule), so a check sees both.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    found.append((node.lineno, "." * node.level + (node.module or "")))  # beyond the top
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_opening_the_lab_loads_neither_torch_nor_the_training_side() -> None:
    assert loaded_after("import lab.tui.app") == []


def test_checking_a_launch_from_the_lab_needs_no_torch(tmp_path: Path) -> None:
    """What the TUI does before enqueueing (find, verify, read each corpus; block sizes)."""
    from conftest import tiny_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus.txt")
    code = (
        "from lab.core.config import RunConfig\n"
        "from lab.experiments import RunSpec\n"
        "from lab.launch import check_corpora\n"
        f"config = RunConfig.from_dict({tiny_config(corpus).to_dict()!r})\n"
        "shas = check_corpora([RunSpec('tiny', 'a', config)])\n"
        "assert len(shas) == 1, shas\n"
    )
    assert loaded_after(code) == []


def test_the_core_imports_nothing_from_the_rest_of_the_lab() -> None:
    files = sorted((LAB / "core").rglob("*.py"))
    assert files
    outside = [f"{path.relative_to(ROOT)}:{line}: {module}"
               for path in files for line, module in imported_modules(path)
               if (within(module, "lab") or module.startswith(".")) and not within(module, "lab.core")]
    assert outside == []


def tui_views() -> list[Path]:
    return sorted((LAB / "tui" / "screens").rglob("*.py")) + sorted((LAB / "tui" / "widgets").rglob("*.py"))


def test_screens_and_widgets_do_not_import_the_app() -> None:
    files = tui_views()
    assert files
    importing = [f"{path.relative_to(ROOT)}:{line}: {module}"
                 for path in files for line, module in imported_modules(path) if within(module, "lab.tui.app")]
    assert importing == []


@pytest.mark.parametrize("path", tui_views(), ids=lambda p: str(p.relative_to(LAB)))
def test_screens_and_widgets_use_only_textuals_app_api(path: Path) -> None:
    """`self.app.X` in a view must be Textual's `App` API, never something only LabApp has."""
    from textual.app import App

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    foreign = [f"line {node.lineno}: self.app.{node.attr}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
               and node.value.attr == "app" and isinstance(node.value.value, ast.Name)
               and node.value.value.id == "self" and not hasattr(App, node.attr)]
    assert foreign == []


def test_the_lab_and_the_results_load_neither_scipy_nor_matplotlib():
    """scipy and matplotlib are imported where a statistic or a figure is computed, never at
    import: opening the lab and switching screens does not pay for them (issue 14)."""
    probe = ("import sys, lab.tui.app, lab.results, lab.claims, lab.stats, lab.formatting\n"
             "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('scipy', 'matplotlib')}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
