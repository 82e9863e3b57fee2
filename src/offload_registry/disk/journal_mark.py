"""Status marks on the session journal: change only the named ``offloaded`` values.

Every other line keeps its bytes and a changed line keeps every other member, edited in place
without recursion (:func:`~offload_registry.disk.json_edit.set_member`); the new journal
replaces the old one atomically, under the caller's exclusive lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from offload_registry.disk.fsutil import DEFAULT_FILE_MODE, FsyncPolicy
from offload_registry.disk.journal import (
    CORRUPT,
    VALUE,
    Watermark,
    classify_piece,
    decode_status,
    is_entry,
    log_damage,
    os_reason,
    read_from,
)
from offload_registry.disk.journal_write import replace_journal
from offload_registry.disk.json_edit import set_member
from offload_registry.errors import JournalError, UnsafePathError
from offload_registry.jsjson import encode_entry, js_trim, parse_json_line, strip_unsafe
from offload_registry.session_state import normalize_id

__all__ = ["MarkResult", "mark_journal"]

_INVALID: Final = 3
"""A line kind beside the reader's: JSON, but not a valid entry."""


@dataclass(slots=True)
class MarkResult:
    """The result of :func:`mark_journal`: the journal after the mark, as a status scan."""

    ids: list[str]
    """``tool_call_id`` of every valid entry, in file order."""
    statuses: list[tuple[str, Any]]
    """``(tool_call_id, offloaded)`` of the valid entries whose ``offloaded`` is not null,
    each as a fresh reader of the file reads it."""
    changed: int
    """Entries whose ``offloaded`` value was rewritten."""
    corrupt: int
    invalid: int
    watermark: Watermark | None
    """The end of the journal as it now is (the new file when it was rewritten)."""


def _same_value(a: Any, b: Any) -> bool:
    """Whether two parsed JSON values are the same (``true`` is not ``1``); a comparison too
    deep for the interpreter counts as different, which only costs a rewrite."""
    try:
        return type(a) is type(b) and bool(a == b)
    except RecursionError:
        return False


def _encode_value(value: Any) -> str:
    """``value`` as :func:`~offload_registry.jsjson.encode_entry` writes it inside an entry."""
    line = encode_entry({"offloaded": value})  # b'{"offloaded":' + value + b'}\n'
    return line[len(b'{"offloaded":') : -2].decode("utf-8")


def _parsed_text(raw: bytes) -> str:
    """The text of a valid line that ``JSON.parse`` accepted: trimmed, and stripped of the
    unsafe characters when only the seed's retry parses it."""
    text = js_trim(raw.decode("utf-8", "replace"))
    try:
        parse_json_line(text)
    except ValueError:
        return strip_unsafe(text)
    return text


def _with_status(raw: bytes, tool_call_id: str, encoded: str, status: Any) -> bytes | None:
    """The line ``raw`` with its ``offloaded`` member set to ``encoded``, every other member
    untouched, or ``None`` if the edited line would not read back as that entry with that
    status (a safety net: the line is then not changed)."""
    try:
        new = set_member(_parsed_text(raw), "offloaded", encoded).encode("utf-8")
    except ValueError:
        return None
    kind, value = classify_piece(new)
    if (
        kind != VALUE
        or not is_entry(value)
        or value["tool_call_id"] != tool_call_id
        or not _same_value(value.get("offloaded"), status)
    ):
        return None
    return new


def mark_journal(
    path: Path,
    statuses: Mapping[str, Any],
    fsync: FsyncPolicy,
    *,
    mode: int = DEFAULT_FILE_MODE,
) -> MarkResult:
    """Set ``offloaded`` to ``statuses[normalized id]`` on every valid entry whose canonical
    normalized id is named (unsafe characters stripped, ``_`` removed, as the seed matches
    them) and whose value differs.

    A mark changes only what it names: every other line keeps its bytes, blank, corrupt
    and invalid lines included, and a changed line keeps every member but ``offloaded``
    (which is replaced where it stands, or added at the end of the object). Ids are never
    re-encoded, so an id made of characters the seed strips, or of invalid UTF-8, reads the
    same afterwards; lines are found and edited without recursion, so no nesting depth of a
    valid line makes a mark fail. The status is written as the seed writes values (unsafe
    characters stripped); a changed line's own text is trimmed, and stripped only when the
    seed reads it that way, so every value reads back the same.

    Locking: the caller must hold the exclusive ``file_lock(path)``. Crash safety and
    durability: nothing is written when nothing changes; otherwise the new content goes to
    a temp file, fsynced (per the policy), renamed over the journal, and the directory
    fsynced, so readers and crashes see the old or the new journal. A mark that raises
    leaves the journal as it was. A missing journal, or any ``OSError``, raises
    :class:`JournalError`.
    """
    try:
        read = read_from(path, None)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal to mark it: {os_reason(exc)}") from exc
    if read is None:
        raise JournalError(str(path), "cannot mark a journal that does not exist")
    data, watermark, _ = read
    wanted: dict[str, tuple[str, Any]] = {}
    for key, status in statuses.items():
        encoded = _encode_value(status)
        wanted[key] = (encoded, parse_json_line(encoded))  # as a reader will get it back
    pieces = data.split(b"\n")
    ids: list[str] = []
    found: list[tuple[str, Any]] = []
    changed = corrupt = invalid = 0
    for index, raw in enumerate(pieces):
        kind, tool_call_id, offloaded = _line_status(raw)
        if kind != VALUE:
            corrupt += kind == CORRUPT
            invalid += kind == _INVALID
            continue
        ids.append(tool_call_id)
        # Keys are canonical (the API strips unsafe characters), so a line another tool wrote
        # with such characters in its id is found by its canonical form; its bytes stay.
        target = wanted.get(normalize_id(strip_unsafe(tool_call_id)))
        if target is not None and not _same_value(offloaded, target[1]):
            new = _with_status(raw, tool_call_id, *target)
            if new is None:
                raise JournalError(
                    str(path), f"cannot set the status of line {index + 1} ({tool_call_id!r})"
                )
            pieces[index] = new
            offloaded = target[1]
            changed += 1
        if offloaded is not None:
            found.append((tool_call_id, offloaded))
    log_damage(path, corrupt, invalid)
    if not changed:
        return MarkResult(ids, found, 0, corrupt, invalid, watermark)
    blob = b"\n".join(pieces)
    if not blob.endswith(b"\n"):
        blob += b"\n"  # a torn last piece becomes a line of its own, as after an append
    watermark = replace_journal(path, blob, fsync, mode)
    return MarkResult(ids, found, changed, corrupt, invalid, watermark)


def _line_status(raw: bytes) -> tuple[int, str, Any]:
    """``(kind, tool_call_id, offloaded)`` of one piece, by :func:`scan_journal_bytes`'s rule
    (kind ``VALUE`` for a valid entry, else ``BLANK``, ``CORRUPT`` or ``_INVALID``)."""
    try:
        status = decode_status(raw)
        tool_call_id, offloaded = status.tool_call_id, status.offloaded
    except Exception:  # any refusal means: decide on the exact path
        kind, value = classify_piece(raw)
        if kind != VALUE:
            return kind, "", None
        if not is_entry(value):
            return _INVALID, "", None
        tool_call_id, offloaded = value["tool_call_id"], value.get("offloaded")
    return (VALUE if tool_call_id else _INVALID), tool_call_id, offloaded
