"""The session journal (``offload-<session-id>.jsonl``): tolerant reads, watermarks, scans.

Reading agrees with the seed line for line. The bytes are decoded as UTF-8 with invalid
sequences replaced by U+FFFD (as Node's ``readFileSync(path, "utf-8")``), split on ``\\n``
only, each piece trimmed with JavaScript's ``trim`` and blank pieces skipped. A piece that
``JSON.parse`` refuses is retried once with the unsafe characters stripped; if it still
fails it is *corrupt*. A parsed value that is not an object with a non-empty string
``tool_call_id`` is *invalid*. Both are counted and logged, never raised.

Writing is ours, not the seed's (:mod:`~offload_registry.disk.journal_write` appends and
rewrites, :mod:`~offload_registry.disk.journal_mark` sets statuses): under the journal's
exclusive ``flock``, an append is one ``write`` of whole lines and a rewrite replaces the file
atomically, so a reader or a crash sees the old journal or the new one, never a torn one.
The parsing rules and the read helpers below are shared with them.

Incremental reads: a :class:`Watermark` records which file (device and inode) was read, how
many bytes of it, and the last bytes before that offset. Reading ``since`` a watermark reads
only what was appended after it; a file that was replaced (new inode, or the same inode
reused after two atomic replaces, caught by the tail bytes), truncated or rewritten in place
is read in full and flagged ``replaced``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from offload_registry.disk.fsutil import safe_open
from offload_registry.disk.layout import lock_path
from offload_registry.disk.locks import file_lock
from offload_registry.errors import JournalError, UnsafePathError
from offload_registry.jsjson import js_trim, parse_json_line, strip_unsafe

__all__ = [
    "TAIL_BYTES",
    "FileIdentity",
    "JournalRead",
    "StatusScan",
    "Watermark",
    "current_watermark",
    "parse_journal_bytes",
    "read_generation",
    "read_journal",
    "scan_journal",
    "scan_journal_bytes",
]

log = logging.getLogger(__name__)

#: How many bytes before a watermark's offset it remembers, to recognize the same file.
TAIL_BYTES: Final = 64


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a journal path named when it was read: ``st_dev`` and ``st_ino``."""

    device: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far a journal has been consumed: ``offset`` bytes of the file ``identity``.

    ``tail`` holds the (up to :data:`TAIL_BYTES`) bytes just before ``offset``. Inode numbers
    are reused (two atomic replaces in a row often give the file its old inode back), so the
    identity alone cannot tell "the same file, grown" from "a new file"; a read ``since`` this
    watermark continues only when the bytes before ``offset`` are still ``tail``. An empty
    ``tail`` (a watermark built by hand or by an older version) skips that check.

    A foreign in-place rewrite (the seed truncates and rewrites) that keeps the file's length
    is caught by ``mtime_ns``: a file that did not grow but was modified is read again. What
    remains a heuristic: an in-place rewrite that keeps the length of everything up to
    ``offset`` and its last ``TAIL_BYTES`` and is *also* appended to before the next read, or
    one made within the file system's timestamp granularity of the previous read. Our own
    writers only append or replace.
    """

    identity: FileIdentity
    offset: int
    tail: bytes = b""
    partial: int = 0
    """Bytes at the end of what was read that no ``\\n`` ends yet (a line another process,
    such as the seed, may still be writing). A later read that finds the file grown starts
    again at that piece, so a line read half-written is never lost."""
    generation: int = 0
    """How many times our writers have replaced the file (kept in its lock file), so an inode
    reused by a second replace is never mistaken for the file this watermark read."""
    mtime_ns: int = 0
    """The file's modification time when this watermark was taken (0: unknown, not checked)."""


@dataclass(slots=True)
class JournalRead:
    """The result of :func:`read_journal`."""

    entries: list[dict[str, Any]]
    """Valid entries (objects with a non-empty string ``tool_call_id``), in file order."""
    corrupt: int
    """Pieces that are not JSON even after the unsafe-character retry."""
    invalid: int
    """JSON values that are not valid entries."""
    watermark: Watermark | None
    """Where the next incremental read starts; ``None`` when the file does not exist."""
    replaced: bool
    """``since`` was given but could not be continued, so this is a full read."""


# --- parsing (pure) -----------------------------------------------------------------------
# The names without a leading underscore below (line kinds, classify_piece, is_entry, the read
# helpers) are this package's: journal_write and journal_mark share the reader's rules.

BLANK: Final = 0
CORRUPT: Final = 1
VALUE: Final = 2


def _parse_piece(raw: bytes) -> tuple[int, Any]:
    """The seed's rule for one piece (between two ``\\n``), on the slow, exact path."""
    text = js_trim(raw.decode("utf-8", "replace"))
    if not text:
        return BLANK, None
    try:
        return VALUE, parse_json_line(text)
    except ValueError:
        pass
    try:
        # Strip, then parse (no second trim), as the seed does; an empty result fails.
        return VALUE, parse_json_line(strip_unsafe(text))
    except ValueError:
        return CORRUPT, None


def classify_piece(raw: bytes) -> tuple[int, Any]:
    """``(kind, value)`` of one piece: orjson first, the seed's exact path when it refuses."""
    try:
        return VALUE, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _parse_piece(raw)


def is_entry(value: Any) -> bool:
    """Whether a parsed value is a valid entry: an object with a non-empty string id."""
    if type(value) is not dict:
        return False
    tool_call_id = value.get("tool_call_id")
    return type(tool_call_id) is str and tool_call_id != ""


def parse_journal_bytes(data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """Parse journal bytes as the seed does: ``(valid entries in order, corrupt, invalid)``.

    Pure and total: never raises for content. Each line's bytes go to ``orjson.loads`` first.
    That is exact: it accepts only valid UTF-8 JSON with space, tab or carriage return at the
    ends, where decoding with replacement and trimming change nothing, and it shares the
    number rule of :mod:`offload_registry.jsjson`; everything it refuses (blank lines, a
    byte-order mark, other whitespace, bad UTF-8, lone surrogates, deep nesting, junk) takes
    the seed's exact path. Decoding per line equals decoding the whole file and splitting,
    because ``\\n`` never occurs inside, nor ends, a UTF-8 sequence.
    """
    entries: list[dict[str, Any]] = []
    append = entries.append
    corrupt = invalid = 0
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for raw in data.split(b"\n"):
        try:
            value = loads(raw)
        except decode_error:
            kind, value = _parse_piece(raw)
            if kind == BLANK:
                continue
            if kind == CORRUPT:
                corrupt += 1
                continue
        if type(value) is dict:
            tool_call_id = value.get("tool_call_id")
            if type(tool_call_id) is str and tool_call_id:
                append(value)
                continue
        invalid += 1
    return entries, corrupt, invalid


# --- reading ------------------------------------------------------------------------------


def os_reason(exc: OSError) -> str:
    """The words of an ``OSError`` for a :class:`JournalError` message."""
    return exc.strerror or str(exc)


def log_damage(path: Path, corrupt: int, invalid: int) -> None:
    if corrupt or invalid:
        log.warning(
            "journal %s: skipped %d corrupt and %d invalid lines",
            path,
            corrupt,
            invalid,
            extra={"path": str(path), "corrupt": corrupt, "invalid": invalid},
        )


def tail_before(fd: int, end: int, known: bytes) -> bytes:
    """The ``TAIL_BYTES`` bytes before ``end``, of which ``known`` are the last ones read."""
    if len(known) >= TAIL_BYTES or len(known) == end:
        return known[-TAIL_BYTES:]
    size = min(end, TAIL_BYTES)
    return os.pread(fd, size, end - size)


GENERATION_BYTES: Final = 8


def read_generation(path: Path) -> int:
    """The journal's rewrite generation, kept in its lock file (0 when there is none)."""
    try:
        fd = safe_open(lock_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        raw = os.pread(fd, GENERATION_BYTES, 0)
    finally:
        os.close(fd)
    return int.from_bytes(raw, "big") if len(raw) == GENERATION_BYTES else 0


def partial_length(fd: int, end: int, known: bytes) -> int:
    """Bytes before ``end`` after the last ``\\n`` (``known`` are the last bytes read)."""
    newline = known.rfind(b"\n")
    if newline >= 0 or len(known) == end:
        return len(known) - newline - 1
    at = end - len(known)
    while at > 0:  # the unterminated piece started before what was read: look back
        size = min(at, 1 << 16)
        chunk = os.pread(fd, size, at - size)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return end - (at - size + newline + 1)
        at -= size
    return end


def _continues(fd: int, st: os.stat_result, since: Watermark, generation: int) -> bool:
    if FileIdentity.of(st) != since.identity or st.st_size < since.offset:
        return False
    if generation != since.generation:
        return False
    if since.mtime_ns and st.st_size == since.offset and st.st_mtime_ns != since.mtime_ns:
        return False  # modified in place without growing: a foreign rewrite
    if not since.tail:
        return True
    if len(since.tail) > since.offset:
        return False
    at = since.offset - len(since.tail)
    return os.pread(fd, len(since.tail), at) == since.tail


def read_from(path: Path, since: Watermark | None) -> tuple[bytes, Watermark, bool] | None:
    """``(new bytes, watermark after them, continued)``, or ``None`` for a missing file (or a
    directory in its place).

    Continuing from a watermark whose last piece was unterminated re-reads that piece when
    the file grew; when it is still byte for byte the same line (now ended), it is skipped,
    because the previous read already counted it.
    """
    try:
        f = os.fdopen(safe_open(path, os.O_RDONLY), "rb")
    except FileNotFoundError:
        return None
    except UnsafePathError as exc:
        if exc.kind != "a directory":
            raise
        # The seed's read fails here and it starts the session empty; we read it the same
        # way (a write to it is still refused). Links, FIFOs and devices stay refused.
        log.warning("%s is a directory, not a journal: read as an empty session", path)
        return None
    with f:
        fd = f.fileno()
        st = os.fstat(fd)
        generation = read_generation(path)
        continued = since is not None and _continues(fd, st, since, generation)
        start = 0
        if since is not None and continued:
            grew = st.st_size > since.offset
            start = since.offset - since.partial if grew else since.offset
        f.seek(start)
        data = f.read()
        end = start + len(data)
        partial = partial_length(fd, end, data)
        watermark = Watermark(
            FileIdentity.of(st),
            end,
            tail_before(fd, end, data),
            partial,
            generation,
            st.st_mtime_ns if end == st.st_size else 0,  # 0: it grew while we read
        )
    if since is not None and continued and start < since.offset:
        newline = data.find(b"\n")
        if newline == since.partial:  # the same piece, now ended: already counted
            data = data[newline + 1 :]
    return data, watermark, continued


def current_watermark(path: Path) -> Watermark | None:
    """The watermark a full read of ``path`` would end at, without reading the file: one
    ``fstat``, the generation, and the bytes before the end (``None`` when it is missing).

    Unlocked: a write in progress may show as a partial last line, which only makes the
    watermark differ from one taken after the write, never match a wrong one.
    """
    try:
        fd = safe_open(path, os.O_RDONLY)  # a bare descriptor: no file object to build
        try:
            st = os.fstat(fd)
            end = st.st_size
            return Watermark(
                FileIdentity.of(st),
                end,
                tail_before(fd, end, b""),
                partial_length(fd, end, b""),
                read_generation(path),
                st.st_mtime_ns,
            )
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except UnsafePathError as exc:
        if exc.kind == "a directory":  # reads as missing, as in read_from
            return None
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal: {os_reason(exc)}") from exc


def read_journal(path: Path, since: Watermark | None = None, *, lock: bool = True) -> JournalRead:
    """Read the journal's valid entries, all of them or those appended after ``since``.

    With ``since`` from an earlier read or write of the same path: if the file is the same
    one and has not shrunk, only the bytes after ``since.offset`` are read
    (``replaced=False``); otherwise the whole file is read and ``replaced=True``. A missing
    file reads as empty, with ``watermark=None`` (and ``replaced=True`` if ``since`` was
    given). The watermark covers the whole file as read, a last piece without ``\\n``
    included: our writers only add whole lines, and an append first ends a torn last line,
    so such a piece is final (counted corrupt once, never re-read).

    Locking: with ``lock=True`` the bytes are read under the journal's shared ``flock``
    (``create=False``: a missing lock file is not created and the read goes unlocked), so a
    write of ours is never seen half done; parsing happens after the lock is released. A
    caller that already holds the exclusive :func:`~offload_registry.disk.locks.file_lock` of
    ``path`` must pass ``lock=False``: ``flock`` locks belong to open file descriptions, so
    a second, shared lock taken by the same process would wait for the first forever.

    Never raises for content (damage is counted and logged as a warning with ``path``,
    ``corrupt`` and ``invalid`` fields); an ``OSError`` other than a missing file raises
    :class:`JournalError` from it. Never writes anything.
    """
    read = _read_bytes(path, since, lock)
    if read is None:
        return JournalRead([], 0, 0, None, replaced=since is not None)
    data, watermark, continued = read
    entries, corrupt, invalid = parse_journal_bytes(data)
    log_damage(path, corrupt, invalid)
    return JournalRead(
        entries, corrupt, invalid, watermark, replaced=since is not None and not continued
    )


def _read_bytes(
    path: Path, since: Watermark | None, lock: bool
) -> tuple[bytes, Watermark, bool] | None:
    lock_cm: contextlib.AbstractContextManager[object] = (
        file_lock(path, shared=True, create=False) if lock else contextlib.nullcontext()
    )
    try:
        with lock_cm:
            return read_from(path, since)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal: {os_reason(exc)}") from exc


# --- status scans: only what a rebuild needs ------------------------------------------------


class _Status(msgspec.Struct):
    """The two fields a rebuild needs; msgspec validates the whole line but builds only these."""

    tool_call_id: str
    offloaded: Any = None


decode_status = msgspec.json.Decoder(_Status).decode


@dataclass(slots=True)
class StatusScan:
    """The result of :func:`scan_journal`: each valid entry's id and, when set, its status."""

    ids: list[str]
    """``tool_call_id`` of every valid entry, in file order."""
    statuses: list[tuple[str, Any]]
    """``(tool_call_id, offloaded)`` of the valid entries whose ``offloaded`` is not null.

    Each status has the JavaScript truthiness and ``== "deleted"`` of the seed's value, which
    is all a rebuild reads; an integer beyond 64 bits stays an ``int`` here, where
    ``JSON.parse`` (and :func:`read_journal`) round it to a float."""
    corrupt: int
    invalid: int
    watermark: Watermark | None
    replaced: bool


def scan_journal_bytes(data: bytes) -> tuple[list[str], list[tuple[str, Any]], int, int]:
    """Like :func:`parse_journal_bytes`, keeping only ids and non-null statuses.

    Exact by construction: msgspec's strict decoder accepts a line only when it is one valid
    UTF-8 JSON object with a string ``tool_call_id`` and JSON whitespace at most at its ends,
    where the seed's decoding and trimming change nothing and ``JSON.parse`` gives the same
    two values (last duplicate key wins in both). Every line it refuses, for any reason,
    takes the same exact path as :func:`parse_journal_bytes`.
    """
    ids: list[str] = []
    statuses: list[tuple[str, Any]] = []
    add_id, add_status = ids.append, statuses.append
    corrupt = invalid = 0
    for raw in data.split(b"\n"):
        try:
            status = decode_status(raw)
            tool_call_id, offloaded = status.tool_call_id, status.offloaded
        except Exception:  # any refusal means: decide on the exact path
            kind, value = classify_piece(raw)
            if kind == BLANK:
                continue
            if kind == CORRUPT:
                corrupt += 1
                continue
            if not is_entry(value):
                invalid += 1
                continue
            tool_call_id, offloaded = value["tool_call_id"], value.get("offloaded")
        if not tool_call_id:
            invalid += 1
            continue
        add_id(tool_call_id)
        if offloaded is not None:
            add_status((tool_call_id, offloaded))
    return ids, statuses, corrupt, invalid


def scan_journal(path: Path, since: Watermark | None = None, *, lock: bool = True) -> StatusScan:
    """:func:`read_journal` for rebuilds: the same reading, locking and watermark rules, but
    only ids and statuses are kept, which makes a cold rebuild about twice as fast."""
    read = _read_bytes(path, since, lock)
    if read is None:
        return StatusScan([], [], 0, 0, None, replaced=since is not None)
    data, watermark, continued = read
    ids, statuses, corrupt, invalid = scan_journal_bytes(data)
    log_damage(path, corrupt, invalid)
    return StatusScan(
        ids, statuses, corrupt, invalid, watermark, replaced=since is not None and not continued
    )
