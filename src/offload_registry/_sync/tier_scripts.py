# GENERATED from src/offload_registry/_async/tier_scripts.py by scripts/unasync.py. Do not edit.
"""The lease and claim-filter calls of a Redis tier: Redis's quick answers in front of the
journal's lease and claims records, which alone decide.

Each is one atomic script on the session's slot (``lua/lease.lua``, ``lua/claim.lua``). When
Redis cannot answer (an open breaker, a failure) the answer is ``None`` and the caller goes to
the journal's record, as it always may. Owned by
:class:`~offload_registry._sync.redis_tier.RedisTier`, whose ``lease_call`` and
``claim_filter`` call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offload_registry.keys import SessionIdentity
from offload_registry.store import script_args
from offload_registry.store.diagnose import FAILURES

if TYPE_CHECKING:
    from offload_registry._sync.redis_tier import RedisTier


def lease_call(
    tier: RedisTier, identity: SessionIdentity, op: str, holder: str, token: int, *, ttl_ms: int
) -> Any:
    """Run one ``lua/lease.lua`` operation; ``None`` when Redis cannot answer (the
    journal's lease record then arbitrates). Not retried: a grant is not idempotent.

    Durability and concurrency: one atomic script on the session's slot, in Redis only (a
    grant becomes usable only once the journal's lease record commits it).
    """
    if not tier.breaker.allow():
        return None
    keys = tier.keyspace.session_for(identity)
    call = script_args.lease_call(keys, op, holder, token, ttl_ms, fence_ttl_ms=tier._ttl_ms)
    try:
        reply = tier._lease(*call)
    except FAILURES as exc:
        tier._failed(exc, "lease", None)
        return None
    tier._succeeded()
    return reply


def claim_filter(
    tier: RedisTier, identity: SessionIdentity, op: str, groups: list[list[str]]
) -> list[int] | None:
    """Run one ``lua/claim.lua`` operation over id groups (each id with its forms).

    ``filter`` answers the indexes of the groups none of whose forms is known to be
    committed (only those need the journal's lock); ``commit`` records forms the journal
    now holds. ``None`` when Redis cannot answer: the journal's claims record decides
    alone, as it always does in the end.

    Durability and concurrency: one atomic script on the session's slot, in Redis only,
    holding only facts the journal already made durable; a lost commit costs the next
    claimer a trip to the journal's lock, never a double win.
    """
    if not tier.breaker.allow():
        return None
    keys = tier.keyspace.session_for(identity)
    try:
        reply = tier._claim(*script_args.claim_call(keys, op, tier._ttl_ms, groups))
    except FAILURES as exc:
        tier._failed(exc, "claim", None)
        return None
    tier._succeeded()
    return [int(i) - 1 for i in reply] if op == "filter" else []
