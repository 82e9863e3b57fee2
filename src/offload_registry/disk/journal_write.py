"""Writing the session journal: appends and atomic rewrites, under the caller's lock.

Appends and rewrites run under the journal's exclusive ``flock`` (taken by the caller with
:func:`offload_registry.disk.locks.file_lock`): an append is one ``write`` of whole lines,
rolled back on any failure, and a rewrite replaces the file atomically (counting one more
generation in the lock file first), so a reader or a crash sees the old journal or the new
one, never a torn one. The reading side is :mod:`offload_registry.disk.journal`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
    FsyncPolicy,
    atomic_write_bytes,
    fsync_dir,
    opened_dir,
    read_file_bytes,
    safe_open,
)
from offload_registry.disk.journal import (
    BLANK,
    GENERATION_BYTES,
    TAIL_BYTES,
    VALUE,
    FileIdentity,
    Watermark,
    classify_piece,
    is_entry,
    os_reason,
    partial_length,
    read_generation,
    tail_before,
)
from offload_registry.disk.layout import lock_path
from offload_registry.errors import JournalError, UnsafePathError
from offload_registry.jsjson import encode_entry

__all__ = ["append_entries_to_file", "replace_journal", "rewrite_journal"]

log = logging.getLogger("offload_registry.disk.journal")  # one logger for the journal's events


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_for_append(path: Path, mode: int) -> tuple[int, bool]:
    """An append descriptor (readable, to check the last byte) and whether we created it
    (with ``mode``); opened with :func:`~offload_registry.disk.fsutil.safe_open`."""
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
        raise JournalError(str(path), f"cannot append to journal: {os_reason(exc)}") from exc
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
                tail_before(fd, end, blob),
                partial_length(fd, end, blob),
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
                str(path), f"cannot append to journal: {os_reason(exc)}{rollback}"
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
            os_reason(exc),
            extra={"path": str(path), "start": start, "new_file": created},
        )
        return os_reason(exc)
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
        reason = os_reason(exc)
        raise JournalError(str(path), f"cannot read journal to rewrite it: {reason}") from exc
    lines: list[bytes] = []
    for raw in data.split(b"\n"):
        kind, value = classify_piece(raw)
        if kind == BLANK:
            continue
        if kind == VALUE and is_entry(value):
            new = transform(value)
            if new is not None:
                lines.append(encode_entry(new))
                continue
        lines.append(raw + b"\n")
    return replace_journal(path, b"".join(lines), fsync, mode)


def _bump_generation(path: Path, mode: int = DEFAULT_FILE_MODE) -> int:
    """Count one more rewrite in the lock file (the caller holds the exclusive lock)."""
    fd = safe_open(lock_path(path), os.O_RDWR | os.O_CREAT, mode=mode)
    try:
        raw = os.pread(fd, GENERATION_BYTES, 0)
        generation = (int.from_bytes(raw, "big") if len(raw) == GENERATION_BYTES else 0) + 1
        os.pwrite(fd, generation.to_bytes(GENERATION_BYTES, "big"), 0)
    finally:
        os.close(fd)
    return generation


def replace_journal(
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
        raise JournalError(str(path), f"cannot rewrite journal: {os_reason(exc)}") from exc
    return Watermark(
        FileIdentity.of(st), len(blob), blob[-TAIL_BYTES:], 0, generation, st.st_mtime_ns
    )
