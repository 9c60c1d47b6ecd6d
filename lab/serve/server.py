"""The web server of `dropres-lab serve`: textual-serve's `Server`, with our page and a bounded stop.

What differs from textual-serve's own `Server.serve`, and why:

* The page (`templates/app_index.html`): the stock page loads its font from a public font
  service; ours loads the Roboto Mono that textual-serve ships in its /static folder, so
  nothing leaves the machine. It also builds the websocket's URL from the address the browser
  used, so a page reached through SSH port forwarding (another local port) still connects.
* The socket is bound by `lab.serve.listen` before the server starts: a taken port is one
  line, and --port 0 prints the port it got.
* Each tab's lab runs in its own session, so the terminal's Ctrl-C reaches the server only;
  the server then asks every lab to quit and ends those that have not within `QUIT_GRACE_S`
  (textual-serve waits on them without a timeout). Background drivers a tab started are left
  training: they run in sessions of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

#: Seconds a lab has to quit when asked (a tab closed, the server stopping) before it is ended.
QUIT_GRACE_S = 3.0
#: Seconds to wait after SIGTERM, then after SIGKILL.
END_WAIT_S = 2.0
TEMPLATES = Path(__file__).resolve().parent / "templates"


class LabTab(AppService):
    """One browser tab's lab process: started in its own session, stopped within a bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping: asyncio.Task[None] | None = None

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        self._process = process = await asyncio.create_subprocess_shell(
            self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._build_environment(width=width, height=height),
            start_new_session=True,
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def run(self) -> None:
        """textual-serve's loop, then close the page's websocket: a lab that ended on its own
        (a crash, say) shows "Session ended" with a Restart button instead of a frozen screen."""
        await super().run()
        with suppress(Exception):
            await self.remote_close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        """Ask the lab to quit; end it if it has not within QUIT_GRACE_S. Safe to call twice."""
        if self._task is None and self._stopping is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        with suppress(Exception):  # its stdin may be gone already (the lab exited)
            await self.send_meta({"type": "quit"})
        process = self._process
        if process is not None:
            for sig, wait in ((None, QUIT_GRACE_S), (signal.SIGTERM, END_WAIT_S), (signal.SIGKILL, END_WAIT_S)):
                if sig is not None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, sig)
                try:
                    await asyncio.wait_for(process.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    continue
        task, self._task = self._task, None
        if task is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, END_WAIT_S)


class LabServer(Server):
    """textual-serve's server for the lab's tab command, on a socket bound beforehand."""

    def __init__(self, command: str, sock: socket.socket, title: str, announce: Callable[[], None]) -> None:
        """`announce` is called once the server serves and Ctrl-C stops it cleanly (print the URL)."""
        host, port = sock.getsockname()[:2]
        super().__init__(command, host=host, port=port, title=title, templates_path=TEMPLATES)
        self.sock = sock
        self.announce = announce
        self.tabs: dict[LabTab, web.WebSocketResponse] = {}

    async def on_startup(self, app: web.Application) -> None:
        """The command line has printed the URL already (textual-serve prints a banner here)."""

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with a `LabTab` per connection, remembered until it ends."""
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        tab: LabTab | None = None
        try:
            await websocket.prepare(request)
            tab = LabTab(self.command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                         close=websocket.close, download_manager=self.download_manager, debug=self.debug)
            self.tabs[tab] = websocket
            await tab.start(width, height)
            await self._process_messages(websocket, tab)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception as error:  # one tab's failure is logged; the server goes on
            self.console.print(f"tab failed: {error!r}", markup=False, highlight=False)
        finally:
            if tab is not None:
                await tab.stop()
                self.tabs.pop(tab, None)
        return websocket

    def serve(self, debug: bool = False) -> None:
        """Serve until SIGINT or SIGTERM, then end every tab's lab (bounded) and return."""
        self.debug = debug
        self.initialize_logging()
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        runner = web.AppRunner(await self._make_app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.SockSite(runner, self.sock)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.announce()
        try:
            await stop.wait()
        finally:
            tabs = list(self.tabs.items())
            await asyncio.gather(*(tab.stop() for tab, _ in tabs), return_exceptions=True)
            for _, websocket in tabs:
                with suppress(Exception):
                    await asyncio.wait_for(websocket.close(), END_WAIT_S)
            await runner.cleanup()
