"""The sessions of a data root, as found on disk: ``<root>/<agent>/offload-<id>.jsonl`` and
the claims records ``offload-<id>.claims`` beside them (pure listing, no parsing).

A session is named by its on-disk names, exactly as the registry names the journal it
resolves a key to (``keys.resolve_identity`` then ``SessionPaths.for_identity``), so its
Redis keys (``Keyspace.session``) are the ones every worker reads. The key
``agent:<agent>:<id>`` does not always resolve back to those names (worker suffixes, real
session ids), so tools never round-trip through a key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offload_registry.keys import SessionIdentity, is_safe_agent_name, is_safe_session_id
from offload_registry.session_files import SessionPaths

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".jsonl"
CLAIMS_SUFFIX = ".claims"
PREFIX = "offload-"


@dataclass(frozen=True, slots=True)
class DiskSession:
    """One session on disk (its journal, its claims record, or both exist)."""

    agent_name: str
    session_id: str
    paths: SessionPaths

    @property
    def identity(self) -> SessionIdentity:
        key = f"agent:{self.agent_name}:{self.session_id}"
        return SessionIdentity(key, self.agent_name, self.session_id, fallback=False)

    def __str__(self) -> str:
        return f"{self.agent_name}/{self.session_id}"


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
    with os.scandir(agent_dir) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(PREFIX) or not entry.is_file():
                continue  # hidden lock and temp files start with "."
            for suffix in (JOURNAL_SUFFIX, CLAIMS_SUFFIX):
                if name.endswith(suffix):
                    ids.add(name[len(PREFIX) : -len(suffix)])
    return sorted(ids)


def agent_names(data_root: Path) -> list[str]:
    """Every agent directory under the data root, sorted. Hidden ones count: the seed gives
    ``agent:.hidden:s`` the directory ``.hidden`` and so do we."""
    with os.scandir(data_root) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def iter_sessions(
    data_root: Path, agents: Sequence[str] | None = None, unreadable: Unreadable | None = None
) -> Iterator[DiskSession]:
    """Every session under ``data_root`` (or only the ``agents`` directories), agent by
    agent in name order; one directory listing in memory at a time. Names that no key can
    produce (unsafe components) are skipped with a warning. An agent directory that cannot
    be listed goes to ``unreadable`` and is skipped (without ``unreadable``: ``OSError``)."""
    for agent in agents if agents else agent_names(data_root):
        agent_dir = data_root / agent
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
                log.warning("skipping %s/offload-%s: unsafe session id", agent_dir, session_id)
                continue
            identity = SessionIdentity("", agent, session_id, fallback=False)
            yield DiskSession(agent, session_id, SessionPaths.for_identity(data_root, identity))


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
