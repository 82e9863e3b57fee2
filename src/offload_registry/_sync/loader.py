# GENERATED from src/offload_registry/_async/loader.py by scripts/unasync.py. Do not edit.
"""The cold load of one session: near cache, then the shared tier, then the journal.

The near cache comes first, in ``SessionRegistry.resolve`` itself (a hit is the hot path: one
dict lookup, inlined, no call it can avoid); a miss comes here, once per key and process
(the registry's single flight), and reads top to bottom:

1. the shared tier's copy (one round trip; the tier refuses a copy of another epoch or with
   a gap in its deltas), with where the journal and the claims record end read just before,
   inline (or, when ``state.json`` must be written too, in a worker thread meanwhile);
2. no copy: the tier's rebuild lock, so that across processes one caller rebuilds from the
   journal and publishes, and the others take its copy;
3. a copy from the tier that stands behind the files: catch up the journal's and the claims
   record's tails, and publish the result when they held anything new.

A lagging tier is thus slower, never served stale. Nothing here raises for the tier's
sake (it answers ``None`` instead); errors come from the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from offload_registry._sync._primitives import Pending, Ready, run_blocking
from offload_registry._sync.tier import SharedTier
from offload_registry.changes import JOURNAL, LoadedSession, TierSnapshot
from offload_registry.codec import watermark_id
from offload_registry.disk.journal import Watermark
from offload_registry.disk.session_files import SessionFiles
from offload_registry.keys import SessionIdentity
from offload_registry.stats import RegistryStats

V = TypeVar("V")


def load_session(
    identity: SessionIdentity,
    files: SessionFiles,
    tier: SharedTier,
    *,
    writer: str,
    stats: RegistryStats,
    then: Callable[[], object] | None = None,
) -> LoadedSession:
    """The session's state by the policy above (``writer``: the copy's name in invalidation
    messages; ``then``, blocking, runs in the thread that reads the files' positions).

    Concurrency: across processes one caller at a time rebuilds a session the tier lacks
    (the tier's rebuild lock); every publish is best effort, the files staying the truth."""
    # The position check is never skipped, only made cheap: with nothing to write it runs
    # inline (an fstat and a few small reads, ~25 us, less than a thread hop); ``then`` (a
    # blocking write such as state.json) makes it a worker thread's job, run while the tier
    # answers.
    probe: Pending[Any] | Ready[Any] = (
        Ready(files.positions) if then is None else Pending(_then(files.positions, then))
    )
    try:
        loaded = _from_tier_or_journal(identity, files, tier, stats)
    except BaseException:
        probe.settle()
        raise
    journal_at, claims_at = probe.result()
    if not loaded.from_tier or _stands_at(loaded.snapshot, journal_at, claims_at):
        return loaded  # rebuilt from the files, or the files end where the tier's copy does
    loaded.snapshot, changed = _caught_up(files, loaded.snapshot)
    if changed:
        tier.publish(identity, loaded.snapshot, writer)
    return loaded


def _from_tier_or_journal(
    identity: SessionIdentity, files: SessionFiles, tier: SharedTier, stats: RegistryStats
) -> LoadedSession:
    snapshot, status = tier.load_with_status(identity)
    if snapshot is not None:
        return LoadedSession(snapshot, tier.name)
    with tier.rebuild_lock(identity, status) as turn:
        if turn.found is not None:
            return LoadedSession(turn.found, tier.name)
        rebuilt = _rebuild(files, stats)
        turn.publish(rebuilt.snapshot)
        return rebuilt


def _rebuild(files: SessionFiles, stats: RegistryStats) -> LoadedSession:
    started = time.perf_counter()
    rebuilt = run_blocking(files.rebuild)
    stats.rebuilds += 1
    stats.rebuild_seconds += time.perf_counter() - started
    return LoadedSession(rebuilt.snapshot(), JOURNAL, rebuilt.corrupt, rebuilt.invalid)


def _stands_at(
    snapshot: TierSnapshot, journal_at: Watermark | None, claims_at: Watermark | None
) -> bool:
    """Whether the files end exactly where the snapshot says (then nothing is read)."""
    return watermark_id(journal_at) == watermark_id(snapshot.watermark) and watermark_id(
        claims_at
    ) == watermark_id(snapshot.claims_watermark)


def _caught_up(files: SessionFiles, snapshot: TierSnapshot) -> tuple[TierSnapshot, bool]:
    """The snapshot with the files' new tails applied, and whether they held anything."""
    catch_up, claimed, claims_watermark = run_blocking(
        files.catch_up_all, snapshot.watermark, snapshot.claims_watermark
    )
    state = catch_up.apply_to(snapshot.state)
    snapshot.claimed |= claimed
    return (
        TierSnapshot(state, snapshot.claimed, catch_up.watermark, claims_watermark),
        catch_up.changed or bool(claimed),
    )


def _then(work: Callable[[], V], then: Callable[[], object] | None) -> Callable[[], V]:
    """``work``, followed by ``then`` when ``work`` returned (one call, for one thread hop)."""
    if then is None:
        return work

    def both() -> V:
        result = work()
        then()
        return result

    return both
