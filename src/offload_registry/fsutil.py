"""Small, crash-safe file primitives shared by the journal and the agent files.

Everything here is blocking POSIX I/O; async callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from offload_registry.errors import ConfigurationError
from offload_registry.keys import MAX_NAME_BYTES

LONG_NAME_PREFIX = ".offload-long-"
"""Start of the hidden name our own files get when their natural name does not fit."""


def fit_name(name: str) -> str:
    """``name`` when it fits the file system's 255-byte limit, else a hidden stand-in.

    Used for the files the registry adds beside a journal (lock, temp, claims and lease files):
    their natural names (``.offload-<id>.jsonl.lock``, ``.offload-<id>.jsonl.tmp-<pid>``) are
    up to 22 bytes longer than the journal's, so a session id the seed can use (journal name
    up to 255 bytes) could otherwise be read but never written. The stand-in is
    ``.offload-long-`` plus the SHA-256 of the natural name in hex (78 bytes): deterministic, so
    every process picks the same lock file, distinct for distinct names (up to a hash collision,
    the pid of a temp name included), and hidden, so neither the seed nor our session scans take
    it for a journal or a claims record. The cost: a claims record of such a session is not
    found by the ``warm``/``verify``/``stats`` scans unless its journal exists too.
    """
    encoded = os.fsencode(name)
    if len(encoded) <= MAX_NAME_BYTES:
        return name
    return LONG_NAME_PREFIX + hashlib.sha256(encoded).hexdigest()


class FsyncPolicy(enum.StrEnum):
    """How hard a write pushes its bytes to stable storage before returning.

    ``ALWAYS`` (default): file data is fsynced before a write returns, and after an atomic
    replace the directory is fsynced too, so an acknowledged write survives power loss.
    ``NEVER``: bytes reach the OS page cache only; they survive a process crash (the kernel
    still has them) but not a machine crash. Renames stay atomic under both policies.
    """

    ALWAYS = "always"
    NEVER = "never"

    @classmethod
    def parse(cls, value: str | FsyncPolicy) -> FsyncPolicy:
        try:
            return cls(value)
        except ValueError as exc:
            choices = ", ".join(p.value for p in cls)
            raise ConfigurationError(f"fsync policy {value!r} is not one of {choices}") from exc


def fsync_dir(directory: Path) -> None:
    """Fsync a directory so a rename or a new file inside it survives a machine crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, fsync: FsyncPolicy) -> None:
    """Replace ``path`` with ``data`` so readers and crashes see the old or the new file, never
    a torn one.

    Durability: with ``FsyncPolicy.ALWAYS`` the temp file is fsynced before the rename and the
    directory after it; locking is the caller's job (hold the file's lock around the
    read-modify-write). A crash leaves at most a stray ``.<name>.tmp-<pid>`` file, which the
    next write of the same process id overwrites and readers ignore.
    """
    tmp = path.with_name(fit_name(f".{path.name}.tmp-{os.getpid()}"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync is FsyncPolicy.ALWAYS:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync is FsyncPolicy.ALWAYS:
        fsync_dir(path.parent)


def lock_path_for(path: Path) -> Path:
    """The sibling lock file of ``path`` (hidden, so the seed's readers never look at it)."""
    return path.with_name(fit_name(f".{path.name}.lock"))


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, create: bool = True) -> Iterator[bool]:
    """Hold an inter-process ``flock`` on the sibling lock file of ``path``.

    The lock lives on a separate file because an atomic replace swaps the data file's inode,
    which would silently drop a lock held on it. ``shared=True`` takes a reader lock. With
    ``create=False`` a missing lock file is not created (read-only callers such as
    ``inspect`` must not write to the data root) and the context yields ``False`` unlocked.
    Locks are per open file description, so two threads of one process exclude each other
    too. The kernel releases the lock when the process dies, so a crash never leaves it held.
    """
    lock_file = lock_path_for(path)
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    try:
        fd = os.open(lock_file, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the flock
