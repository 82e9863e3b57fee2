"""Verify: compare each session's Redis copy with its journal and claims record, report
every difference by kind, and optionally repair Redis from the journals (never the reverse).

Kinds of drift (``KINDS``), each for one session:

``missing``        a session with files has no copy in Redis
``stale_epoch``    its copy belongs to another epoch (readers ignore it)
``broken_deltas``  its deltas list does not match the length its anchor records
``undecodable``    its value cannot be read (garbage bytes, a foreign type, a bad schema)
``behind``         its copy reflects another journal or claims position than the files'
``sets_differ``    same position, but other id sets or entry count (a wrong snapshot)
``extra``          a non-empty copy of a session that has no journal or claims record
``unreadable``     its files (or its agent directory) cannot be read: skipped, not repaired

A difference found in the pipelined pass is read again (one transaction, then the files)
before it is reported, so a worker writing meanwhile is not reported as drift. ``repair``
publishes each drifting session's state read from its files with compare-and-set on the
anchor read just before (a worker's newer write is never overwritten; a refused session is
read and compared again, up to three times) and deletes extra copies, announcing each on
the invalidation channel. Journals are never written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from offload_registry._async.redis_tier import RedisTier
from offload_registry.changes import TierSnapshot
from offload_registry.codec import watermark_id
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.session_files import Rebuilt, SessionFiles
from offload_registry.errors import JournalError
from offload_registry.ops.batch import fetch_many, publish_many, read_anchors, scan_state_keys
from offload_registry.ops.discover import (
    DiskSession,
    Unreadable,
    batched,
    iter_sessions,
    session_for_key,
)
from offload_registry.store.keyspace import RedisSessionKeys
from offload_registry.store.records import read_reply

log = logging.getLogger(__name__)

KINDS = (
    "missing",
    "stale_epoch",
    "broken_deltas",
    "undecodable",
    "behind",
    "sets_differ",
    "extra",
    "unreadable",
)
MAX_LISTED = 100
REPAIR_ATTEMPTS = 3


@dataclass(slots=True)
class Difference:
    kind: str
    session: str
    """A key that resolves to the session's files (``discover.key_for``), its path under
    the data root when no key does, or the Redis hash tag of an extra copy (Redis keys
    hash the names, so no key can be recovered from them)."""
    detail: str = ""


@dataclass(slots=True)
class VerifyReport:
    sessions: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    differences: list[Difference] = field(default_factory=list)
    repaired: int = 0
    unrepaired: int = 0
    seconds: float = 0.0
    not_found: list[str] = field(default_factory=list)
    """Keys asked for that name a session with no files and no copy in Redis (not counted
    in ``sessions``: nothing was checked)."""

    @property
    def drift(self) -> int:
        return sum(self.by_kind.values())

    def add(self, difference: Difference) -> None:
        self.by_kind[difference.kind] += 1
        if len(self.differences) < MAX_LISTED:
            self.differences.append(difference)

    def as_json(self) -> dict[str, Any]:
        """The ``verify --json`` object (documented in the README)."""
        return {
            "sessions": self.sessions,
            "drift": self.drift,
            "by_kind": {kind: self.by_kind[kind] for kind in KINDS},
            "repaired": self.repaired,
            "unrepaired": self.unrepaired,
            "seconds": round(self.seconds, 3),
            "differences": [
                {"kind": d.kind, "session": d.session, "detail": d.detail} for d in self.differences
            ],
            "differences_truncated": self.drift > len(self.differences),
            "not_found": self.not_found,
        }


def sessions_for_keys(data_root: Path, keys: Iterable[str]) -> list[DiskSession]:
    """The sessions named by keys, resolved as a worker resolves them (files may not exist);
    :class:`InvalidSessionKeyError` for a string that is not a session key."""
    return [session_for_key(data_root, key) for key in keys]


def describe_position(position: str) -> str:
    """A journal position (``codec.watermark_id``) as a person reads it."""
    if not position:
        return "none"
    parts = position.split(":")
    if len(parts) != 7:
        return position
    device, inode, generation, offset, partial, _crc, _mtime = parts
    torn = f" (+{partial} torn)" if partial not in ("0", "") else ""
    return f"byte {offset}{torn}, generation {generation}, file {device}:{inode}"


def describe_positions(journal: str, claims: str) -> str:
    return f"journal {describe_position(journal)}; claims {describe_position(claims)}"


def _rebuild(session: DiskSession) -> Rebuilt:
    return SessionFiles(session.paths, FsyncPolicy.NEVER, read_only=True).rebuild()


def _rebuild_all(sessions: Sequence[DiskSession]) -> list[Rebuilt]:
    return [_rebuild(s) for s in sessions]


def _rebuild_or_error(sessions: Sequence[DiskSession]) -> list[Rebuilt | JournalError]:
    """Each session rebuilt, or the error that kept its files from being read."""
    out: list[Rebuilt | JournalError] = []
    for session in sessions:
        try:
            out.append(_rebuild(session))
        except JournalError as exc:
            log.error("cannot read session %s: %s; skipped", session, exc)
            out.append(exc)
    return out


def _empty(snapshot: TierSnapshot) -> bool:
    return snapshot.state.entry_count == 0 and not snapshot.claimed


def compare(tier: RedisTier, reply: Any, rebuilt: Rebuilt) -> tuple[str, str] | None:
    """``(kind, detail)`` of how a Redis reply differs from the files, or ``None``."""
    status, snapshot = read_reply(reply, tier.epoch)
    if rebuilt.watermark is None and rebuilt.claims_watermark is None:  # no files
        if status == "missing" or (snapshot is not None and _empty(snapshot)):
            return None
        return "extra", f"Redis holds {status} data for a session with no files"
    if snapshot is None:
        return status, ""
    journal = (watermark_id(rebuilt.watermark), watermark_id(rebuilt.claims_watermark))
    held = (watermark_id(snapshot.watermark), watermark_id(snapshot.claims_watermark))
    if held != journal:
        return "behind", (
            f"Redis at {describe_positions(*held)}; files at {describe_positions(*journal)}"
        )
    state, want = snapshot.state, rebuilt.state
    differing = [
        name
        for name, ours, theirs in (
            ("confirmed", state.confirmed, want.confirmed),
            ("deleted", state.deleted, want.deleted),
            ("processed", set(state.processed), set(want.processed)),
            ("claimed", snapshot.claimed, rebuilt.claimed),
            ("entry_count", state.entry_count, want.entry_count),
        )
        if ours != theirs
    ]
    return ("sets_differ", ", ".join(differing)) if differing else None


async def _check(
    tier: RedisTier, sessions: Sequence[DiskSession], replies: Sequence[Any] | None = None
) -> list[tuple[str, str] | None]:
    """Compare sessions (Redis read first, then the files); each drift is read again, in a
    transaction this time, before it counts."""
    keys = [tier.keyspace.session_for(s.identity) for s in sessions]
    if replies is None:
        replies = await fetch_many(tier, keys)
    rebuilt = await asyncio.to_thread(_rebuild_or_error, sessions)
    found = [
        ("unreadable", str(b)) if isinstance(b, JournalError) else compare(tier, r, b)
        for r, b in zip(replies, rebuilt, strict=True)
    ]
    for i, difference in enumerate(found):
        if difference is not None and difference[0] != "unreadable":
            try:
                reply: Any = await tier.fetch(keys[i])
            except ResponseError as exc:  # WRONGTYPE: a foreign value, undecodable
                reply = exc
            found[i] = compare(tier, reply, await asyncio.to_thread(_rebuild, sessions[i]))
    return found


async def _repair(tier: RedisTier, sessions: list[DiskSession]) -> list[DiskSession]:
    """Rewrite drifting sessions from their files (compare-and-set); returns those still
    drifting after :data:`REPAIR_ATTEMPTS` rounds (a worker kept writing them)."""
    for _ in range(REPAIR_ATTEMPTS):
        if not sessions:
            break
        keys = [tier.keyspace.session_for(s.identity) for s in sessions]
        anchors = await read_anchors(tier, keys)  # before the files, as warm does
        rebuilt = await asyncio.to_thread(_rebuild_all, sessions)
        items: list[tuple[RedisSessionKeys, TierSnapshot, str]] = []
        drop: list[RedisSessionKeys] = []
        for k, anchor, b in zip(keys, anchors, rebuilt, strict=True):
            if b.watermark is None and b.claims_watermark is None:
                drop.append(k)
                continue
            mode = anchor.cas_mode(tier.epoch)
            if mode == "if-absent" and anchor.exists and anchor.epoch == tier.epoch:
                mode = "always"  # a current-epoch anchor without a version is garbage
            items.append((k, b.snapshot(), mode))
        if drop:
            await tier.drop_sessions(drop)
        if items:
            await publish_many(tier, items, announce=True)
        found = await _check(tier, sessions)
        sessions = [s for s, f in zip(sessions, found, strict=True) if f is not None]
    return sessions


async def _extras(tier: RedisTier, known: set[str], report: VerifyReport, repair: bool) -> None:
    """Copies in Redis of sessions with no files under the data root."""

    async def check(keys: list[RedisSessionKeys]) -> None:
        replies = await fetch_many(tier, keys)
        extra = []
        for k, reply in zip(keys, replies, strict=True):
            status, snapshot = read_reply(reply, tier.epoch)
            if status == "missing" or (snapshot is not None and _empty(snapshot)):
                continue
            report.add(Difference("extra", f"Redis copy {k.tag}", f"{status} copy with no files"))
            extra.append(k)
        if repair and extra:
            await tier.drop_sessions(extra)
            report.repaired += len(extra)

    pending: list[RedisSessionKeys] = []
    async for key in scan_state_keys(tier):
        tag = tier.keyspace.tag_of(key)
        if tag is None or tag in known:
            continue
        known.add(tag)  # SCAN may report a key twice
        pending.append(tier.keyspace.session_by_tag(tag))
        if len(pending) >= 256:
            await check(pending)
            pending = []
    if pending:
        await check(pending)


async def verify(
    tier: RedisTier,
    data_root: Path,
    *,
    sessions: Sequence[DiskSession] | None = None,
    repair: bool = False,
    batch_size: int = 256,
) -> VerifyReport:
    """Compare Redis with the files of ``sessions`` (default: every session under the data
    root, and then every Redis copy of this deployment with no files, as ``extra``).

    Durability and concurrency of ``repair``: writes Redis only, never a journal; each
    session is republished with compare-and-set on its anchor, so a live worker's newer
    write wins; extra copies are deleted (always safe: a reader then rebuilds).

    A journal or agent directory that cannot be read is an ``unreadable`` difference (logged,
    skipped, never repaired); while any agent directory is unreadable, Redis copies with no
    files are not looked for, since that directory's sessions would all look extra.
    """
    report = VerifyReport()
    started = time.perf_counter()
    known: set[str] = set()
    unreadable = Unreadable()
    source = sessions if sessions is not None else iter_sessions(data_root, unreadable=unreadable)
    for batch in batched(source, batch_size):
        # Only for sessions named by key: a listed session had files when it was listed.
        absent = [sessions is not None and not s.has_files() for s in batch]
        found = await _check(tier, batch)
        drifting = []
        for session, difference, no_files in zip(batch, found, absent, strict=True):
            if no_files and difference is None:
                report.not_found.append(str(session))
                continue
            report.sessions += 1
            known.add(tier.keyspace.session_for(session.identity).tag)
            if difference is not None:
                report.add(Difference(difference[0], str(session), difference[1]))
                if difference[0] != "unreadable":  # nothing to repair from
                    drifting.append(session)
        if repair and drifting:
            left = await _repair(tier, drifting)
            report.repaired += len(drifting) - len(left)
            report.unrepaired += len(left)
    for path, reason in unreadable.found:  # agent directories that could not be listed
        report.add(Difference("unreadable", path, reason))
    if sessions is None and not unreadable:
        # Sessions of an unlisted directory would all look extra: leave Redis alone then.
        await _extras(tier, known, report, repair)
    report.seconds = time.perf_counter() - started
    return report
