"""The sessions of a data root, as found on disk: ``<root>/<agent>/offload-<id>.jsonl`` and
the claims records ``offload-<id>.claims`` beside them (pure listing, no parsing).

A session is named by its on-disk names, exactly as the registry names the journal it
resolves a key to (``keys.resolve_identity`` then ``SessionPaths.for_identity``), so its
Redis keys (``Keyspace.session``) are the ones every worker reads.

What tools print for a session is a key an operator can paste back into any command
(:func:`key_for`): a key that resolves to exactly these files. File names do not keep the
original key (``agent:main:a:b`` and ``agent:main:a_b`` share ``main/offload-a_b.jsonl``), so
the key printed is one that names the same files, not necessarily the one the worker used.
When no key resolves to a file (a name the seed's sanitizing would change, such as one
holding ``..``, written by hand or by another tool), the session is printed as its path
under the data root and marked as having no key.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offload_registry.disk import layout
from offload_registry.disk.fsutil import AGENT_DIR_DEPTH, opened_dir
from offload_registry.disk.session_files import SessionPaths
from offload_registry.errors import InvalidSessionKeyError
from offload_registry.keys import (
    SessionIdentity,
    is_safe_agent_name,
    is_safe_session_id,
    parse_session_key,
    resolve_identity,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DiskSession:
    """One session on disk (its journal, its claims record, or both exist)."""

    agent_name: str
    session_id: str
    paths: SessionPaths
    given_key: str | None = None
    """The key an operator named the session by, when it was named by one."""

    @classmethod
    def named(cls, data_root: Path, agent_name: str, session_id: str) -> DiskSession:
        """The session of these on-disk names (already checked safe) under ``data_root``."""
        identity = SessionIdentity("", agent_name, session_id, fallback=False)
        return cls(agent_name, session_id, SessionPaths.for_identity(data_root, identity))

    @property
    def identity(self) -> SessionIdentity:
        key = f"agent:{self.agent_name}:{self.session_id}"  # Redis keys use the names only
        return SessionIdentity(key, self.agent_name, self.session_id, fallback=False)

    @property
    def key(self) -> str | None:
        """A session key that resolves to exactly this session's files, or ``None``."""
        return self.given_key or key_for(self.agent_name, self.session_id)

    def has_files(self) -> bool:
        """Whether its journal or its claims record exists (one ``stat`` each)."""
        return self.paths.journal.exists() or self.paths.claims.exists()

    @property
    def relative_path(self) -> str:
        """``<agent>/offload-<id>``: the files' names under the data root, without suffix."""
        return f"{self.agent_name}/{layout.JOURNAL_PREFIX}{self.session_id}"

    def __str__(self) -> str:
        """The key to paste into any command, or the path when no key names the files."""
        return self.key or f"{self.relative_path} (no key resolves to this file)"


_WORKER_SUFFIX = re.compile(r"-w([0-9]+)\Z")
_WORKER_IN_ID = re.compile(r"swebench-w([0-9]+)")


def session_for_key(data_root: Path, key: str) -> DiskSession:
    """The session an operator names by ``key``, resolved as a worker resolves it (its files
    may not exist). Unlike a worker, a tool refuses a key that does not parse
    (:class:`InvalidSessionKeyError`, exit 2): a typo would otherwise name a fallback
    session nobody uses and the tool would report on nothing."""
    if parse_session_key(key) is None:
        hint = ""
        agent, slash, rest = key.partition("/")
        if slash and agent and rest:
            hint = f"; did you mean agent:{agent}:{rest.removeprefix(layout.JOURNAL_PREFIX)}?"
        raise InvalidSessionKeyError(key, f"not a session key of the form agent:NAME:ID{hint}")
    identity = resolve_identity(key)
    paths = SessionPaths.for_identity(data_root, identity)
    return DiskSession(identity.agent_name, identity.session_id, paths, given_key=key)


def key_for(agent_name: str, session_id: str) -> str | None:
    """A key that ``resolve_identity`` maps to exactly ``(agent_name, session_id)``, or
    ``None`` when there is none. The seed moves ``swebench-w<N>`` sessions into the agent
    directory ``<agent>-w<N>``; that suffix is taken off again to find the key."""
    candidates = [f"agent:{agent_name}:{session_id}"]
    suffix, worker = _WORKER_SUFFIX.search(agent_name), _WORKER_IN_ID.search(session_id)
    if suffix is not None and worker is not None and suffix.group(1) == worker.group(1):
        candidates.insert(0, f"agent:{agent_name[: suffix.start()]}:{session_id}")
    for key in candidates:
        identity = resolve_identity(key)
        if not identity.fallback and (identity.agent_name, identity.session_id) == (
            agent_name,
            session_id,
        ):
            return key
    return None


@dataclass(slots=True)
class Unreadable:
    """What a scan could not read (an agent directory it cannot list, a journal it cannot
    open): each is logged as an error when met and skipped, so one bad directory never
    aborts ``warm``, ``stats`` or ``verify``; a command that scanned exits 1 when any was."""

    found: list[tuple[str, str]] = field(default_factory=list)
    """``(path, reason)`` of each, in the order met."""
    quiet: bool = False

    def add(self, path: Path | str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if not self.quiet:
            log.error("cannot read %s (%s); skipped", path, reason, extra={"path": str(path)})
        self.found.append((str(path), reason))

    @property
    def problems(self) -> list[str]:
        """One ``<path>: <reason>`` line each."""
        return [f"{path}: {reason}" for path, reason in self.found]

    def __bool__(self) -> bool:
        return bool(self.found)


def _session_ids(agent_dir: Path) -> list[str]:
    ids: set[str] = set()
    with opened_dir(agent_dir, AGENT_DIR_DEPTH) as fd, os.scandir(fd) as entries:
        for entry in entries:
            session_id = layout.session_id_in(entry.name)
            if session_id is None:
                continue  # not a journal or claims record (hidden lock and temp files too)
            if not entry.is_file(follow_symlinks=False):
                log.warning("skipping %s: not a regular file", agent_dir / entry.name)
                continue
            ids.add(session_id)
    return sorted(ids)


def agent_names(data_root: Path) -> list[str]:
    """Every agent directory under the data root, sorted. Hidden ones count: the seed gives
    ``agent:.hidden:s`` the directory ``.hidden`` and so do we. Links are skipped with a
    warning: nothing below the data root is followed (see :mod:`offload_registry.disk.fsutil`)."""
    names: list[str] = []
    with os.scandir(data_root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
            elif entry.is_symlink():
                log.warning("skipping %s: a link below the data root", data_root / entry.name)
    return sorted(names)


def iter_sessions(
    data_root: Path, agents: Sequence[str] | None = None, unreadable: Unreadable | None = None
) -> Iterator[DiskSession]:
    """Every session under ``data_root`` (or only the ``agents`` directories), agent by
    agent in name order; one directory listing in memory at a time. Names that no key can
    produce (unsafe components), links and non-regular files are skipped with a warning; a
    named agent directory that is a link raises ``UnsafePathError``. An agent directory that
    cannot be listed goes to ``unreadable`` and is skipped (without ``unreadable``:
    ``OSError``)."""
    for agent in agents if agents else agent_names(data_root):
        agent_dir = layout.agent_dir(data_root, agent)
        if not is_safe_agent_name(agent):
            log.warning("skipping %s: not a name the registry can use", agent_dir)
            continue
        try:
            session_ids = _session_ids(agent_dir)
        except OSError as exc:
            if unreadable is None:
                raise
            unreadable.add(agent_dir, exc)
            continue
        for session_id in session_ids:
            if not is_safe_session_id(session_id):
                name = f"{layout.JOURNAL_PREFIX}{session_id}"
                log.warning("skipping %s/%s: unsafe session id", agent_dir, name)
                continue
            yield DiskSession.named(data_root, agent, session_id)


def count_sessions(data_root: Path, agents: Sequence[str] | None = None) -> int:
    """How many sessions :func:`iter_sessions` would yield (listings only; directories it
    cannot list count as empty, the scan itself reports them)."""
    return sum(1 for _ in iter_sessions(data_root, agents, Unreadable(quiet=True)))


def batched(items: Iterable[DiskSession], size: int) -> Iterator[list[DiskSession]]:
    batch: list[DiskSession] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
