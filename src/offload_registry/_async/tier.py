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

    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        """The session's state, or ``None`` on a miss, a bad value or an outage."""
        ...

    async def store(self, identity: SessionIdentity, snapshot: TierSnapshot) -> None:
        """Publish the state after a rebuild or a write (best effort: never raises)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class NoSharedTier:
    """No shared tier: every cold resolve rebuilds from the journal (one process at a time)."""

    name = "none"

    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        return None

    async def store(self, identity: SessionIdentity, snapshot: TierSnapshot) -> None:
        return None

    async def close(self) -> None:
        return None
