"""What travels between a session's manager and a shared tier: snapshots and changes (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from offload_registry.disk.journal import Watermark
from offload_registry.session_state import SessionState

APPEND = "a"
CLAIMS = "c"


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
