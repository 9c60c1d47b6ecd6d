"""experiments.toml edited in place: tomlkit documents whose comments and layout survive a save.

The TUI's forms change one key at a time; a researcher's file carries comments that explain
each suite, so an edit rewrites only the key it changes (in its line, its comment kept in its
column) and a save is atomic. Validation and expansion are `lab.experiments`' job, not this
module's: here a value is only ever turned into TOML text and put in its place.

Key paths name a place in the file: ("suites", "quick", "runs", 0, "dropout") is the
`dropout` of the first run entry of suite `quick`; `format_key_path` writes them as
`validate` prints them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Comment, InlineTable, SingleKey, Table, Whitespace

from lab.core.atomic import write_atomic

KeyPath = tuple  # of str (table keys) and int (array indexes)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_key_path(path: KeyPath) -> str:
    """("suites", "x", "runs", 2, "dropout") -> 'suites.x.runs[2].dropout', quoting as TOML does."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{text}" if out else text
    return out



def load_document(path: str | os.PathLike) -> tomlkit.TOMLDocument:
    """The file as a tomlkit document: editing it keeps the user's comments and layout."""
    return tomlkit.parse(Path(path).read_text(encoding="utf-8"))


def save_document(path: str | os.PathLike, doc: tomlkit.TOMLDocument) -> None:
    """Write `doc` atomically: a reader (or a crash) sees the old file or the new one, never half.

    The temporary file is in the same directory so `os.replace` is a rename on one file system;
    the original file's permissions are kept, and a symlinked file is written through its link.
    """
    write_atomic(path, tomlkit.dumps(doc))


def toml_value(value: Any) -> str:
    """`value` written as TOML: tables inline ({ 1 = 0.025 }), lists on one line."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomlkit.item(value).as_string()


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, quoted otherwise ("skips.2")."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def document_item(doc: tomlkit.TOMLDocument, path: KeyPath) -> Any:
    """The table, array or value at `path` (("suites", "quick", "runs", 0)) in a document."""
    item: Any = doc
    for part in path:
        item = item[part]
    return item


def set_key(doc: tomlkit.TOMLDocument, path: KeyPath, key: str, value: Any) -> None:
    """Set `key` to `value` (None removes it) in the table at `path`, keeping the file's layout.

    In a [table], an existing key keeps its line and its comment (the comment stays in its
    column); a new setting goes after the table's last setting, above its runs, grid and
    references (and so above any comments that introduce the next table). An inline table ({ name = "a", ... }, e.g. a run entry) is written again on its
    line with its other keys as they were written.
    """
    _set_text(doc, path, key, None if value is None else toml_value(value))


_STRUCTURE_KEYS = ("runs", "grid", "references")


def toml_item(text: str) -> Any:
    """A value written as TOML text (toml_value's output, say) as an item to put in a document."""
    return tomlkit.parse(f"v = {text}")["v"]


def _set_text(doc: tomlkit.TOMLDocument, path: KeyPath, key: str, text: str | None) -> None:
    table = document_item(doc, path)
    if isinstance(table, InlineTable):
        items = [(k, v.as_string()) for k, v in table.value.body if k is not None]
        items = [(k.key, t) for k, t in items]
        if text is None:
            items = [(k, t) for k, t in items if k != key]
        elif any(k == key for k, _ in items):
            items = [(k, text if k == key else t) for k, t in items]
        else:
            items.append((key, text))
        inline = "{ " + ", ".join(f"{toml_key(k)} = {t.strip()}" for k, t in items) + " }" if items else "{}"
        parent, last = path[:-1], path[-1]
        if isinstance(last, int):
            document_item(doc, parent)[last] = toml_item(inline)
        else:
            _set_text(doc, parent, last, inline)
        return
    if text is None:
        if key in table:
            del table[key]
        return
    item = toml_item(text)
    if key in table:
        old = table.item(key)
        width, comment = len(old.trivia.comment_ws) + len(old.as_string()), old.trivia.comment
        table[key] = item
        if comment:  # keep the comment in its column
            pad = width - len(item.as_string())
            table.item(key).trivia.comment_ws = " " * max(1, pad)
        return
    item.trivia.trail = "\n"
    keys = [k for k, v in table.value.body if k is not None and not isinstance(v, (Table, AoT))]
    if key not in _STRUCTURE_KEYS:  # settings go above the suite's runs, grid and references
        keys = [k for k in keys if k.key not in _STRUCTURE_KEYS] or keys[:0]
        if not keys and any(k is not None for k, _ in table.value.body):
            _insert(table, key, item, after=None)
            return
    if keys:
        _insert(table, key, item, after=keys[-1])
    else:
        table.add(key, item)


def _insert(table: Table, key: str, item: Any, after: Any) -> None:
    """Put `key` in a [table] after the key `after` (None: first), where `table.add` would
    append it below the table's runs and the comments that introduce the next table.

    tomlkit has no public insert: its container's `_insert_after`/`_insert_at` (tomlkit is
    pinned for them) add the key to the container only. A Table also mirrors its keys in
    the dict it is, which `del table[key]` removes from; without the mirror entry a key
    inserted here could be read but not deleted again (KeyError: clearing a field that was
    typed at a suite or [defaults] level crashed the lab), so it is added here too, as
    `Table.append` does.
    """
    if after is None:
        table.value._insert_at(0, key, item)
    else:
        table.value._insert_after(after, key, item)
    dict.__setitem__(table, key, table.value.item(key))


def rename_key(doc: tomlkit.TOMLDocument, path: KeyPath, old: str, new: str) -> None:
    """Rename the key `old` of the [table] at `path` to `new` where it stands: its value, its
    comments and its position kept, and the [headers] of the tables under it renamed with it
    (renaming a suite renames [suites.OLD], [suites.OLD.grid] and [[suites.OLD.runs]]).

    tomlkit has no rename, and removing and adding again would move the table to the end of
    the file with the comments that introduced it left behind. So the key is replaced in the
    container's body and in the two dicts that mirror it (the container and the table), in
    their order, and written headers are rewritten (tomlkit pinned, as for `_insert`). Raises
    ValueError for a layout this cannot rename in place (a table split around other tables).
    """
    table = document_item(doc, path)
    container = table.value if isinstance(table, Table) else table
    if not isinstance(container, Container):
        raise ValueError(f"{format_key_path(path)} cannot be renamed in place; rename it in the file")
    spots = [i for i, (k, _) in enumerate(container.body) if k is not None and k.key == old]
    if len(spots) != 1 or new in container:
        raise ValueError(f"{format_key_path(path + (old,))} cannot be renamed in place; rename it in the file")
    i = spots[0]
    item = container.body[i][1]
    container.body[i] = (SingleKey(new), item)
    container._map = {(SingleKey(new) if k.key == old else k): v for k, v in container._map.items()}
    for mirror in {id(container): container, id(table): table}.values():
        entries = [(new if k == old else k, v) for k, v in dict.items(mirror)]
        dict.clear(mirror)
        dict.update(mirror, entries)
    if isinstance(item, Table) and item.display_name is not None:
        prefix = ".".join(toml_key(str(p)) for p in path + (new,))
        _rename_headers(item, item.display_name, prefix)


def _rename_headers(item: Any, old_prefix: str, new_prefix: str) -> None:
    """Rewrite the written [headers] under a renamed table that start with `old_prefix`."""
    if isinstance(item, Table):
        name = item.display_name
        if name is not None and (name == old_prefix or name.startswith(old_prefix + ".")):
            item.display_name = new_prefix + name[len(old_prefix):]
        for _, child in item.value.body:
            _rename_headers(child, old_prefix, new_prefix)
    elif isinstance(item, AoT):
        for child in item.body:
            _rename_headers(child, old_prefix, new_prefix)


def remove_table(doc: tomlkit.TOMLDocument, path: KeyPath, key: str) -> None:
    """Remove the [table] `key` of the table at `path`, keeping the comments that introduce
    the table after it.

    tomlkit keeps the comment lines above a [header] at the end of the table before it, so
    removing that table would take them along: they are moved in front of the next table's
    header instead (tomlkit pinned, as for `_insert`).
    """
    parent = document_item(doc, path)
    removed = parent[key]
    tail: list[str] = []
    if isinstance(removed, Table):
        for k, item in reversed(removed.value.body):
            if k is not None or not isinstance(item, (Comment, Whitespace)):
                break
            tail.insert(0, item.as_string())
    keys = [k for k in parent]
    following = keys[keys.index(key) + 1:]
    del parent[key]
    text = "".join(tail)
    if following and text.strip():
        after = parent[following[0]]
        if isinstance(after, Table):
            after.trivia.indent = text + after.trivia.indent
