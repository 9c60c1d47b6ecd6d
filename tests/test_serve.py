"""`dropres-lab serve` without a browser: its one-line refusals, the public warning, the
command each tab runs, Ctrl-C. (In a real browser: tests/test_serve_browser.py.)"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from typer.testing import CliRunner

from lab.cli import app
from lab.serve.listen import tab_command

pytest.importorskip("textual_serve", reason='textual-serve is not installed (pip install -e ".[serve]")')


def serve(lab_dir: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    """`dropres-lab serve ARGS` in this process (a refusal comes before anything is served)."""
    monkeypatch.chdir(lab_dir)
    return CliRunner().invoke(app, ["serve", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_taken_port_is_refused_in_one_line(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(serve(lab_dir, monkeypatch, "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is taken" in line and "--port 0" in line


def test_a_public_address_needs_public(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = one_error_line(serve(lab_dir, monkeypatch, "--host", "0.0.0.0", "--port", "0"))
    assert "--public" in line and "SSH port forwarding" in line


def test_without_textual_serve_it_says_how_to_install_it(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "lab.serve.server", raising=False)
    for name in [m for m in sys.modules if m == "textual_serve" or m.startswith("textual_serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "textual_serve", None)  # as if it were not installed
    line = one_error_line(serve(lab_dir, monkeypatch, "--port", "0"))
    assert 'pip install "dropres-lab[serve]"' in line


def test_public_serving_warns_prints_the_real_url_and_stops_on_ctrl_c(lab_dir: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "lab", "serve", "--host", "0.0.0.0", "--port", "0", "--public"],
                              cwd=lab_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline()  # printed once it listens
        assert "serving the lab for" in url and ":0/" not in url and url.rstrip().endswith("/ (Ctrl-C stops)")
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert "warning: serving on 0.0.0.0" in err and "launch and cancel runs" in err
    assert out.strip().endswith("stopped")


def test_each_tab_runs_this_pythons_lab_with_quoted_arguments(tmp_path: Path) -> None:
    odd = tmp_path / "it's a store; $(rm -rf x)"
    command = tab_command(odd, tmp_path / "my experiments.toml", read_only=True)
    assert command.startswith("exec ")
    assert shlex.split(command)[1:] == [sys.executable, "-m", "lab", "--store", str(odd),
                                        "--file", str(tmp_path / "my experiments.toml"), "--read-only"]
