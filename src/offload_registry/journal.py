"""The session journal (``offload-<session-id>.jsonl``): tolerant reads, locked crash-safe writes.

Reading agrees with the seed line for line. The bytes are decoded as UTF-8 with invalid
sequences replaced by U+FFFD (as Node's ``readFileSync(path, "utf-8")``), split on ``\\n``
only, each piece trimmed with JavaScript's ``trim`` and blank pieces skipped. A piece that
``JSON.parse`` refuses is retried once with the unsafe characters stripped; if it still
fails it is *corrupt*. A parsed value that is not an object with a non-empty string
``tool_call_id`` is *invalid*. Both are counted and logged, never raised.

Writing is ours, not the seed's: appends and rewrites run under the journal's exclusive
``flock`` (taken by the caller with :func:`offload_registry.fsutil.file_lock`), an append is
one ``write`` of whole lines, and a rewrite replaces the file atomically, so a reader or a
crash sees the old journal or the new one, never a torn one.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from offload_registry.errors import InvalidSessionKeyError, JournalError, UnsafePathError
from offload_registry.fsutil import (
    DEFAULT_FILE_MODE,
    FsyncPolicy,
    atomic_write_bytes,
    file_lock,
    fsync_dir,
    lock_path_for,
    opened_dir,
    read_file_bytes,
    safe_open,
)
from offload_registry.jsjson import encode_entry, js_trim, parse_json_line, strip_unsafe
from offload_registry.json_edit import set_member
from offload_registry.session_state import normalize_id

__all__ = [
    "TAIL_BYTES",
    "FileIdentity",
    "JournalRead",
    "MarkResult",
    "StatusScan",
    "Watermark",
    "append_entries_to_file",
    "current_watermark",
    "journal_path",
    "mark_journal",
    "parse_journal_bytes",
    "read_journal",
    "rewrite_journal",
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


def journal_path(agent_dir: Path, session_id: str) -> Path:
    """The journal of ``session_id``: ``agent_dir / "offload-<session_id>.jsonl"``.

    ``session_id`` must already be sanitized (``keys`` does it); one that could name a path
    outside ``agent_dir`` raises :class:`InvalidSessionKeyError`.
    """
    if not session_id or "/" in session_id or "\x00" in session_id:
        raise InvalidSessionKeyError(session_id, "not a single safe file-name component")
    return agent_dir / f"offload-{session_id}.jsonl"


# --- parsing (pure) -----------------------------------------------------------------------

_BLANK: Final = 0
_CORRUPT: Final = 1
_VALUE: Final = 2


def _parse_piece(raw: bytes) -> tuple[int, Any]:
    """The seed's rule for one piece (between two ``\\n``), on the slow, exact path."""
    text = js_trim(raw.decode("utf-8", "replace"))
    if not text:
        return _BLANK, None
    try:
        return _VALUE, parse_json_line(text)
    except ValueError:
        pass
    try:
        # Strip, then parse (no second trim), as the seed does; an empty result fails.
        return _VALUE, parse_json_line(strip_unsafe(text))
    except ValueError:
        return _CORRUPT, None


def _classify(raw: bytes) -> tuple[int, Any]:
    try:
        return _VALUE, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _parse_piece(raw)


def _is_entry(value: Any) -> bool:
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
            if kind == _BLANK:
                continue
            if kind == _CORRUPT:
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


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _log_damage(path: Path, corrupt: int, invalid: int) -> None:
    if corrupt or invalid:
        log.warning(
            "journal %s: skipped %d corrupt and %d invalid lines",
            path,
            corrupt,
            invalid,
            extra={"path": str(path), "corrupt": corrupt, "invalid": invalid},
        )


def _tail_before(fd: int, end: int, known: bytes) -> bytes:
    """The ``TAIL_BYTES`` bytes before ``end``, of which ``known`` are the last ones read."""
    if len(known) >= TAIL_BYTES or len(known) == end:
        return known[-TAIL_BYTES:]
    size = min(end, TAIL_BYTES)
    return os.pread(fd, size, end - size)


GENERATION_BYTES: Final = 8


def read_generation(path: Path) -> int:
    """The journal's rewrite generation, kept in its lock file (0 when there is none)."""
    try:
        fd = safe_open(lock_path_for(path), os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        raw = os.pread(fd, GENERATION_BYTES, 0)
    finally:
        os.close(fd)
    return int.from_bytes(raw, "big") if len(raw) == GENERATION_BYTES else 0


def _bump_generation(path: Path, mode: int = DEFAULT_FILE_MODE) -> int:
    """Count one more rewrite in the lock file (the caller holds the exclusive lock)."""
    fd = safe_open(lock_path_for(path), os.O_RDWR | os.O_CREAT, mode=mode)
    try:
        raw = os.pread(fd, GENERATION_BYTES, 0)
        generation = (int.from_bytes(raw, "big") if len(raw) == GENERATION_BYTES else 0) + 1
        os.pwrite(fd, generation.to_bytes(GENERATION_BYTES, "big"), 0)
    finally:
        os.close(fd)
    return generation


def _partial_length(fd: int, end: int, known: bytes) -> int:
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


def _read_from(path: Path, since: Watermark | None) -> tuple[bytes, Watermark, bool] | None:
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
        partial = _partial_length(fd, end, data)
        watermark = Watermark(
            FileIdentity.of(st),
            end,
            _tail_before(fd, end, data),
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
                _tail_before(fd, end, b""),
                _partial_length(fd, end, b""),
                read_generation(path),
                st.st_mtime_ns,
            )
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except UnsafePathError as exc:
        if exc.kind == "a directory":  # reads as missing, as in _read_from
            return None
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal: {_reason(exc)}") from exc


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
    caller that already holds the exclusive :func:`~offload_registry.fsutil.file_lock` of
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
    _log_damage(path, corrupt, invalid)
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
            return _read_from(path, since)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal: {_reason(exc)}") from exc


# --- status scans: only what a rebuild needs ------------------------------------------------


class _Status(msgspec.Struct):
    """The two fields a rebuild needs; msgspec validates the whole line but builds only these."""

    tool_call_id: str
    offloaded: Any = None


_decode_status = msgspec.json.Decoder(_Status).decode


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
            status = _decode_status(raw)
            tool_call_id, offloaded = status.tool_call_id, status.offloaded
        except Exception:  # any refusal means: decide on the exact path
            kind, value = _classify(raw)
            if kind == _BLANK:
                continue
            if kind == _CORRUPT:
                corrupt += 1
                continue
            if not _is_entry(value):
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
    _log_damage(path, corrupt, invalid)
    return StatusScan(
        ids, statuses, corrupt, invalid, watermark, replaced=since is not None and not continued
    )


# --- writing ------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_for_append(path: Path, mode: int) -> tuple[int, bool]:
    """An append descriptor (readable, to check the last byte) and whether we created it
    (with ``mode``); opened with :func:`~offload_registry.fsutil.safe_open`."""
    flags = os.O_RDWR | os.O_APPEND
    while True:  # the file usually exists: try that first
        try:
            return safe_open(path, flags), False
        except FileNotFoundError:
            pass
        try:
            return safe_open(path, flags | os.O_CREAT | os.O_EXCL, mode=mode), True
        except FileExistsError:  # another writer created it meanwhile
            continue


def append_entries_to_file(
    path: Path,
    entries: Sequence[Mapping[str, Any]],
    fsync: FsyncPolicy,
    *,
    mode: int = DEFAULT_FILE_MODE,
) -> Watermark:
    """Append ``entries`` as lines (:func:`~offload_registry.jsjson.encode_entry`), creating
    the file if needed, and return the watermark just after them.

    Locking: the caller must hold the exclusive ``file_lock(path)`` around its read-dedup-
    append sequence; this function takes no lock. Deduplication is the caller's job too:
    every entry given is written.

    All or nothing: an append that raises leaves the file as it was. Every step (write,
    fsync, the watermark's reads, the new file's directory fsync) runs before returning, and
    any failure among them (disk full, ``EFBIG``, ``EIO`` from fsync, an interrupt) truncates
    the file back to its length before the append, or removes it when this call created it,
    and fsyncs that (per the policy) before raising, all under the caller's lock, so no
    reader ever sees the failed lines. A rollback that fails itself is logged as an error
    and named in the raised :class:`JournalError`.

    Crash safety: all lines go out in one ``write`` (a loop only if the kernel writes part);
    if the file's last byte is not ``\\n`` (a torn write), a ``\\n`` is written first so the
    torn piece stays a corrupt line of its own and the new entries parse (a rollback removes
    that ``\\n`` too). A process killed during the append or its rollback leaves the old
    file plus a prefix of the batch: its whole lines count as appended (the caller was never
    told either way, as with a kill just after a successful append) and a torn last line is
    isolated by the next append's ``\\n``, so it never merges with a later line.

    Durability: with ``FsyncPolicy.ALWAYS`` the file is fsynced before returning, and its
    directory too when the file was just created. An entry that cannot be encoded raises
    (``TypeError``) before anything is written; an ``OSError`` raises :class:`JournalError`.
    With no entries nothing is written (the file is still created if missing, with
    ``mode``). A link or non-regular file in the journal's place raises
    :class:`~offload_registry.errors.UnsafePathError` before anything is written.
    """
    blob = b"".join([encode_entry(entry) for entry in entries])
    try:
        fd, created = _open_for_append(path, mode)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot append to journal: {_reason(exc)}") from exc
    start: int | None = None  # the length to roll back to, once known
    try:
        try:
            start = os.fstat(fd).st_size
            if blob and start and os.pread(fd, 1, start - 1) != b"\n":
                blob = b"\n" + blob
            _write_all(fd, blob)
            if fsync is FsyncPolicy.ALWAYS and (blob or created):
                os.fsync(fd)
            st = os.fstat(fd)
            end = st.st_size
            watermark = Watermark(
                FileIdentity.of(st),
                end,
                _tail_before(fd, end, blob),
                _partial_length(fd, end, blob),
                read_generation(path),
                st.st_mtime_ns,
            )
            if created and fsync is FsyncPolicy.ALWAYS:
                fsync_dir(path.parent)
        except BaseException as exc:
            undone = _roll_back_append(path, fd, start, created, fsync)
            if not isinstance(exc, OSError) or isinstance(exc, UnsafePathError):
                raise
            rollback = "" if undone is None else f"; rolling it back failed too: {undone}"
            raise JournalError(
                str(path), f"cannot append to journal: {_reason(exc)}{rollback}"
            ) from exc
    finally:
        os.close(fd)
    return watermark


def _remove_created(path: Path, fd: int, fsync: FsyncPolicy) -> None:
    """Remove the journal this append created: relative to the checked agent directory, and
    only while that name is still our file (a directory swapped for a link meanwhile makes
    :func:`opened_dir` refuse, so nothing outside the data root is ever unlinked)."""
    ours = os.fstat(fd)
    with opened_dir(path.parent) as dir_fd:
        now = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
            os.unlink(path.name, dir_fd=dir_fd)
        if fsync is FsyncPolicy.ALWAYS:
            os.fsync(dir_fd)


def _roll_back_append(
    path: Path, fd: int, start: int | None, created: bool, fsync: FsyncPolicy
) -> str | None:
    """Undo a failed append (the caller holds the lock): remove the file this append created,
    or cut it back to ``start`` bytes, fsynced per the policy. Returns why that failed, or
    ``None`` when the file is as it was."""
    try:
        if created:
            _remove_created(path, fd, fsync)
        elif start is not None:  # None: the append failed before writing anything
            os.ftruncate(fd, start)
            if fsync is FsyncPolicy.ALWAYS:
                os.fsync(fd)
    except OSError as exc:
        log.error(
            "journal %s: a failed append could not be rolled back: %s",
            path,
            _reason(exc),
            extra={"path": str(path), "start": start, "new_file": created},
        )
        return _reason(exc)
    return None


def rewrite_journal(
    path: Path,
    transform: Callable[[dict[str, Any]], dict[str, Any] | None],
    fsync: FsyncPolicy,
    *,
    mode: int = DEFAULT_FILE_MODE,
) -> Watermark:
    """Rewrite the journal with ``transform`` applied to each valid entry, atomically.

    ``transform`` gets each valid entry in file order and returns the entry to write: a new
    dict or the same one (possibly changed in place) is re-encoded with
    :func:`~offload_registry.jsjson.encode_entry`; ``None`` keeps the original line byte for
    byte. Nothing is lost: corrupt and invalid lines are kept verbatim (a torn last line
    gains its ``\\n``); only blank lines are dropped. If ``transform`` raises, nothing is
    written and the exception propagates.

    Locking: the caller must hold the exclusive ``file_lock(path)``; this function takes no
    lock. Crash safety and durability: the new content is written to a temp file, fsynced
    (``FsyncPolicy.ALWAYS``), renamed over the journal and the directory fsynced, so readers
    and crashes see the old or the new journal, never a mix. A missing journal raises
    :class:`JournalError` (there is nothing to rewrite), as does any ``OSError``.
    Returns the watermark at the end of the new file (a new identity: readers holding an
    older watermark re-read it in full). The temp file has a random name and ``mode``; a
    link or non-regular file in the journal's place raises
    :class:`~offload_registry.errors.UnsafePathError` and nothing is written.
    """
    try:
        data = read_file_bytes(path)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal to rewrite it: {_reason(exc)}") from exc
    lines: list[bytes] = []
    for raw in data.split(b"\n"):
        kind, value = _classify(raw)
        if kind == _BLANK:
            continue
        if kind == _VALUE and _is_entry(value):
            new = transform(value)
            if new is not None:
                lines.append(encode_entry(new))
                continue
        lines.append(raw + b"\n")
    return _replace_journal(path, b"".join(lines), fsync, mode)


# --- status marks: change only the named values ---------------------------------------------


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
    kind, value = _classify(new)
    if (
        kind != _VALUE
        or not _is_entry(value)
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
        read = _read_from(path, None)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read journal to mark it: {_reason(exc)}") from exc
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
        if kind != _VALUE:
            corrupt += kind == _CORRUPT
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
    _log_damage(path, corrupt, invalid)
    if not changed:
        return MarkResult(ids, found, 0, corrupt, invalid, watermark)
    blob = b"\n".join(pieces)
    if not blob.endswith(b"\n"):
        blob += b"\n"  # a torn last piece becomes a line of its own, as after an append
    watermark = _replace_journal(path, blob, fsync, mode)
    return MarkResult(ids, found, changed, corrupt, invalid, watermark)


def _replace_journal(
    path: Path, blob: bytes, fsync: FsyncPolicy, mode: int = DEFAULT_FILE_MODE
) -> Watermark:
    """Replace the journal with ``blob`` atomically (the caller holds the lock)."""
    try:
        # Counted before the replace: a replace that fails then only makes readers re-read.
        generation = _bump_generation(path, mode)
        st = atomic_write_bytes(path, blob, fsync, mode=mode)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot rewrite journal: {_reason(exc)}") from exc
    return Watermark(
        FileIdentity.of(st), len(blob), blob[-TAIL_BYTES:], 0, generation, st.st_mtime_ns
    )


_INVALID: Final = 3


def _line_status(raw: bytes) -> tuple[int, str, Any]:
    """``(kind, tool_call_id, offloaded)`` of one piece, by :func:`scan_journal_bytes`'s rule
    (kind ``_VALUE`` for a valid entry, else ``_BLANK``, ``_CORRUPT`` or ``_INVALID``)."""
    try:
        status = _decode_status(raw)
        tool_call_id, offloaded = status.tool_call_id, status.offloaded
    except Exception:  # any refusal means: decide on the exact path
        kind, value = _classify(raw)
        if kind != _VALUE:
            return kind, "", None
        if not _is_entry(value):
            return _INVALID, "", None
        tool_call_id, offloaded = value["tool_call_id"], value.get("offloaded")
    return (_VALUE if tool_call_id else _INVALID), tool_call_id, offloaded
