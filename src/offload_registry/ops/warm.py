"""Warm: load every journal under a data root into Redis, so that every session's next cold
resolve is answered by Redis (``manager.source == "redis"``) with exactly its journal's state.

Mechanism, per batch of sessions (bounded memory however large the root):

1. one pipelined round trip reads each session's anchor (``ops.batch.read_anchors``);
2. in a worker thread, a session whose anchor is usable and already at the journal's and the
   claims record's current positions (an ``fstat`` and a 64-byte read each, no parsing) is
   *skipped*; every other one is rebuilt from its files under the journal's shared lock;
3. one pipelined round trip publishes the rebuilt snapshots, each with compare-and-set on
   the anchor read in step 1 (its version, or ``if-absent`` when there was none), while the
   next batch is being read.

:func:`warm_batches` is the same loop over batches from any source: ``ops.warm_processes``
feeds several processes' loops from one listing, each batch to exactly one of them.

Idempotent: a second run skips every session (nothing changed). Resumable: a run killed
midway leaves whole sessions published (each publish is one atomic script), and the next
run skips them. Safe beside live workers: every write of a worker goes journal first, then
Redis, so a worker's Redis write that lands between steps 1 and 3 bumps the version and the
compare-and-set refuses warm's snapshot (counted *raced*: the worker's copy is at least as
new); a worker's write after step 3 chains onto warm's snapshot or replaces it. Warm does
not announce its publishes on the invalidation channel: a snapshot read from the journal
holds nothing a worker's copy could miss (workers' own writes are announced).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from offload_registry._async.redis_tier import RedisTier
from offload_registry.changes import TierSnapshot
from offload_registry.codec import watermark_id
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import current_watermark
from offload_registry.disk.session_files import SessionFiles
from offload_registry.errors import JournalError
from offload_registry.ops.batch import publish_many, read_anchors
from offload_registry.ops.discover import DiskSession, Unreadable, batched, iter_sessions
from offload_registry.store.keyspace import RedisSessionKeys
from offload_registry.store.records import Anchor

log = logging.getLogger(__name__)

DEFAULT_BATCH = 256


@dataclass(slots=True)
class WarmReport:
    """What a warm run did. ``entries``, ``corrupt`` and ``invalid`` count the lines of the
    sessions it read (published or raced); skipped sessions are not read."""

    sessions: int = 0
    """Sessions found on disk (= published + skipped + raced + failed)."""
    published: int = 0
    skipped: int = 0
    """Redis already held the session at its journal's current position."""
    raced: int = 0
    """A live worker wrote the session meanwhile; its newer copy was left alone."""
    failed: int = 0
    """Sessions that could not be read or encoded (logged); the exit status is then 1."""
    entries: int = 0
    corrupt: int = 0
    invalid: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["entries_per_second"] = round(self.entries / self.seconds) if self.seconds else 0
        return out


class ProgressSink(Protocol):
    """What warm reports its progress to (:class:`~offload_registry.ops.progress.Progress`,
    or a child process's forwarder)."""

    def update(self, done: int, entries: int) -> None: ...


@dataclass(slots=True)
class _Prepared:
    session: DiskSession
    mode: str
    snapshot: TierSnapshot | None  # None: skipped or failed
    failed: bool = False
    entries: int = 0
    corrupt: int = 0
    invalid: int = 0


def at_position(session: DiskSession, anchor: Anchor, epoch: str) -> bool:
    """True when Redis already holds the session at its files' current positions."""
    paths = session.paths
    return (
        anchor.usable(epoch)
        and anchor.journal_position == watermark_id(current_watermark(paths.journal))
        and anchor.claims_position == watermark_id(current_watermark(paths.claims))
    )


def _prepare(
    batch: Sequence[DiskSession], anchors: Sequence[Anchor], epoch: str
) -> list[_Prepared]:
    """Step 2, blocking (run in a worker thread): skip or rebuild each session."""
    out: list[_Prepared] = []
    for session, anchor in zip(batch, anchors, strict=True):
        mode = anchor.cas_mode(epoch)
        try:
            if at_position(session, anchor, epoch):
                out.append(_Prepared(session, mode, None))
                continue
            rebuilt = SessionFiles(session.paths, FsyncPolicy.NEVER, read_only=True).rebuild()
        except JournalError as exc:
            log.error("cannot read session %s: %s", session, exc, extra={"session": str(session)})
            out.append(_Prepared(session, mode, None, failed=True))
            continue
        if rebuilt.watermark is None and rebuilt.claims_watermark is None:
            out.append(_Prepared(session, mode, None))  # removed since it was listed
            continue
        out.append(
            _Prepared(
                session,
                mode,
                rebuilt.snapshot(),
                entries=rebuilt.state.entry_count,
                corrupt=rebuilt.corrupt,
                invalid=rebuilt.invalid,
            )
        )
    return out


async def _publish(
    tier: RedisTier, keys: Sequence[RedisSessionKeys], prepared: list[_Prepared], report: WarmReport
) -> None:
    """Step 3: one round trip for the batch's rebuilt sessions (``keys``: theirs, as step 1
    named them); tallies the outcome."""
    todo = [p for p in prepared if p.snapshot is not None]
    items = [
        (k, p.snapshot, p.mode)
        for k, p in zip(keys, prepared, strict=True)
        if p.snapshot is not None
    ]
    results = await publish_many(tier, items, announce=False) if items else []
    for p in prepared:
        report.sessions += 1
        report.entries += p.entries
        report.corrupt += p.corrupt
        report.invalid += p.invalid
        if p.failed:
            report.failed += 1
        elif p.snapshot is None:
            report.skipped += 1
    for p, result in zip(todo, results, strict=True):
        if result > 0:
            report.published += 1
        elif result == 0:
            report.raced += 1
            log.debug("session %s was written by a worker during warm; left alone", p.session)
        else:
            report.failed += 1


async def warm(
    tier: RedisTier,
    data_root: Path,
    *,
    agents: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressSink | None = None,
    unreadable: Unreadable | None = None,
) -> WarmReport:
    """Load every session under ``data_root`` (or only ``agents``) into ``tier``. An agent
    directory that cannot be listed goes to ``unreadable`` and is skipped; a session that
    cannot be read counts as ``failed``.

    Durability and concurrency: writes Redis only (journals are read under their shared
    lock, never written); each session's snapshot is published with compare-and-set on the
    anchor read before its journal was, so a live worker's newer write is never overwritten.
    """
    batches = batched(iter_sessions(data_root, agents, unreadable), batch_size)
    return await warm_batches(tier, _listed(batches), progress=progress)


def _listed(batches: Iterator[list[DiskSession]]) -> Callable[[], Awaitable[list[DiskSession]]]:
    """A batch source over a listing (read in the event loop, as it always was: a listing
    is one directory read per agent)."""

    async def next_batch() -> list[DiskSession]:
        return next(batches, [])

    return next_batch


async def warm_batches(
    tier: RedisTier,
    next_batch: Callable[[], Awaitable[list[DiskSession]]],
    *,
    progress: ProgressSink | None = None,
) -> WarmReport:
    """:func:`warm`'s loop over the batches ``next_batch`` returns until one is empty.

    Durability and concurrency: as :func:`warm`, per session.
    """
    report = WarmReport()
    started = time.perf_counter()
    in_flight: asyncio.Task[None] | None = None
    try:
        while batch := await next_batch():
            keys = [tier.keyspace.session_for(s.identity) for s in batch]
            anchors = await read_anchors(tier, keys)  # before the journals: see step 3
            prepared = await asyncio.to_thread(_prepare, batch, anchors, tier.epoch)
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.create_task(_publish(tier, keys, prepared, report))
            if progress is not None:
                progress.update(report.sessions, report.entries)
        if in_flight is not None:
            await in_flight
            in_flight = None
    finally:
        if in_flight is not None:  # an error elsewhere: do not leave the task dangling
            in_flight.cancel()
    report.seconds = time.perf_counter() - started
    return report
