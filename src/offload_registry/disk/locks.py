"""The inter-process lock of a file: an ``flock`` on its hidden sibling lock file.

Every read-modify-write below the data root (journal appends, rewrites and marks, claims,
leases, ``state.json``, ``sessions-registry.json``) holds the exclusive lock of the file it
changes; readers that must not see a write half done take the shared one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from offload_registry.disk.fsutil import DEFAULT_FILE_MODE, safe_open
from offload_registry.disk.layout import lock_path

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(
    path: Path, *, shared: bool = False, create: bool = True, mode: int = DEFAULT_FILE_MODE
) -> Iterator[bool]:
    """Hold an inter-process ``flock`` on the sibling lock file of ``path``.

    The lock lives on a separate file because an atomic replace swaps the data file's inode,
    which would silently drop a lock held on it. ``shared=True`` takes a reader lock. With
    ``create=False`` a missing lock file is not created (read-only callers such as
    ``inspect`` must not write to the data root) and the context yields ``False`` unlocked.
    Locks are per open file description, so two threads of one process exclude each other
    too. The kernel releases the lock when the process dies, so a crash never leaves it held.
    The lock file is opened with :func:`safe_open` (a new one gets ``mode``).
    """
    lock_file = lock_path(path)
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    try:
        fd = safe_open(lock_file, flags, mode=mode)
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
