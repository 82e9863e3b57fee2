"""One JSON object file of an agent (``state.json``, ``sessions-registry.json``): read as the
seed reads it, kept aside when corrupt, replaced atomically.

The project's one JSON dialect (:mod:`offload_registry.jsjson`) does the parsing and the
writing; what is here is the file's side: Node's UTF-8 decoding, the corrupt copy, the
agent directory and the ``JournalError`` a caller sees. Locking is the caller's
(:mod:`offload_registry.disk.agent_files` holds the file's lock around each update).
"""

from __future__ import annotations

import logging
from pathlib import Path

from offload_registry.disk.fsutil import (
    AGENT_DIR_DEPTH,
    FsyncPolicy,
    atomic_write_bytes,
    ensure_dir,
    read_file_bytes,
)
from offload_registry.errors import JournalError, UnsafePathError
from offload_registry.jsjson import dumps_js, parse_json_line

__all__ = [
    "ensure_agent_dir",
    "is_lossy",
    "keep_corrupt_copy",
    "parse_object",
    "read_for_update",
    "write_json",
]

# The agent files' events, under the name they had before this module was split out.
logger = logging.getLogger("offload_registry.disk.agent_files")


def ensure_agent_dir(directory: Path, fsync: FsyncPolicy, mode: int) -> None:
    """Create the agent directory (and the data root) when missing, with the directory mode
    matching ``mode``; under ``ALWAYS`` fsync each new entry's parent so the directories
    survive a machine crash along with the file written in them. A link in the way raises
    :class:`UnsafePathError`.
    """
    try:
        ensure_dir(directory, AGENT_DIR_DEPTH, mode=mode, fsync=fsync)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(directory), f"cannot create the agent directory: {exc}") from exc


def read_for_update(path: Path) -> bytes | None:
    """The file's bytes, or ``None`` when it does not exist. A file that exists but cannot be
    read raises ``JournalError``: replacing it blindly could destroy data.
    """
    try:
        return read_file_bytes(path)
    except FileNotFoundError:
        return None
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read before updating: {exc}") from exc


def _decode_like_node(raw: bytes) -> tuple[str, bool]:
    """``raw`` as text the way Node's ``readFile(path, "utf-8")`` gives it to the seed: each
    invalid UTF-8 sequence becomes U+FFFD (both decoders replace maximal subparts), and a byte
    order mark is dropped. The flag says whether anything was replaced."""
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8-sig", errors="replace"), True


def is_lossy(raw: bytes) -> bool:
    """Whether reading ``raw`` replaced bytes with U+FFFD (a rewrite would lose them)."""
    return _decode_like_node(raw)[1]


def parse_object(path: Path, raw: bytes) -> dict[str, object] | None:
    """The JSON object in ``raw``, or ``None`` (with a WARNING) when it is not one.

    A UTF-8 byte-order mark is accepted; invalid UTF-8 is decoded with U+FFFD as the seed
    does (one bad byte in a string keeps every other field); then ``JSON.parse``'s rules
    (:func:`~offload_registry.jsjson.parse_json_line`: ``NaN``/``Infinity`` tokens rejected,
    an overflowing number read as infinity, which is written back as ``null``). A file nested
    deeper than it could be written back counts as corrupt.
    """
    text, lossy = _decode_like_node(raw)
    if lossy:
        logger.warning(
            "%s is not valid UTF-8; reading it with U+FFFD in place of the bad bytes",
            path,
            extra={"path": str(path)},
        )
    try:
        obj = parse_json_line(text, any_depth=False)
    except (ValueError, RecursionError) as exc:
        logger.warning(
            "%s is corrupt (%s); treating it as empty",
            path,
            exc,
            extra={"path": str(path)},
        )
        return None
    if not isinstance(obj, dict):
        logger.warning(
            "%s holds a JSON %s, not an object; treating it as empty",
            path,
            type(obj).__name__,
            extra={"path": str(path)},
        )
        return None
    return obj


def write_json(path: Path, obj: object, fsync: FsyncPolicy, mode: int) -> None:
    """Replace ``path`` with ``JSON.stringify(obj, null, 2)`` as UTF-8, no trailing newline
    (:func:`~offload_registry.jsjson.dumps_js`); atomic, fsynced per ``fsync``, under the
    caller's lock."""
    try:
        data = dumps_js(obj, indent=2).encode("utf-8")
    except RecursionError as exc:  # a caller's own value nested past what json.dumps takes
        raise JournalError(str(path), "cannot write: nested too deeply") from exc
    try:
        atomic_write_bytes(path, data, fsync, mode=mode)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot write: {exc}") from exc


def keep_corrupt_copy(path: Path, raw: bytes, fsync: FsyncPolicy, stamp: int, mode: int) -> None:
    """Copy a corrupt file's bytes to ``<name>.corrupt-<stamp>`` (``stamp``: unix ms; ``-<n>``
    appended if that name is taken by other bytes, or by anything that is not a regular file)
    before the caller replaces it, so nothing is lost.
    """
    base = path.with_name(f"{path.name}.corrupt-{stamp}")
    target = base
    suffix = 0
    while True:
        try:
            if read_file_bytes(target) == raw:
                return
        except FileNotFoundError:
            break
        except OSError:  # unreadable, a link, a FIFO...: taken, try the next name
            pass
        suffix += 1
        target = base.with_name(f"{base.name}-{suffix}")
    try:
        atomic_write_bytes(target, raw, fsync, mode=mode)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(target), f"cannot keep a copy of the corrupt file: {exc}") from exc
    logger.warning(
        "%s was corrupt; kept a copy as %s",
        path,
        target.name,
        extra={"path": str(path), "copy": str(target)},
    )
