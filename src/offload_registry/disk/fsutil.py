"""Small, crash-safe file primitives shared by the journal and the agent files.

Everything here is blocking POSIX I/O; async callers run it in a worker thread.

Containment: every file the registry opens lies a fixed depth below the data root
(``<root>/<agent>/<file>``, ``<root>/<agent>/mmds/``, ``<root>/<file>``), and nothing planted
inside the root may send an open elsewhere or block it. So every open goes through
:func:`safe_open` or :func:`open_dir`: the data root itself is opened normally (it may be a
link), then each component below it is opened relative to its parent's descriptor with
``O_NOFOLLOW`` (a link anywhere below the root is refused), files with ``O_NONBLOCK`` too
(a FIFO planted in a file's place opens at once instead of blocking forever), and what
``fstat`` shows is not a regular file (a directory, where one is expected) is refused with
:class:`~offload_registry.errors.UnsafePathError`. Callers say how deep a path lies with
``below``: how many of its trailing components are inside the data root.

New files get ``DEFAULT_FILE_MODE`` (owner only) and new directories the matching
:func:`dir_mode_for`, unless the caller passes another ``mode``; the umask still applies.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from offload_registry.errors import ConfigurationError, UnsafePathError

MAX_NAME_BYTES = 255
"""The longest file name, in bytes, the file system takes (``NAME_MAX`` on Linux and macOS)."""

DEFAULT_FILE_MODE = 0o600
"""Permissions of the files the registry creates unless configured: private to the owner."""

FILE_DEPTH = 2
"""Components of a session or agent file's path below the data root: ``<agent>/<file>``
(journals, claims, leases, their lock and temp files, ``state.json``, ...)."""

AGENT_DIR_DEPTH = 1
"""Components of an agent directory's path below the data root."""

ROOT_FILE_DEPTH = 1
"""Components of a file kept directly in the data root (``.offload-registry-id``)."""

# What the kernel reports when O_NOFOLLOW meets a link (ELOOP), O_DIRECTORY meets a link or
# a non-directory (ENOTDIR), a non-blocking open finds a FIFO or socket without a peer
# (ENXIO), or a write open finds a directory (EISDIR).
_REFUSED_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR})

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


def check_file_mode(mode: int) -> int:
    """``mode`` when it is permission bits that let the owner read and write; otherwise
    :class:`ConfigurationError`."""
    if isinstance(mode, bool) or not isinstance(mode, int) or mode & ~0o777 or ~mode & 0o600:
        raise ConfigurationError(
            f"file mode {mode!r} must be permission bits (0o600 to 0o777) with owner read+write"
        )
    return mode


def dir_mode_for(file_mode: int) -> int:
    """The directory mode matching a file mode: each class that may read may also search
    (``0o600`` -> ``0o700``, ``0o640`` -> ``0o750``, ``0o644`` -> ``0o755``)."""
    return file_mode | ((file_mode & 0o444) >> 2)


# --- the safe-open layer ------------------------------------------------------------------


def _kind(st: os.stat_result) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(st.st_mode):
            return name
    return "an unknown kind of file"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_SAFE_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _refuse(shown: str, name: str, dir_fd: int | None, expected: str, cause: OSError) -> NoReturn:
    """Raise :class:`UnsafePathError` for ``name`` (in ``dir_fd``), saying what it is."""
    try:
        kind = _kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        kind = "unusable"
    raise UnsafePathError(shown, f"refused: it is {kind}, not {expected}", kind) from cause


def _components(path: str, below: int) -> tuple[str, list[str]]:
    """``(anchor, names)``: the data root (opened following links) and the (up to) ``below``
    names under it, none of which may be a link. String work only: this runs on every open.
    """
    anchor = path
    names: list[str] = []
    for _ in range(below):
        head, name = os.path.split(anchor)
        if name == "..":
            raise UnsafePathError(path, "refused: '..' below the data root")
        if not name or name == ".":  # a short relative path: the anchor is what is left
            break
        names.append(name)
        anchor = head
    names.reverse()
    return anchor or ".", names


def _open_dir_entry(
    parent_fd: int | None, name: str, shown: str, mkdir_mode: int | None, fsync: FsyncPolicy
) -> int:
    """Open directory ``name`` (relative to ``parent_fd``; a whole path when it is ``None``)
    without following a link in its last component; create it with ``mkdir_mode`` when it is
    missing and a mode is given (then fsync its parent under ``FsyncPolicy.ALWAYS``)."""
    flags = _DIR_FLAGS | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except FileNotFoundError:
        if mkdir_mode is None:
            raise
    except OSError as exc:
        if exc.errno in _REFUSED_ERRNOS:
            _refuse(shown, name, parent_fd, "a directory", exc)
        raise
    if parent_fd is None:  # the first component: its parent is the data root
        os.makedirs(os.path.dirname(name) or ".", mkdir_mode, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another process made it meanwhile
        os.mkdir(name, mkdir_mode, dir_fd=parent_fd)
    if fsync is FsyncPolicy.ALWAYS:
        if parent_fd is None:
            _fsync_path(os.path.dirname(name) or ".")
        else:
            os.fsync(parent_fd)
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in _REFUSED_ERRNOS:
            _refuse(shown, name, parent_fd, "a directory", exc)
        raise


def _fsync_path(directory: str) -> None:
    fd = os.open(directory, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_dir(
    path: Path | str,
    below: int = AGENT_DIR_DEPTH,
    *,
    create: bool = False,
    mode: int = DEFAULT_FILE_MODE,
    fsync: FsyncPolicy = FsyncPolicy.NEVER,
) -> int:
    """A descriptor of the directory ``path``, whose last ``below`` components lie inside
    the data root; the caller closes it.

    The data root is followed even if it is a link; each component under it is opened with
    ``O_NOFOLLOW`` (the first one by its whole path, the next ones relative to their parent's
    descriptor), so a link planted below the root, or anything that is not a directory,
    raises :class:`UnsafePathError`. A missing component raises ``FileNotFoundError`` unless
    ``create=True``, which makes the data root (with its parents) and each component (mode
    :func:`dir_mode_for` ``(mode)``); under ``FsyncPolicy.ALWAYS`` the parent of each new
    component is fsynced, so the directory survives a machine crash with what is then
    written in it.
    """
    text = os.fspath(path)
    anchor, names = _components(text, below)
    mkdir_mode = dir_mode_for(mode) if create else None
    if not names:
        try:
            return os.open(anchor, _DIR_FLAGS)
        except FileNotFoundError:
            if mkdir_mode is None:
                raise
        os.makedirs(anchor, mkdir_mode, exist_ok=True)
        return os.open(anchor, _DIR_FLAGS)
    shown = os.path.join(anchor, names[0])
    fd = _open_dir_entry(None, shown, shown, mkdir_mode, fsync)
    try:
        for name in names[1:]:
            shown = os.path.join(shown, name)
            child = _open_dir_entry(fd, name, shown, mkdir_mode, fsync)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(path: Path, below: int = AGENT_DIR_DEPTH) -> Iterator[int]:
    """:func:`open_dir` (never creating) as a context manager that closes the descriptor."""
    fd = open_dir(path, below)
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_dir(
    path: Path,
    below: int = AGENT_DIR_DEPTH,
    *,
    mode: int = DEFAULT_FILE_MODE,
    fsync: FsyncPolicy = FsyncPolicy.NEVER,
) -> None:
    """Create the directory ``path`` and whatever is missing above it (:func:`open_dir` with
    ``create=True``: new directories get :func:`dir_mode_for` ``(mode)``, and under
    ``FsyncPolicy.ALWAYS`` their parents are fsynced); a link or non-directory in the way
    raises :class:`UnsafePathError`."""
    os.close(open_dir(path, below, create=True, mode=mode, fsync=fsync))


def safe_open(
    path: Path, flags: int, *, below: int = FILE_DEPTH, mode: int = DEFAULT_FILE_MODE
) -> int:
    """``os.open(path, flags, mode)`` that can neither leave the data root nor block.

    The directory is reached with :func:`open_dir` (``below - 1`` components under the root,
    none a link, none created) and the file opened in it with ``O_NOFOLLOW``, ``O_NONBLOCK``
    and ``O_CLOEXEC`` added; anything but a regular file (a link, a FIFO, a socket, a device,
    a directory) raises :class:`UnsafePathError`, closed unread, and so does a file with
    other hard links opened for writing (one of them may be outside). ``O_NONBLOCK`` is cleared
    before returning, so the descriptor behaves as a plain one. A missing file or directory
    raises ``FileNotFoundError``, as ``os.open`` does.
    """
    text = os.fspath(path)
    parent: int | None = None
    name = text  # a file directly in the data root: one open of the whole path suffices
    if below > 1:
        head, name = os.path.split(text)
        parent = open_dir(head or ".", below - 1)
    try:
        try:
            fd = os.open(name, flags | _SAFE_FILE_FLAGS, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _REFUSED_ERRNOS:
                _refuse(text, name, parent, "a regular file", exc)
            raise
    finally:
        if parent is not None:
            os.close(parent)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st)
            raise UnsafePathError(text, f"refused: it is {kind}, not a regular file", kind)
        if flags & (os.O_WRONLY | os.O_RDWR) and st.st_nlink > 1:
            # Another name of this inode may lie outside the data root: writing through it
            # would change a file there. (Reads are harmless and stay allowed.)
            kind = "a file with other hard links"
            raise UnsafePathError(text, f"refused for writing: it is {kind}", kind)
        # F_SETFL changes only the status flags (O_APPEND, O_NONBLOCK, ...) and ignores the
        # access and creation flags, so the flags we opened with, minus O_NONBLOCK, are the
        # descriptor's flags without it (one call instead of F_GETFL then F_SETFL).
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _SAFE_FILE_FLAGS) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file_bytes(path: Path, *, below: int = FILE_DEPTH) -> bytes:
    """The whole content of the regular file ``path``, opened with :func:`safe_open`."""
    with os.fdopen(safe_open(path, os.O_RDONLY, below=below), "rb") as f:
        return f.read()


def fsync_dir(directory: Path, below: int = AGENT_DIR_DEPTH) -> None:
    """Fsync a directory so a rename or a new file inside it survives a machine crash (opened
    with :func:`open_dir`; ``below`` components of it lie under the data root)."""
    fd = open_dir(directory, below)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path,
    data: bytes,
    fsync: FsyncPolicy,
    *,
    mode: int = DEFAULT_FILE_MODE,
    below: int = FILE_DEPTH,
) -> os.stat_result:
    """Replace ``path`` with ``data`` so readers and crashes see the old or the new file, never
    a torn one; returns the new file's ``fstat`` (the rename keeps its identity and times).

    Durability: with ``FsyncPolicy.ALWAYS`` the temp file is fsynced before the rename and the
    directory after it; locking is the caller's job (hold the file's lock around the
    read-modify-write). Containment: the temp file ``.<name>.tmp-<random>`` is created with
    ``O_EXCL | O_NOFOLLOW`` (and ``mode``) in the descriptor of the checked directory, and
    renamed within it, so no planted file or link is ever written through. An error removes
    the temp file; a crash may leave one, which readers ignore (its name is hidden).
    """
    name = path.name
    dir_fd = open_dir(path.parent, below - 1)
    try:
        tmp = fit_name(f".{name}.tmp-{secrets.token_hex(8)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if fsync is FsyncPolicy.ALWAYS:
                    os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if fsync is FsyncPolicy.ALWAYS:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return st
