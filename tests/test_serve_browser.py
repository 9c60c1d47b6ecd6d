"""`dropres-lab serve` in a real browser: headless Chromium (Debian's, driven by Playwright)
on a finished tiny suite, served on a free loopback port.

The page draws the terminal on a canvas, so there is no text to query in the DOM: each tab's
screen is rebuilt from the terminal output the websocket carries, with the pyte terminal
emulator. The browser may reach 127.0.0.1 only; every other request is refused and fails the
test. One server and one browser serve the whole module; every wait is bounded.

Skipped, saying why, when Chromium, Playwright or pyte is missing (.ci/run installs them for
this group only). DROPRES_UPDATE_ASSETS=1 rewrites assets/serve-browser.png for the README.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from lab.core import events as ev
from lab.store import Store

from conftest import ROOT, tiny_config, write_corpus

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("browser tests: no Chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("textual_serve", reason='browser tests: textual-serve is not installed (pip install -e ".[serve]")')
sync_api = pytest.importorskip("playwright.sync_api", reason='browser tests: Playwright is not installed (pip install -e ".[browser-tests]")')
pyte = pytest.importorskip("pyte", reason='browser tests: pyte is not installed (pip install -e ".[browser-tests]")')
Image = pytest.importorskip("PIL.Image", reason='browser tests: Pillow is not installed (pip install -e ".[browser-tests]")')

#: Software rendering (no GPU), nothing started that would call out (updates, sync, QUIC probes),
#: and no name resolves but the loopback address. Playwright gives each launch a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
VIEWPORT = {"width": 1200, "height": 760}
RUNS = ("skips.1=0", "skips.1=0.1")
WAIT_S = 60.0  # a loaded CI machine starts a lab (Python, Textual, the store) in seconds, not this


def finished_store(store_dir: Path, corpus: Path) -> None:
    """The tiny suite's runs, finished, written through the events a worker sends (no training)."""
    with Store.open(store_dir) as store:
        for i, name in enumerate(RUNS):
            cfg = tiny_config(corpus, skips={1: 0.1 * i}, max_iters=60, eval_interval=5)
            rid = store.enqueue("tiny", name, name, cfg, None).run_id
            store.apply(ev.Started(rid, 0, 60, 4000, "cpu", "float32", 2))
            loss = [2.5 + 1.7 * math.exp(-step / 15) - 0.03 * i for step in range(61)]
            store.apply_many([e for step in range(0, 61, 5) for e in (
                ev.StepLogged(rid, step, loss[step] - 0.05, 1e-3, 9000.0),
                ev.Evaluated(rid, step, loss[step] - 0.05, loss[step], 1e-3))])
            store.apply(ev.Finished(rid, 60, loss[60], loss[60], loss[60] - 0.05, loss[60] - 0.01, 1.5, 9000.0))


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """The store's files with their bytes and mtimes (not SQLite's -wal and -shm, which exist
    while any connection, a reader's too, is open)."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (each tab's lab is one, exec'd by the shell)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class Served:
    """`dropres-lab serve --port 0` on a lab folder: the process and the URL it printed."""

    def __init__(self, lab: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "lab", "serve", "--port", "0", "--store", "runs",
                                      "--file", "experiments.toml"], cwd=lab, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT_S)
        line = self.proc.stdout.readline() if ready else ""
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            self.stop()
            raise AssertionError(f"serve printed no URL within {WAIT_S:g}s: {line!r}")
        self.url = match.group(0)

    def stop(self) -> int | None:
        """Ctrl-C, as a user stops it; killed if it has not ended within 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Tab:
    """One browser tab on the served lab; its screen is rebuilt from the websocket's bytes."""

    def __init__(self, context, url: str) -> None:
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.page = context.new_page()
        self.page.on("websocket", self._watch)
        self.page.goto(url)

    def _watch(self, ws) -> None:
        size = parse_qs(urlsplit(ws.url).query)  # the size the lab starts at; "resize" frames follow
        self.screen.resize(int(size["height"][0]), int(size["width"][0]))
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, payload: str | bytes) -> None:
        if isinstance(payload, str) and payload.startswith('["resize"'):
            size = json.loads(payload)[1]
            self.screen.resize(size["height"], size["width"])

    def _received(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.stream.feed(payload)

    @property
    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, *texts: str, timeout: float = WAIT_S) -> float:
        """Wait until the screen shows every one of `texts`; the time it did (monotonic)."""
        deadline = time.monotonic() + timeout
        while not all(t in self.text for t in texts):
            if time.monotonic() > deadline:
                raise AssertionError(f"the tab never showed {texts} within {timeout:g}s; it shows:\n{self.text}")
            self.page.wait_for_timeout(10)  # browser events (websocket frames) are delivered meanwhile
        return time.monotonic()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    corpus = write_corpus(folder / "corpus.txt")
    (folder / "experiments.toml").write_text(f'default_suite = "tiny"\n\n[defaults]\ndata = "{corpus}"\n\n[suites.tiny]\n'
                                             'runs = [ { name = "skips.1=0" } ]\n', encoding="utf-8")
    finished_store(folder / "runs", corpus)
    return folder


@pytest.fixture(scope="module")
def store_before(lab: Path) -> dict:
    return files_of(lab / "runs")


@pytest.fixture(scope="module")
def served(lab: Path, store_before: dict) -> Iterator[Served]:
    server = Served(lab)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_S * 1000)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser) -> Iterator:
    """A browser context that lets requests reach 127.0.0.1 only; the test fails if the page tried another."""
    refused: list[str] = []

    def loopback(url: str) -> bool:
        return urlsplit(url).hostname == "127.0.0.1"

    def route(r) -> None:
        if loopback(r.request.url):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    def route_websocket(ws) -> None:
        if loopback(ws.url):
            ws.connect_to_server()
        else:
            refused.append(ws.url)
            ws.close()

    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.route(re.compile(".*"), route)
    ctx.route_web_socket(re.compile(".*"), route_websocket)
    yield ctx
    ctx.close()
    assert not refused, f"the page tried to reach other machines: {refused}"


def not_blank(png: bytes) -> bool:
    """A screenshot with text and colours: many distinct colours and a wide range of brightness."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    low, high = image.convert("L").getextrema()
    return high - low > 100 and len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_the_runs_screen_shows_the_runs_and_f4_shows_results(served: Served, context, lab: Path,
                                                               tmp_path: Path) -> None:
    tab = Tab(context, served.url)
    tab.wait_for(*RUNS, "finished", "Results")  # the Runs table, its footer
    tab.page.wait_for_timeout(500)  # the run's charts below the table are drawn after it
    assert tab.page.evaluate("document.fonts.check('16px \"Roboto Mono\"')"), "the bundled font did not load"
    png = tab.page.screenshot()
    assert not_blank(png)
    if os.environ.get("DROPRES_UPDATE_ASSETS"):
        (ROOT / "assets" / "serve-browser.png").write_bytes(png)

    tab.page.focus(".xterm-helper-textarea")
    pressed = time.monotonic()
    tab.page.keyboard.press("F4")
    shown = tab.wait_for("any status", "best val", *RUNS)  # Results: its filters, its columns
    print(f"\nF4 -> Results frame in the browser: {(shown - pressed) * 1000:.0f} ms")
    assert "status" in tab.text and not_blank(tab.page.screenshot())


def test_a_second_tab_sees_the_same_runs_and_closing_tabs_leaves_nothing_behind(
        served: Served, context, lab: Path, store_before: dict) -> None:
    tabs = [Tab(context, served.url), Tab(context, served.url)]
    for tab in tabs:
        tab.wait_for(*RUNS, "finished")
    labs = children(served.proc.pid)
    assert len(labs) >= 2  # each tab is its own lab
    for tab in tabs:
        tab.page.close()
    wait_until(lambda: not children(served.proc.pid), 15, "the tabs' labs to exit")
    assert files_of(lab / "runs") == store_before  # the labs only read the store


def test_ctrl_c_stops_the_server_and_every_lab_it_started(served: Served, context) -> None:
    tab = Tab(context, served.url)
    tab.wait_for(*RUNS)
    labs = children(served.proc.pid)
    assert labs
    started = time.monotonic()
    assert served.stop() == 0
    assert time.monotonic() - started < 10
    assert not [pid for pid in labs if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
