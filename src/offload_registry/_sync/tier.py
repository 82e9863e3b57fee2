# GENERATED from src/offload_registry/_async/tier.py by scripts/unasync.py. Do not edit.
"""The protocol a shared tier (Redis) implements to sit between the near cache and the
journals, and the tier used when there is none.

Data flows one way: key -> near cache -> shared tier -> journal. Writes go journal first, then
``store`` on the shared tier, then the near cache. A tier must never raise to the caller for a
miss, a corrupt value or an outage: it answers ``None`` and the journal rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from offload_registry.journal import Watermark
from offload_registry.keys import SessionIdentity
from offload_registry.session_state import SessionState


@dataclass(slots=True)
class TierSnapshot:
    """A session's state as a shared tier holds it, with the journal position it reflects."""

    state: SessionState
    claimed: set[str]
    watermark: Watermark | None


class SharedTier(Protocol):
    """What the registry needs from a shared tier."""

    name: str

    def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        """The session's state, or ``None`` on a miss, a bad value or an outage."""
        ...

    def store(self, identity: SessionIdentity, snapshot: TierSnapshot) -> None:
        """Publish the state after a rebuild or a write (best effort: never raises)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class NoSharedTier:
    """No shared tier: every cold resolve rebuilds from the journal (one process at a time)."""

    name = "none"

    def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        return None

    def store(self, identity: SessionIdentity, snapshot: TierSnapshot) -> None:
        return None

    def close(self) -> None:
        return None
