"""Every name and path below a data root, in one place.

The data root holds one directory per agent and the data root's id file::

    <root>/.offload-registry-id               the random id naming the deployment
    <root>/<agent>/offload-<session>.jsonl    a session's journal (the seed's name)
    <root>/<agent>/offload-<session>.claims   its claims record (ours; the seed never reads it)
    <root>/<agent>/offload-<session>.lease    its lease record (ours)
    <root>/<agent>/.<file>.lock               the flock (and rewrite generation) of <file>
    <root>/<agent>/state.json                 the agent's state (the seed's file)
    <root>/<agent>/sessions-registry.json     session key -> journal (the seed's file)
    <root>/<agent>/mmds/, refs/               the seed's diagram and result directories

Names of our own that could exceed the file system's limit go through
:func:`~offload_registry.disk.fsutil.fit_name`; a journal's name never needs it (``keys``
bounds session ids). Nothing here opens a file except the id file's reader and writer.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Final

from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
    ROOT_FILE_DEPTH,
    ensure_dir,
    fit_name,
    opened_dir,
    read_file_bytes,
)
from offload_registry.errors import InvalidSessionKeyError

__all__ = [
    "CLAIMS_SUFFIX",
    "DATA_ROOT_ID_FILE",
    "JOURNAL_PREFIX",
    "JOURNAL_SUFFIX",
    "LEASE_SUFFIX",
    "LOCK_SUFFIX",
    "MMDS_DIR",
    "REFS_DIR",
    "REGISTRY_FILE",
    "SESSION_FILE_SUFFIXES",
    "STATE_FILE",
    "agent_dir",
    "claims_beside",
    "claims_path",
    "data_root_id",
    "journal_name",
    "journal_path",
    "lease_beside",
    "lease_path",
    "lock_path",
    "mmds_dir",
    "read_data_root_id",
    "ref_name",
    "registry_path",
    "session_id_in",
    "session_id_of",
    "state_path",
]

JOURNAL_PREFIX: Final = "offload-"
JOURNAL_SUFFIX: Final = ".jsonl"
CLAIMS_SUFFIX: Final = ".claims"
LEASE_SUFFIX: Final = ".lease"
SESSION_FILE_SUFFIXES: Final = (JOURNAL_SUFFIX, CLAIMS_SUFFIX)
"""The files that make a session exist on disk (what the operator scans list)."""
LOCK_SUFFIX: Final = ".lock"

STATE_FILE: Final = "state.json"
REGISTRY_FILE: Final = "sessions-registry.json"
MMDS_DIR: Final = "mmds"
REFS_DIR: Final = "refs"

DATA_ROOT_ID_FILE: Final = ".offload-registry-id"
"""The file inside a data root holding its random id (one line of hex digits)."""


# --- sessions -------------------------------------------------------------------------------


def agent_dir(data_root: Path, agent_name: str) -> Path:
    """An agent's directory: ``<root>/<agent_name>`` (the name already made safe by ``keys``)."""
    return data_root / agent_name


def journal_name(session_id: str) -> str:
    """The file name of a session's journal: ``offload-<session_id>.jsonl``."""
    return f"{JOURNAL_PREFIX}{session_id}{JOURNAL_SUFFIX}"


def journal_path(agent_dir: Path, session_id: str) -> Path:
    """The journal of ``session_id``: ``agent_dir / "offload-<session_id>.jsonl"``.

    ``session_id`` must already be sanitized (``keys`` does it); one that could name a path
    outside ``agent_dir`` raises :class:`InvalidSessionKeyError`.
    """
    if not session_id or "/" in session_id or "\x00" in session_id:
        raise InvalidSessionKeyError(session_id, "not a single safe file-name component")
    return agent_dir / journal_name(session_id)


def session_id_of(journal: str) -> str:
    """The session id in a journal's file name (the inverse of :func:`journal_name`)."""
    return journal.removeprefix(JOURNAL_PREFIX).removesuffix(JOURNAL_SUFFIX)


def session_id_in(name: str) -> str | None:
    """The session id of a journal or claims record named ``name``, else ``None`` (hidden
    lock and temp files start with ``.``, so they never match)."""
    if not name.startswith(JOURNAL_PREFIX):
        return None
    for suffix in SESSION_FILE_SUFFIXES:
        if name.endswith(suffix):
            return name[len(JOURNAL_PREFIX) : -len(suffix)]
    return None


def claims_path(agent_dir: Path, session_id: str) -> Path:
    """A session's claims record, ``offload-<id>.claims``: not named ``*.jsonl``, so the seed
    and our journal scans never take it for a journal; fitted, as a session id of up to 241
    bytes fits the journal's name but not this one."""
    return agent_dir / fit_name(f"{JOURNAL_PREFIX}{session_id}{CLAIMS_SUFFIX}")


def lease_path(agent_dir: Path, session_id: str) -> Path:
    """A session's lease record, ``offload-<id>.lease`` (fitted like :func:`claims_path`)."""
    return agent_dir / fit_name(f"{JOURNAL_PREFIX}{session_id}{LEASE_SUFFIX}")


def claims_beside(journal: Path) -> Path:
    """The claims record of the session whose journal is ``journal``."""
    return claims_path(journal.parent, session_id_of(journal.name))


def lease_beside(journal: Path) -> Path:
    """The lease record of the session whose journal is ``journal``."""
    return lease_path(journal.parent, session_id_of(journal.name))


def lock_path(path: Path) -> Path:
    """The sibling lock file of ``path`` (hidden, so the seed's readers never look at it)."""
    return path.with_name(fit_name(f".{path.name}{LOCK_SUFFIX}"))


def ref_name(tool_call_id: str) -> str:
    """The ``result_ref`` of an offloaded result: ``refs/<tool_call_id>.md``, relative to the
    agent directory, as the seed writes it."""
    return f"{REFS_DIR}/{tool_call_id}.md"


# --- agent files ----------------------------------------------------------------------------


def state_path(agent_dir: Path) -> Path:
    """The agent's ``state.json``."""
    return agent_dir / STATE_FILE


def registry_path(agent_dir: Path) -> Path:
    """The agent's ``sessions-registry.json``."""
    return agent_dir / REGISTRY_FILE


def mmds_dir(agent_dir: Path) -> Path:
    """The agent's ``mmds/`` directory of numbered diagrams."""
    return agent_dir / MMDS_DIR


# --- the data root's id ---------------------------------------------------------------------


def read_data_root_id(data_root: str | os.PathLike[str]) -> str | None:
    """The id in ``<data_root>/.offload-registry-id``, or ``None`` when there is none (yet)."""
    try:
        text = (Path(data_root).expanduser() / DATA_ROOT_ID_FILE).read_text("ascii").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    return text or None


def data_root_id(
    data_root: Path, *, create: bool, file_mode: int = DEFAULT_FILE_MODE
) -> str | None:
    """The random id of a data root, kept in ``<root>/.offload-registry-id`` (made on first
    use by a writable registry, with ``file_mode``; ``None`` when missing and ``create`` is
    false). A link or non-regular file in its place raises ``UnsafePathError``."""
    path = data_root / DATA_ROOT_ID_FILE
    try:
        return _read_root_id(path)
    except FileNotFoundError:
        if not create:
            return None
    ensure_dir(data_root, 0, mode=file_mode)
    # Written whole under a temporary name, then linked into place (which fails if the file
    # exists): the id file never exists empty, so processes starting together on a new data
    # root all read the one id that won, never an empty or half-written one. Both names are
    # used relative to the root's descriptor, the temp one created exclusively, never
    # following a link.
    with opened_dir(data_root, 0) as dir_fd:
        temp = f"{DATA_ROOT_ID_FILE}.{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, file_mode, dir_fd=dir_fd)
        try:
            try:
                os.write(fd, (uuid.uuid4().hex + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs
                os.link(
                    temp,
                    DATA_ROOT_ID_FILE,
                    src_dir_fd=dir_fd,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                os.fsync(dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
    return _read_root_id(path)


def _read_root_id(path: Path) -> str:
    return read_file_bytes(path, below=ROOT_FILE_DEPTH).decode("ascii").strip()
