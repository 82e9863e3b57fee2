"""The protocol a shared tier (Redis) implements to sit between the near cache and the
journals, and the tier used when there is none.

Data flows one way: key -> near cache -> shared tier -> journal. Writes go journal first,
then the cached copy's sets, then the shared tier (a claim asks the tier's claim filter
before the journal, which can only make it lose sooner). A tier never raises to the caller
for a miss, a corrupt value or an outage (only ``start`` raises, for misconfiguration):
``load`` answers ``None`` and the journal rebuilds; a failed publish is logged, and the tier
repairs the session later (readers always catch up from the journal past the position a
snapshot reflects, so a tier that lags is slower, never wrong).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from offload_registry.changes import RebuildTurn, SessionChange, TierSnapshot
from offload_registry.keys import SessionIdentity

LoadStatus = Literal["hit", "miss", "bad", "outage"]


async def publish_nothing(snapshot: TierSnapshot) -> None:
    """A rebuild turn's ``publish`` when there is nothing to publish to (or no lock held)."""
    return None


class SharedTier(Protocol):
    """What the registry needs from a shared tier."""

    name: str

    async def start(self) -> None:
        """Connect and check the server (idempotent); raises only for misconfiguration."""
        ...

    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        """The session's state, or ``None`` on a miss, a bad value or an outage."""
        ...

    async def load_with_status(
        self, identity: SessionIdentity
    ) -> tuple[TierSnapshot | None, LoadStatus]:
        """``load``, and how the read went: ``hit``, ``miss``, ``bad`` (a value that cannot
        be used) or ``outage`` (the tier did not answer)."""
        ...

    def rebuild_lock(
        self, identity: SessionIdentity, status: LoadStatus
    ) -> AbstractAsyncContextManager[RebuildTurn]:
        """Hold the session's rebuild lock (after a read that found nothing, ``status``) for
        the block: across processes one caller rebuilds and publishes, the others get its
        copy as ``found`` (or, after a bounded wait, rebuild too)."""
        ...

    async def publish(
        self,
        identity: SessionIdentity,
        snapshot: TierSnapshot,
        writer: str = "-",
        fence: int | None = None,
    ) -> None:
        """Replace the session's state with a snapshot read from its journal (``writer``:
        the watcher that made the write, which is not told of it; ``fence``: the lease token
        the write was made under, refused when a newer one was granted). A snapshot behind
        the one the tier holds (a later writer's landed first) is refused, and the write
        still announced."""
        ...

    async def publish_change(
        self,
        identity: SessionIdentity,
        change: SessionChange,
        snapshot: TierSnapshot,
        writer: str = "-",
        fence: int | None = None,
    ) -> None:
        """Apply one write; ``snapshot`` (the state after it) replaces the session's state
        when the tier cannot continue from ``change.base``."""
        ...

    async def lease_call(
        self, identity: SessionIdentity, op: str, holder: str, token: int, ttl_ms: int
    ) -> Any:
        """One lease operation (``lua/lease.lua``), or ``None`` when the tier cannot answer."""
        ...

    async def claim_filter(
        self, identity: SessionIdentity, op: str, groups: list[list[str]]
    ) -> list[int] | None:
        """One claim-filter operation (``lua/claim.lua``), or ``None`` when the tier cannot
        answer (the journal's claims record always decides in the end)."""
        ...

    def watch(self, identity: SessionIdentity, name: str, mark_stale: Callable[[], None]) -> None:
        """Call ``mark_stale`` when another process writes the session, or when writes may
        have been missed (the invalidation stream broke)."""
        ...

    def unwatch(self, identity: SessionIdentity, name: str) -> None:
        """Stop watching (the session left the near cache)."""
        ...

    def hears(self, identity: SessionIdentity) -> bool:
        """True while the invalidations of this session would reach this process (the
        stream is subscribed); a copy is trusted between resolves only then."""
        ...

    def after_fork_in_child(self) -> None:
        """Forget the parent's watchers and listener (called in a forked child)."""
        ...

    def set_failure_handler(self, drop_near_cache: Callable[[], None]) -> None:
        """Call ``drop_near_cache`` if the invalidation handler itself fails."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class NoSharedTier:
    """No shared tier: every cold resolve rebuilds from the journal (one process at a time)."""

    name = "none"

    async def start(self) -> None:
        return None

    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        return None

    async def load_with_status(
        self, identity: SessionIdentity
    ) -> tuple[TierSnapshot | None, LoadStatus]:
        return None, "miss"

    @contextlib.asynccontextmanager
    async def rebuild_lock(
        self, identity: SessionIdentity, status: LoadStatus
    ) -> AsyncIterator[RebuildTurn]:
        yield RebuildTurn(None, publish_nothing)

    async def publish(
        self,
        identity: SessionIdentity,
        snapshot: TierSnapshot,
        writer: str = "-",
        fence: int | None = None,
    ) -> None:
        return None

    async def publish_change(
        self,
        identity: SessionIdentity,
        change: SessionChange,
        snapshot: TierSnapshot,
        writer: str = "-",
        fence: int | None = None,
    ) -> None:
        return None

    async def lease_call(
        self, identity: SessionIdentity, op: str, holder: str, token: int, ttl_ms: int
    ) -> Any:
        return None

    async def claim_filter(
        self, identity: SessionIdentity, op: str, groups: list[list[str]]
    ) -> list[int] | None:
        return None

    def watch(self, identity: SessionIdentity, name: str, mark_stale: Callable[[], None]) -> None:
        return None

    def unwatch(self, identity: SessionIdentity, name: str) -> None:
        return None

    def hears(self, identity: SessionIdentity) -> bool:
        return True  # no other process shares the journals

    def after_fork_in_child(self) -> None:
        return None

    def set_failure_handler(self, drop_near_cache: Callable[[], None]) -> None:
        return None

    async def close(self) -> None:
        return None
