"""Evict: drop the Redis copies of sessions; their journals stay, so nothing is lost.

By key (``evict KEY...``), or every session idle for a duration (``--idle-for 2h``). Idle
means: no worker read or wrote the session's ``state`` hash for that long, measured with
``OBJECT IDLETIME`` (the server's LRU clock; reads and writes touch it, ``SCAN`` and
``OBJECT`` do not). Under an LFU ``maxmemory-policy`` the server keeps no idle time; then
the rule is the idle TTL: a session's keys expire ``idle_ttl`` after their last write or TTL
refresh (reads refresh it once less than 90 % remains), so ``idle_ttl - PTTL`` is how long
ago that was, which under-counts idleness by at most 10 % of the TTL: eviction errs toward
keeping a session.

Why deleting is enough for correctness: a worker's near-cache copy is built from the journal
(directly or through a snapshot Redis took from it) plus its own writes, and every write
goes journal first, so a copy never needs Redis to stay correct; a reader that misses
rebuilds from the journal, and a writer that finds no anchor republishes a full snapshot.
Each evicted session is still announced on the invalidation channel, so live workers
revalidate their copies (a journal-tail check) instead of trusting a session an operator
just dropped.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from offload_registry._async.redis_tier import RedisTier
from offload_registry.errors import ConfigurationError
from offload_registry.ops.batch import scan_state_keys
from offload_registry.ops.discover import DiskSession
from offload_registry.store.keyspace import RedisSessionKeys

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BATCH = 256


def parse_duration(text: str) -> int:
    """``30m``, ``2h``, ``7d``, ``90s`` -> seconds; :class:`ConfigurationError` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(slots=True)
class EvictReport:
    scanned: int = 0
    """Sessions considered: named by key (and found), or seen by ``SCAN``."""
    evicted: int = 0
    """Sessions whose Redis copy was deleted (the others had none, or were not idle)."""
    rule: str = "keys"
    """``keys``, ``idletime`` (``OBJECT IDLETIME``) or ``ttl`` (idle TTL minus ``PTTL``)."""
    not_found: list[str] = field(default_factory=list)
    """Keys that name no session: no files under the data root and no copy in Redis."""

    def as_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "evicted": self.evicted,
            "rule": self.rule,
            "not_found": self.not_found,
        }


async def evict_keys(tier: RedisTier, sessions: Sequence[DiskSession]) -> EvictReport:
    """Drop the Redis copies of these sessions (named by key: ``discover.session_for_key``);
    a key whose session has neither files nor a Redis copy is reported in ``not_found``.

    Durability and concurrency: Redis only, journals untouched (see the module docstring)."""
    unique = list({tier.keyspace.session_for(s.identity): s for s in sessions}.items())
    report = EvictReport()
    for i in range(0, len(unique), BATCH):
        batch = unique[i : i + BATCH]
        async with tier.client.pipeline(transaction=False) as pipe:
            for keys, _ in batch:
                for name in keys.data:  # TYPE, not EXISTS: the worker ACL already allows it
                    pipe.type(name)
            types: list[Any] = await pipe.execute()
        per = len(batch[0][0].data)
        todo = []
        for n, (keys, session) in enumerate(batch):
            held = any(t not in (b"none", "none") for t in types[n * per : (n + 1) * per])
            if not held and not await asyncio.to_thread(session.has_files):
                report.not_found.append(str(session))
            else:
                todo.append(keys)
        report.scanned += len(todo)
        if todo:
            report.evicted += await tier.drop_sessions(todo)
    return report


async def _idle_seconds(tier: RedisTier, batch: list[RedisSessionKeys], rule: str) -> list[float]:
    async with tier.client.pipeline(transaction=False) as pipe:
        for keys in batch:
            if rule == "idletime":
                pipe.object("idletime", keys.state)
            else:
                pipe.pttl(keys.state)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    if rule == "idletime":
        return [float(r) if isinstance(r, int) else -1.0 for r in replies]
    ttl_ms = tier.idle_ttl_seconds * 1000
    # -2: gone meanwhile; -1: no TTL (not ours to judge): never idle
    return [(ttl_ms - r) / 1000 if isinstance(r, int) and r >= 0 else -1.0 for r in replies]


async def _rule(tier: RedisTier, probe: RedisSessionKeys) -> str:
    try:
        await tier.client.object("idletime", probe.state)
    except ResponseError:  # "An LFU maxmemory policy is selected, idle time not tracked"
        return "ttl"
    return "idletime"


async def evict_idle(tier: RedisTier, idle_seconds: int) -> EvictReport:
    """Drop every session of this deployment idle for at least ``idle_seconds``.

    Durability and concurrency: Redis only, journals untouched; a session used between the
    idle check and the delete is dropped anyway, which costs its next reader a rebuild."""
    report = EvictReport(rule="")
    seen: set[str] = set()
    pending: list[RedisSessionKeys] = []

    async def flush() -> None:
        if not report.rule:
            report.rule = await _rule(tier, pending[0])
        idle = await _idle_seconds(tier, pending, report.rule)
        due = [k for k, s in zip(pending, idle, strict=True) if s >= idle_seconds]
        if due:
            report.evicted += await tier.drop_sessions(due)
        pending.clear()

    async for key in scan_state_keys(tier):
        tag = tier.keyspace.tag_of(key)
        if tag is None or tag in seen:
            continue
        seen.add(tag)
        report.scanned += 1
        pending.append(tier.keyspace.session_by_tag(tag))
        if len(pending) >= BATCH:
            await flush()
    if pending:
        await flush()
    report.rule = report.rule or "idletime"
    return report
