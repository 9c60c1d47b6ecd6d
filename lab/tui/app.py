"""The interactive lab: a Textual app that is a client of the run store (DESIGN.md section 3).

`LabApp` wires the screens together and owns the lab's state as the views see it
(`lab.tui.state.LabState`, handed to each screen when it is made):

* `live`: the runs the views hold (`LiveRun`: its row and bounded loss histories), and every
  run's status and the counts per status, kept up to date by one polling thread
  (`lab.tui.poller`) that posts one `StoreUpdated` message per batch of changes; the active
  screen redraws only the runs that changed. The Runs table asks for its window of the store
  and Results for its best rows (`ViewRequests`), so a 100,000-run store opens in seconds;
* `marked`: runs marked (space) in Runs or Results for comparison;
* what the user asks for (launch, cancel, resume, restart, stop) becomes writes to the store:
  runs enqueued with `lab.launch`, requests the driver acts on, and a detached background
  driver started when none holds the store. The lab never trains and never talks to workers.

Screens never call the app: they post messages (`RunsScreen.CancelRequested`,
`RunListScreen.DetailRequested`, ...) that the handlers here act on. The store is read and
written only in worker threads, never on the UI thread: a write may wait up to
`BUSY_TIMEOUT_S` for another writer, and the UI must not freeze meanwhile. Outcomes come back
as `Notice` messages.

Screens are Textual modes (each keeps its own state while another is shown): experiments
(`lab.tui.screens.experiments`), runs, results and detail; help, export and the quit question
are modal screens on top.
"""

from __future__ import annotations

import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import WorkerFailed

from lab.core.errors import DataError
from lab.experiments import RunSpec
from lab.experiments_document import has_recovery
from lab.formatting import counted
from lab.launch import check_corpora, enqueue_specs, start_background_driver
from lab.store import DriverInfo, DriverLock, Store, StoreError, resolve_store_dir
from lab.workers.settings import DriverSettings

from .read_only import READ_ONLY_NOTE, WritesOffWhenReadOnly
from .poller import LiveRun, Pending, StorePoller, StoreUpdated, Update, ViewRequests
from .screens.detail import DetailScreen
from .screens.experiments import ExperimentsScreen
from .screens.help import HelpScreen
from .screens.quit import DISCARD, LEAVE, SAVE, STOP, ChoiceScreen, QuitScreen, UnsavedEditsScreen
from .screens.results import ResultsScreen
from .screens.run_list import RunListScreen
from .screens.runs import RunsScreen
from .state import LabState
from .widgets.synced_table import SyncedTable

#: Seconds between store polls: a run's row is redrawn at most 1 / POLL_S (2) times a second.
POLL_S = 0.5
#: After starting a background driver, how long to wait for it before trying again.
DRIVER_GRACE_S = 30.0  # torch's import alone can take seconds on a busy machine
DRIVER_ATTEMPTS = 3


def display_path(path: Path) -> str:
    """A path as short as it reads unambiguously: relative to the working folder, or with ~."""
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # pragma: no cover - another drive on Windows
        pass
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text


class LabApp(WritesOffWhenReadOnly, App[str | None]):
    """`dropres-lab` with no command. The return value is a line to print after closing."""

    CSS_PATH = "app.tcss"
    TITLE = "dropres-lab"

    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("f2", "show('experiments')", "Experiments"),
        Binding("f3", "show('runs')", "Runs"),
        Binding("f4", "show('results')", "Results"),
        Binding("f5", "detail", "Detail"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("1", "show('experiments')", "Experiments", show=False),
        Binding("2", "show('runs')", "Runs", show=False),
        Binding("3", "show('results')", "Results", show=False),
        Binding("4", "detail", "Detail", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    WRITES = frozenset({"stop_all"})

    class Notice(Message):
        """A background action's outcome, to show as a notification."""

        def __init__(self, text: str, severity: str = "information", want_driver: bool = False,
                     show_runs: bool = False) -> None:
            super().__init__()
            self.text = text
            self.severity = severity
            self.want_driver = want_driver
            self.show_runs = show_runs

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        experiments_path: str | os.PathLike[str] = "experiments.toml",
        *,
        driver_settings: DriverSettings = DriverSettings(),
        poll_interval: float = POLL_S,
        start_mode: str | None = None,
        read_only: bool = False,
    ) -> None:
        """Opens the store (StoreError, one line, if it cannot be used). `read_only`: a view
        that launches, cancels, edits and saves nothing (`lab.tui.read_only`)."""
        super().__init__()
        self.store_dir = resolve_store_dir(store_dir)
        self.store = Store.open(self.store_dir)
        self.experiments_path = Path(experiments_path)
        self._wake = threading.Event()
        requests = ViewRequests(wake=self._wake.set)
        requests.set_results(active=start_mode == "results")  # (the first read has Results either way)
        self._poller = StorePoller(self.store_dir, requests=requests, experiments_path=self.experiments_path)
        self.driver_settings = driver_settings
        self.poll_interval = poll_interval
        self.state = LabState(self.store_dir, read_only=read_only, requests=requests)
        self._start_mode = start_mode
        self._previous_mode = "runs"
        self._pending = Pending()
        self._stopping = False
        self._want_driver = False
        self._driver_started_at = 0.0
        self._driver_attempts = 0
        self._experiments: ExperimentsScreen | None = None  # once shown: its edits are asked about on quit
        self.add_mode("experiments", self._experiments_screen)
        self.add_mode("runs", lambda: RunsScreen(self.state))
        self.add_mode("results", lambda: ResultsScreen(self.state, self.experiments_path))
        self.add_mode("detail", lambda: DetailScreen(self.state))

    @property
    def live(self) -> dict[str, LiveRun]:
        """The runs the views hold as last polled (run id -> run): every run of a store that
        fits the Runs window."""
        return self.state.live

    @property
    def driver(self) -> DriverInfo | None:
        return self.state.driver

    # -- start and stop ------------------------------------------------------------------------

    async def on_mount(self) -> None:
        first = self._read_store_first()  # off the UI thread; the first paint shows the store as it is
        try:
            self._apply(await first.wait())
        except WorkerFailed as failed:
            self.notify(str(failed.error), severity="error", timeout=10)
        mode = self._start_mode
        if mode is None:  # edits a lab left unsaved are offered first (the Experiments screen asks)
            mode = "runs" if self.state.statuses and not has_recovery(self.experiments_path) else "experiments"
        self._switch(mode)
        self._poll_store()
        if any(live.row.base_name and live.row.base_name != live.row.name for live in self.live.values()):
            self.set_timer(1.0, self._warm_statistics)

    @work(thread=True, group="warm-statistics", exit_on_error=False)
    def _warm_statistics(self) -> None:
        """Import the distributions `lab.stats` uses off the UI thread, a second after start-up,
        where the store holds replicates: the first switch to Results then does not wait for
        scipy (0.4 s on an idle laptop, seconds on a busy one)."""
        import scipy.special  # noqa: F401

    def _experiments_screen(self) -> ExperimentsScreen:
        self._experiments = ExperimentsScreen(self.experiments_path, state=self.state,
                                              driver_settings=self.driver_settings)
        return self._experiments

    def on_unmount(self) -> None:
        self._stopping = True
        self._wake.set()

    @work(thread=True, group="store-poll-first", exit_on_error=False)
    def _read_store_first(self) -> Update:
        """Everything in the store, once, before the polling worker takes over the poller."""
        return self._poller.poll(force=True)

    @work(thread=True, exclusive=True, group="store-poll", exit_on_error=False)
    def _poll_store(self) -> None:
        """Poll the store every `poll_interval` (or when woken) and post coalesced updates."""
        failing = False
        try:
            while True:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    update = self._poller.poll()
                except StoreError as exc:
                    if not failing:
                        self.post_message(self.Notice(str(exc), "error"))
                    failing = True
                    continue
                failing = False
                if self._pending.offer(update):
                    self.post_message(StoreUpdated())
        finally:
            self._poller.close()

    def poke(self) -> None:
        """Poll now rather than at the next interval (after the lab wrote to the store)."""
        self._wake.set()

    def on_store_updated(self, message: StoreUpdated) -> None:
        self._apply(self._pending.take())

    def _apply(self, update: Update) -> None:
        self.state.apply(update)
        self._show_status()
        self._keep_driver()
        if update:
            refresh = getattr(self.screen, "refresh_live", None)
            if refresh is not None and self.screen.is_mounted:
                refresh(set(update.changed) | update.removed | update.dropped)

    # -- the driver ------------------------------------------------------------------------------

    @property
    def driver_alive(self) -> bool:
        return self.state.driver_alive

    @property
    def headless_holds_store(self) -> bool:
        """A driver holds the store and takes no new work (a headless run, or one stopping)."""
        return self.state.headless_holds_store

    def _show_status(self) -> None:
        d = self.driver
        if d is None or not d.alive:
            driver = "no driver"
        elif d.kind == "headless":
            driver = f"headless run pid {d.pid} (takes no new work)"
        elif d.accepting:  # only a background driver takes new work (so also for a record without a kind)
            driver = f"background driver pid {d.pid}"
        elif d.kind == "background":
            driver = f"background driver pid {d.pid} stopping (takes no new work)"
        else:  # a record from a driver too old to say its kind
            driver = f"driver pid {d.pid} (headless or stopping: takes no new work)"
        ds = self.driver_settings
        if d is not None and d.alive and d.executor:  # what the driver trains on, as its headless header says
            driver += f" · {d.executor}"
        elif ds.executor != "local":  # where this lab's launches will train
            driver += f" · launches train on {ds.executor}{' at ' + ds.address if ds.address else ''}"
        view = "read-only · " if self.state.read_only else ""
        self.sub_title = f"{view}{display_path(self.store_dir)} · {driver}"

    def _keep_driver(self) -> None:
        """After a launch: if queued runs wait and no driver came (or it exited as the runs were
        queued), start one again, a few times at most."""
        if not self._want_driver:
            return
        counts = self.state.counts
        if not counts.get("queued"):
            if not counts.get("running"):
                self._want_driver = False
            return
        if self.driver_alive:
            self._driver_attempts = 0
            return
        if time.monotonic() - self._driver_started_at < DRIVER_GRACE_S:
            return
        if self._driver_attempts >= DRIVER_ATTEMPTS:
            self._want_driver = False
            self.notify(f"the background driver did not start; see {self.store.log_path}", severity="error",
                        timeout=10)
            return
        self._driver_started_at = time.monotonic()  # no second start while this one gets under way
        self._start_driver_again()

    @work(thread=True, group="store-write", exit_on_error=False)
    def _start_driver_again(self) -> None:
        try:
            self._start_driver()
        except OSError as exc:
            self.post_message(self.Notice(f"cannot start a background driver: {exc.strerror or exc}", "error"))

    def _start_driver(self) -> int | None:
        """Start a background driver unless one holds the store (from a worker thread: it
        checks the driver lock and starts a process)."""
        self._driver_started_at = time.monotonic()
        self._driver_attempts += 1
        self._want_driver = True
        return start_background_driver(self.store.dir, self.driver_settings)

    def _headless_message(self) -> str:
        """Why a launch is refused: a driver that takes no new work holds the store."""
        info = self.store.driver_info()
        pid = f" (pid {info.pid})" if info is not None and info.pid else ""
        if info is not None and info.kind == "background":
            return (f"the background driver{pid} is stopping and takes no new work; "
                    "launch again once it has exited (a few seconds)")
        return (f"a headless run{pid} holds the store at {display_path(self.store_dir)}/ and takes no new work; "
                "wait for it to finish (or stop it), then try again")

    def _store_refuses_work(self) -> bool:
        """Whether a live driver that takes no new work holds the store (read fresh)."""
        info = self.store.driver_info()
        return info is not None and info.alive and not info.accepting

    # -- launching (from the Experiments screen) -------------------------------------------------

    @on(ExperimentsScreen.LaunchRequested)
    def _launch_requested(self, message: ExperimentsScreen.LaunchRequested) -> None:
        """The Experiments screen's launch: queue the runs and drive them."""
        self.launch(list(message.specs), bool(message.fresh))

    def launch(self, specs: Sequence[RunSpec], fresh: bool = False) -> None:
        """Check corpora, enqueue, start a background driver unless one holds the store."""
        if self._refused_as_read_only("launching"):
            return
        if not specs:
            self.notify("nothing to launch", severity="warning")
            return
        self._launch(list(specs), fresh)

    @work(thread=True, group="store-write", exit_on_error=False)
    def _launch(self, specs: list[RunSpec], fresh: bool) -> None:
        self.post_message(self._enqueue(specs, fresh))

    def _enqueue(self, specs: list[RunSpec], fresh: bool) -> "LabApp.Notice":
        try:
            if self._store_refuses_work():
                return self.Notice(self._headless_message(), "error")
            shas = check_corpora(specs)
            rows = enqueue_specs(self.store, specs, shas, fresh)
            queued = sum(r.status == "queued" for r in rows)
            pid = self._start_driver() if queued else None
        except (DataError, StoreError, OSError) as exc:
            return self.Notice(str(exc), "error")
        parts = [f"queued {counted(queued, 'run')}"]
        done = sum(r.status in ("finished", "diverged") for r in rows)
        running = sum(r.status == "running" for r in rows)
        if done:
            parts.append(f"{done} already finished (kept as results; restart one with R to train it again)")
        if running:
            parts.append(f"{running} already running")
        if pid:
            parts.append(f"background driver started (pid {pid}, log {display_path(self.store.log_path)})")
        elif queued:
            parts.append("the running driver takes them")
        return self.Notice("; ".join(parts), want_driver=bool(queued), show_runs=True)

    def on_lab_app_notice(self, message: "LabApp.Notice") -> None:
        if message.text:
            self.notify(message.text, severity=message.severity,  # type: ignore[arg-type]
                        timeout=8 if message.severity == "error" else 5)
        if message.want_driver:
            self._want_driver = True
        if message.show_runs and self.current_mode != "runs":
            self.action_show("runs")
        self.poke()

    # -- acting on runs (Runs screen requests; checked against what the views show, done in workers) --

    @on(RunsScreen.CancelRequested)
    def _cancel_requested(self, message: RunsScreen.CancelRequested) -> None:
        live = self.live.get(message.run_id)
        if live is None:
            return
        if live.row.status not in ("queued", "running"):
            self.notify(f"{live.label} is {live.row.status}: nothing to cancel", severity="warning")
            return
        self._act("cancel", message.run_id)

    @on(RunsScreen.ResumeRequested)
    def _resume_requested(self, message: RunsScreen.ResumeRequested) -> None:
        live = self.live.get(message.run_id)
        if live is None:
            return
        status = live.row.status
        if status in ("finished", "diverged"):
            self.notify(f"{live.label} is {status}, a result; restart it (R) to train it again from step 0",
                        severity="warning")
        elif status == "running" and self.driver_alive:
            self.notify(f"{live.label} is already {status}", severity="warning")
        else:  # a queued run is driven if no driver holds the store (the worker looks)
            self._act("resume", message.run_id)

    @on(RunsScreen.RestartRequested)
    def _restart_requested(self, message: RunsScreen.RestartRequested) -> None:
        run_id = message.run_id
        live = self.live.get(run_id)
        if live is None:
            return
        if live.row.status == "running" and self.driver_alive:
            self.notify(f"{live.label} is running: cancel it (x) first, then restart it", severity="warning")
            return

        def confirmed(choice: str | None) -> None:
            if choice == "restart":
                self._act("restart", run_id)

        self.push_screen(ChoiceScreen(
            f"Restart {live.label}?",
            f"It trains again from step 0 with the same settings; its {counted(live.row.step, 'step')} of metrics "
            "and its checkpoints are deleted.",
            [("restart", "Restart from step 0", "warning"), ("cancel", "Keep it", "default")]), confirmed)

    def _refused_as_read_only(self, what: str) -> bool:
        """In a read-only lab: say that `what` is off, and True (the caller does nothing)."""
        if self.state.read_only:
            self.notify(READ_ONLY_NOTE.format(what=what), severity="warning")
        return self.state.read_only

    def _act(self, kind: str, run_id: str) -> None:
        """Do one request on one run (cancel, resume, restart) in a worker, unless read-only."""
        if not self._refused_as_read_only(kind):
            self._act_in_worker(kind, run_id)

    @work(thread=True, group="store-write", exit_on_error=False)
    def _act_in_worker(self, kind: str, run_id: str) -> None:
        try:
            notice = self._do(kind, run_id)
        except (DataError, StoreError, OSError) as exc:
            notice = self.Notice(str(exc), "error")
        self.post_message(notice)

    def _do(self, kind: str, run_id: str) -> "LabApp.Notice":
        """One request on one run, in a worker thread; what to tell the user."""
        row = self.store.get(run_id)
        if row is None:
            return self.Notice("that run is no longer in the store", "warning")
        label = f"{row.suite}/{row.name}"
        if kind == "cancel":
            if DriverLock.is_held(self.store.dir):
                self.store.request(run_id, "cancel")
                mates = (f"; its {counted(row.group_size - 1, 'group-mate')} stop with it and are queued again to resume"
                         if row.status == "running" and (row.group_size or 1) > 1 else "")
                return self.Notice(f"cancel requested: the driver stops {label} (resumable){mates}")
            # No driver would ever read the request: end the run here.
            self.store.stop_runs([run_id], "cancelled")
            return self.Notice(f"{label} cancelled (no driver was running it)")
        if kind == "resume" and row.status == "queued":
            if DriverLock.is_held(self.store.dir):
                return self.Notice(f"{label} is already queued", "warning")
            kind = "drive"  # queued with no driver to take it: start one
        if self._store_refuses_work():
            return self.Notice(self._headless_message(), "error")
        if kind == "drive":
            pid = self._start_driver()
            how = f"background driver started (pid {pid})" if pid else "a driver is already running"
            return self.Notice(f"{label} is queued; {how}", want_driver=True)
        if kind == "resume":
            if not self.store.requeue([run_id]):
                return self.Notice(f"{label} cannot be resumed ({row.status})", "warning")
            step = (self.store.get(run_id) or row).step
            pid = self._start_driver()
            how = f"; background driver started (pid {pid})" if pid else ""
            return self.Notice(f"{label} queued to resume at step {step}{how}", want_driver=True)
        if kind == "restart":
            spec = RunSpec(row.suite, row.name, row.config, row.reference, row.base_name)
            enqueue_specs(self.store, [spec], check_corpora([spec]), fresh=True)
            pid = self._start_driver()
            how = f"; background driver started (pid {pid})" if pid else ""
            return self.Notice(f"{label} queued to train again from step 0{how}", want_driver=True)
        raise ValueError(kind)

    def action_stop_all(self) -> None:
        """Ask the driver to stop every run (checkpointed, resumable) and exit."""
        if self._refused_as_read_only("stopping runs"):
            return
        if not self.driver_alive:
            self.notify("no driver is running", severity="warning")
            return
        self._request_stop_all()

    @work(thread=True, group="store-write", exit_on_error=False)
    def _request_stop_all(self, then_exit: bool = False) -> None:
        """Write the stop request off the UI thread; quit's "stop them" then closes the lab."""
        try:
            self.store.request(None, "stop_all")
        except StoreError as exc:
            self.post_message(self.Notice(str(exc), "error"))
            return
        if then_exit:
            self.call_from_thread(self.exit, "stop requested: the driver checkpoints the runs and exits; "
                                             "reopen the lab and resume them with r")
        else:
            self.post_message(self.Notice("stop requested: the driver checkpoints its runs and exits; resume them with r"))

    # -- navigation --------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The key of the screen shown is left out of the footer (room for the others at 80
        columns); pressing it there does nothing anyway."""
        if action == "show" and parameters and parameters[0] == self.current_mode:
            return False
        if action == "detail" and self.current_mode == "detail":
            return False
        return super().check_action(action, parameters)

    def action_show(self, mode: str) -> None:
        if isinstance(self.screen, (HelpScreen, ChoiceScreen)):
            self.pop_screen()
        if mode != self.current_mode:
            if self.current_mode in ("experiments", "runs", "results"):
                self._previous_mode = self.current_mode
            self._switch(mode)

    def _switch(self, mode: str) -> None:
        """Show a mode; the poller ranks Results again promptly only while it is shown."""
        self.state.requests.set_results(active=mode == "results")
        self.switch_mode(mode)

    def _list_selection(self) -> list[str]:
        current = getattr(self.screen, "current_run_ids", None)
        return current() if current is not None else []

    def open_detail(self, run_ids: Iterable[str]) -> None:
        """Show these runs in Detail (one in detail, several overlaid)."""
        self.state.show_in_detail(list(run_ids))
        if self.current_mode == "detail":
            self.screen.on_screen_resume()  # type: ignore[attr-defined]
        else:
            self.action_show("detail")

    @on(RunListScreen.DetailRequested)
    def _detail_requested(self, message: RunListScreen.DetailRequested) -> None:
        self.open_detail(message.run_ids)

    def action_detail(self) -> None:
        """The highlighted run in detail (from Runs or Results), or the last one shown."""
        shown = self.state.detail_ids
        ids = self._list_selection() if self.current_mode != "detail" else shown
        self.open_detail(ids or shown)

    def action_back(self) -> None:
        self.action_show(self._previous_mode)

    @on(DetailScreen.BackRequested)
    def _back_requested(self) -> None:
        self.action_back()

    def help_sections(self) -> list[tuple[str, Sequence]]:
        sections: list[tuple[str, Sequence]] = [("Everywhere", self.BINDINGS + [
            Binding("ctrl+p", "command_palette", "Command palette (also: Stop all runs)")])]
        sections.append(("Experiments", ExperimentsScreen.BINDINGS))
        sections += [
            ("Runs", SyncedTable.BINDINGS + RunsScreen.BINDINGS),
            ("Results", SyncedTable.BINDINGS + ResultsScreen.BINDINGS
             + [Binding("click header", "", "Sort by that column (again: reverse)")]),
            ("Detail", DetailScreen.BINDINGS),
        ]
        return sections

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette reaches every key's action, plus a few without a key."""
        seen = set()
        for command in super().get_system_commands(screen):
            seen.add(command.title)
            yield command
        sources: list[tuple[object, Sequence]] = [(screen, getattr(screen, "BINDINGS", [])), (self, self.BINDINGS)]
        for namespace, bindings in sources:
            for b in bindings:
                if not isinstance(b, Binding) or not b.description or b.description in seen:
                    continue
                if b.action.partition("(")[0] in getattr(namespace, "WRITES", ()) and self.state.read_only:
                    continue
                seen.add(b.description)
                yield SystemCommand(b.description, f"key: {b.key_display or b.key}",
                                    partial(self.run_action, b.action, namespace))  # type: ignore[arg-type]
        for mode, title in (("runs", "Runs"), ("results", "Results")):
            if title not in seen:
                yield SystemCommand(title, "show the screen", partial(self.action_show, mode))
        if not self.state.read_only:
            yield SystemCommand("Stop all runs", "ask the driver to checkpoint every run and exit (resumable)",
                                self.action_stop_all)

    # -- quitting ----------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit, asking first about unsaved edits of experiments.toml, then about runs in flight."""
        if isinstance(self.screen, (QuitScreen, UnsavedEditsScreen)):
            return
        experiments = self._experiments
        if experiments is None or not experiments.dirty:
            self._quit_unless_runs_in_flight()
            return

        def chosen(choice: str | None) -> None:
            if choice == SAVE and not experiments.action_save():
                return  # not saved: the lab stays open, and the save said why
            if choice == DISCARD:
                experiments.discard_edits()
            if choice in (SAVE, DISCARD):
                self._quit_unless_runs_in_flight()

        self.push_screen(UnsavedEditsScreen(self.experiments_path.name), chosen)

    def _quit_unless_runs_in_flight(self) -> None:
        """Quit, or ask what becomes of the runs a driver is training."""
        running = self.state.counts.get("running", 0)
        queued = self.state.counts.get("queued", 0)
        if self.state.read_only or not (running or queued) or not DriverLock.is_held(self.store.dir):
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == STOP:
                self._request_stop_all(then_exit=True)
            elif choice == LEAVE:
                pid = self.driver.pid if self.driver is not None else None
                where = ("in the headless run's terminal" if headless
                         else f"in the background (log {self.store.log_path})")
                self.exit(f"runs continue {where}, driver pid {pid}; run `dropres-lab` again to watch them")

        headless = self.headless_holds_store
        self.push_screen(QuitScreen(running, queued, headless=headless), chosen)


def run_lab(store: str | os.PathLike[str] | None = None, experiments: str | os.PathLike[str] = "experiments.toml",
            driver_settings: DriverSettings = DriverSettings(), read_only: bool = False) -> str | None:
    """Open the lab (its launches train as `driver_settings` say); returns the line to print once it closes."""
    app = LabApp(store, experiments, driver_settings=driver_settings, read_only=read_only)
    try:
        return app.run()
    finally:
        app.store.close()
