"""How long a cached copy of a session may be answered from without reading the journal.

A copy is trusted until ``trusted_until`` (seconds, by the registry's clock): a near-cache hit
compares it with one float reading of the time, nothing else. Two things end the trust: the
``TRUST_SECONDS`` expiry, the backstop that bounds staleness when no invalidation will ever
come (a writer without Redis, such as the seed, or one killed before it could announce a
write), and an invalidation (:meth:`CopyFreshness.mark_stale`), which sets it to ``STALE``,
in the past of every clock.

Not awaiting code, so the asyncio manager and its blocking twin share this one class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

TRUST_SECONDS = 1.0
"""A cached copy is answered from without reading the journal for at most this long."""
TRUST_NS = int(TRUST_SECONDS * 1e9)
STALE = float("-inf")
"""``trusted_until`` of a copy marked stale: every clock reading is past it (even an injected
clock's negative one)."""


class CopyFreshness:
    """The trust bookkeeping of one cached copy (a base of the session managers).

    Concurrency: marks come from the invalidation listener's thread, so marks and trust
    updates take a small lock, and a trust update never overwrites a mark made after the
    copy's read began (it is told how many marks it had seen)."""

    clock_ns: Callable[[], int]
    trusted_until: float

    def _init_freshness(self, clock_ns: Callable[[], int]) -> None:
        self.clock_ns = clock_ns
        self.trusted_until = 0.0
        self._invalidations = 0  # counts mark_stale() calls, so revalidate() never loses one
        self._trust_lock = threading.Lock()

    @property
    def stale(self) -> bool:
        """Marked stale and not revalidated since (expiry by TRUST_SECONDS aside)."""
        return self.trusted_until == STALE

    def mark_stale(self) -> None:
        """Another process wrote this session (or writes may have been missed): the next
        resolve revalidates this copy before answering from it."""
        with self._trust_lock:
            self._invalidations += 1
            self.trusted_until = STALE

    def _trust_deadline(self) -> float:
        """``TRUST_SECONDS`` from now, in the seconds a hit compares with."""
        return (self.clock_ns() + TRUST_NS) / 1e9

    def _trust(self, deadline: float, seen: int) -> None:
        """Trust this copy until ``deadline``, unless it was marked stale after the
        ``seen``-th invalidation (under the lock, so a mark landing between the check and
        the store is never overwritten)."""
        with self._trust_lock:
            if self._invalidations == seen:
                self.trusted_until = deadline
