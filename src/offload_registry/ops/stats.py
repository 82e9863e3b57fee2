"""Stats: how big the deployment is in Redis and on disk.

Redis: sessions counted with ``SCAN`` over the deployment's state keys (never ``KEYS``);
memory from ``MEMORY USAGE ... SAMPLES 0`` (exact) of the first ``sample`` sessions met
(their state hash and deltas list), per session and per journal entry; the server's
``maxmemory-policy`` and ``maxmemory`` (``null`` where ``CONFIG`` is denied). Disk: every
journal and claims record under the data root, their sizes, and their corrupt and invalid
line counts (this parses every journal once: as long as a cold ``warm`` minus Redis).
"""

from __future__ import annotations

import asyncio
import logging
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from offload_registry._async.redis_tier import RedisTier
from offload_registry.disk.journal import scan_journal
from offload_registry.ops.batch import fetch_many, scan_state_keys
from offload_registry.ops.discover import Unreadable, iter_sessions
from offload_registry.store.keyspace import RedisSessionKeys
from offload_registry.store.records import read_reply

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 200


@dataclass(slots=True)
class RedisStats:
    sessions: int = 0
    sampled: int = 0
    bytes_per_session: float | None = None
    bytes_per_entry: float | None = None
    maxmemory_policy: str | None = None
    maxmemory: int | None = None


@dataclass(slots=True)
class DiskStats:
    sessions: int = 0
    journals: int = 0
    journal_bytes: int = 0
    claims_records: int = 0
    claims_bytes: int = 0
    entries: int = 0
    corrupt: int = 0
    invalid: int = 0
    largest_journal_bytes: int = 0


@dataclass(slots=True)
class Stats:
    redis: RedisStats = field(default_factory=RedisStats)
    disk: DiskStats = field(default_factory=DiskStats)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def disk_stats(data_root: Path, unreadable: Unreadable | None = None) -> DiskStats:
    """Blocking: list and parse every journal under the data root. What cannot be read goes
    to ``unreadable`` and is skipped (without ``unreadable``: ``OSError``)."""
    out = DiskStats()
    for session in iter_sessions(data_root, unreadable=unreadable):
        out.sessions += 1
        for path, is_journal in ((session.paths.journal, True), (session.paths.claims, False)):
            try:
                st = path.lstat()  # never follow a link below the data root
                if not stat.S_ISREG(st.st_mode):
                    continue  # a link or FIFO in a session file's place: not counted, not read
                size = st.st_size
                scan = scan_journal(path) if is_journal else None
            except FileNotFoundError:
                continue
            except OSError as exc:  # JournalError included
                if unreadable is None:
                    raise
                unreadable.add(path, exc)
                continue
            if scan is None:
                out.claims_records += 1
                out.claims_bytes += size
                continue
            out.journals += 1
            out.journal_bytes += size
            out.largest_journal_bytes = max(out.largest_journal_bytes, size)
            out.entries += len(scan.ids)
            out.corrupt += scan.corrupt
            out.invalid += scan.invalid
    return out


async def redis_stats(tier: RedisTier, sample: int = DEFAULT_SAMPLE) -> RedisStats:
    out = RedisStats()
    sampled: list[RedisSessionKeys] = []
    async for key in scan_state_keys(tier):
        out.sessions += 1
        tag = tier.keyspace.tag_of(key)
        if tag is not None and len(sampled) < sample:
            sampled.append(tier.keyspace.session_by_tag(tag))
    if sampled:
        async with tier.client.pipeline(transaction=False) as pipe:
            for keys in sampled:
                # SAMPLES 0: every field and element; the default (5) measures a few
                # and extrapolates, which under-reports a hash of small fields ~10x.
                pipe.memory_usage(keys.state, samples=0)
                pipe.memory_usage(keys.deltas, samples=0)
            usage: list[Any] = await pipe.execute()
        replies = await fetch_many(tier, sampled)
        entries = 0
        for reply in replies:
            _, snapshot = read_reply(reply, tier.epoch)
            entries += snapshot.state.entry_count if snapshot is not None else 0
        total = sum(int(u) for u in usage if u)
        out.sampled = len(sampled)
        out.bytes_per_session = round(total / len(sampled), 1)
        out.bytes_per_entry = round(total / entries, 1) if entries else None
    try:
        config = await tier.client.config_get("maxmemory*")
    except ResponseError:  # CONFIG is often denied on managed servers
        return out
    out.maxmemory_policy = _text(config.get("maxmemory-policy"))
    limit = _text(config.get("maxmemory"))
    out.maxmemory = int(limit) if limit and limit.isdigit() else None
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def stats(
    tier: RedisTier,
    data_root: Path,
    *,
    sample: int = DEFAULT_SAMPLE,
    unreadable: Unreadable | None = None,
) -> Stats:
    """Both halves; the journals are parsed in a worker thread meanwhile. Read only. What
    cannot be read goes to ``unreadable`` (see :func:`disk_stats`)."""
    disk = asyncio.create_task(asyncio.to_thread(disk_stats, data_root, unreadable))
    try:
        redis = await redis_stats(tier, sample)
    except BaseException:
        await asyncio.gather(disk, return_exceptions=True)
        raise
    return Stats(redis, await disk)
