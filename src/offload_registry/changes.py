"""What travels between a session's manager and a shared tier: snapshots and changes (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from offload_registry.disk.journal import Watermark
from offload_registry.session_state import SessionState

APPEND = "a"
CLAIMS = "c"
JOURNAL = "journal"
"""The ``source`` of a session rebuilt from its journal (else the shared tier's ``name``)."""


@dataclass(slots=True)
class TierSnapshot:
    """A session's state with the journal and claims-record positions it reflects."""

    state: SessionState
    claimed: set[str]
    watermark: Watermark | None
    claims_watermark: Watermark | None = None


@dataclass(slots=True)
class SessionChange:
    """One write, as a shared tier applies it: lines appended to the journal (``APPEND``) or
    ids added to the claims record (``CLAIMS``), from position ``base`` to ``watermark``."""

    kind: str
    ids: list[str]
    base: Watermark | None
    watermark: Watermark | None
    statuses: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class LoadedSession:
    """A session as the loader found it: the state, where it came from (``JOURNAL`` or the
    shared tier's ``name``) and, for a rebuild, the journal lines it had to skip."""

    snapshot: TierSnapshot
    source: str
    corrupt_lines: int = 0
    invalid_lines: int = 0

    @property
    def from_tier(self) -> bool:
        return self.source != JOURNAL


@dataclass(slots=True)
class RebuildTurn:
    """What a shared tier's rebuild lock hands the loader: the copy another process
    published while this one waited for the lock (``found``: nothing is rebuilt), else
    ``publish``, which stores the rebuilt copy (a coroutine function in the asyncio API;
    it does nothing when Redis did not answer: then there was no lock to publish under)."""

    found: TierSnapshot | None
    publish: Callable[[TierSnapshot], Any]
