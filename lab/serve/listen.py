"""Where `dropres-lab serve` listens, and the command each browser tab runs.

Kept apart from the server so that the user's mistakes (a taken port, a public address without
--public) are caught before textual-serve is imported, and tested without it.
"""

from __future__ import annotations

import errno
import ipaddress
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


class ServeError(Exception):
    """A mistake in the serve command: printed as one line, exit code 2."""


@dataclass(frozen=True)
class Listening:
    """A bound, listening socket and the URL a browser on this machine opens."""

    sock: socket.socket
    url: str
    loopback: bool


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServeError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def listen(host: str, port: int, public: bool) -> Listening:
    """Bind `host`:`port` (0: a free port) and listen; refuse a non-loopback host without `public`."""
    loopback = is_loopback(host)
    if not loopback and not public:
        raise ServeError(f"--host {host} is reachable from other machines, and anyone who reaches the port can "
                         "launch and cancel runs; add --public to serve it anyway, or keep 127.0.0.1 and use "
                         "SSH port forwarding (see the README)")
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a recent server's TIME_WAIT only
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is taken; choose another with --port "
                             "(--port 0 picks a free one)") from None
        if e.errno == errno.EACCES:
            raise ServeError(f"port {port} needs privileges on this machine; choose one above 1023 with --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = socket.gethostname() if ipaddress.ip_address(bound_host).is_unspecified else host
    if ":" in shown:
        shown = f"[{shown}]"
    return Listening(sock, f"http://{shown}:{bound_port}/", loopback)


def tab_command(store: Path, experiments: Path, read_only: bool) -> str:
    """The shell command one browser tab runs: this Python's lab (exec'd, so ending the
    process the server started ends the lab), arguments quoted for the shell."""
    args = [sys.executable, "-m", "lab", "--store", str(store), "--file", str(experiments)]
    if read_only:
        args.append("--read-only")
    return "exec " + shlex.join(args)
