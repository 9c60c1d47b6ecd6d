"""Line numbers for key paths in TOML text, so every problem `validate` reports says where it is.

tomllib gives no positions, so a small scanner walks the (already valid) TOML text and notes
the line where each key path is written. It understands tables, arrays of tables, dotted and
quoted keys, inline tables, arrays, strings and comments: enough to point at what a user wrote.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

from lab.toml_edit import KeyPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

def line_for(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of the nearest enclosing item written in the file."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _tokens(text: str) -> Iterator[tuple[str, Any, int]]:
    """(kind, value, line) tokens: punctuation, 'nl', 'str' (decoded) and 'atom' (bare text)."""
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
        elif c == "\n":
            yield "nl", None, line
            line, i = line + 1, i + 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = _string_end(text, i)
            yield "str", _decode_string(text[i:j]), line
            line += text.count("\n", i, j)
            i = j
        elif c in "[]{},=":
            yield c, None, line
            i += 1
        else:
            j = i
            while j < n and text[j] not in " \t\r\n#\"'[]{},=":
                j += 1
            yield "atom", text[i:j], line
            i = j


def _string_end(text: str, i: int) -> int:
    """Index just past the TOML string starting at i (basic, literal, or multi-line)."""
    q, n = text[i], len(text)
    delim = q * 3 if text.startswith(q * 3, i) else q
    j = i + len(delim)
    while j < n:
        if q == '"' and text[j] == "\\":
            j += 2
        elif text.startswith(delim, j):
            j += len(delim)
            extra = 0
            while len(delim) == 3 and extra < 2 and j < n and text[j] == q:  # """a"""" ends in a quote
                j, extra = j + 1, extra + 1
            return j
        else:
            j += 1
    return n


def _decode_string(raw: str) -> str | None:
    try:
        return tomllib.loads(f"k = {raw}")["k"]
    except tomllib.TOMLDecodeError:
        return None


class _LineScanner:
    """Walks the tokens of valid TOML, recording the first line of every key path."""

    def __init__(self, text: str):
        self.toks = list(_tokens(text))
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.pos] if self.pos < len(self.toks) else ("eof", None, 0)

    def next(self) -> tuple[str, Any, int]:
        tok = self.peek()
        self.pos += 1
        return tok

    def record(self, path: KeyPath, line: int) -> None:
        for k in range(1, len(path) + 1):
            self.lines.setdefault(path[:k], line)

    def key(self) -> list[str]:
        pieces: list[str] = []
        while self.peek()[0] in ("atom", "str"):
            kind, value, _ = self.next()
            if kind == "str":
                pieces.append(value or "")
            else:
                pieces += [p.strip() for p in value.split(".") if p.strip()]
        return pieces

    def skip_until(self, *kinds: str) -> None:
        while self.peek()[0] not in kinds + ("eof",):
            self.next()

    def scan(self) -> dict[KeyPath, int]:
        prefix: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        while self.peek()[0] != "eof":
            kind, _, line = self.peek()
            if kind == "[":
                self.next()
                array = self.peek()[0] == "["
                if array:
                    self.next()
                path = tuple(self.key())
                if array:
                    counts[path] = counts.get(path, -1) + 1
                    path += (counts[path],)
                prefix = path
                self.record(prefix, line)
                self.skip_until("nl")
            elif kind in ("atom", "str"):
                path = prefix + tuple(self.key())
                self.record(path, line)
                if self.peek()[0] == "=":
                    self.next()
                self.value(path)
                self.skip_until("nl")
            else:
                self.next()
        return self.lines

    def value(self, path: KeyPath) -> None:
        kind, _, line = self.peek()
        if kind == "{":
            self.next()
            while self.peek()[0] not in ("}", "eof"):
                if self.peek()[0] in ("atom", "str"):
                    kline = self.peek()[2]
                    sub = path + tuple(self.key())
                    self.record(sub, kline)
                    if self.peek()[0] == "=":
                        self.next()
                    self.value(sub)
                    self.skip_until(",", "}")
                else:
                    self.next()
            self.next()
        elif kind == "[":
            self.next()
            index = 0
            while True:
                self.skip_until_item()
                kind, _, line = self.peek()
                if kind in ("]", "eof"):
                    break
                self.record(path + (index,), line)
                self.value(path + (index,))
                self.skip_until(",", "]")
                if self.peek()[0] == ",":
                    self.next()
                index += 1
            self.next()
        elif kind not in ("nl", "eof"):
            self.next()

    def skip_until_item(self) -> None:
        while self.peek()[0] in ("nl", ","):
            self.next()


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path written in `text` to its line (best effort; never raises)."""
    try:
        return _LineScanner(text).scan()
    except Exception:  # a position is a convenience; a bug here must not hide the real problem
        return {}
