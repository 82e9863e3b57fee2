"""Counters a registry keeps about itself (plain ints: no locking, no I/O on the hot path).

Read them directly (``registry.stats``) or expose them to Prometheus with
``offload_registry.metrics``. Near-cache hits are not counted here on purpose: a hit must stay
one dict lookup; count them in the caller when needed (``simulate`` does).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class RegistryStats:
    """What one registry did since it was created."""

    cold_resolves: Counter[str] = field(default_factory=Counter)
    """Loads into the near cache, by where the state came from: ``redis`` or ``journal``."""
    rebuilds: int = 0
    """Sessions rebuilt from their journal (a subset of the cold resolves)."""
    rebuild_seconds: float = 0.0
    """Time spent in those rebuilds."""
    claims_won: int = 0
    claims_lost: int = 0
    """Ids asked for in ``claim`` and not won (already processed, or won by another caller)."""
    leases_granted: int = 0
    leases_unavailable: int = 0
    """Lease requests that gave up because another worker held the lease."""
    revalidations: int = 0
    """Cached copies caught up with the journal after an invalidation."""
