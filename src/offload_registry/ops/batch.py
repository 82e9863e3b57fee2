"""Many sessions per round trip: the Redis reads and writes the operator tools pipeline.

Not used by the registry itself (which reads and writes one session at a time through
:class:`~offload_registry._async.redis_tier.RedisTier`), so these live beside the tools,
asyncio only, taking a started tier. Errors are raised to the caller (an operator tool must
fail loudly), not absorbed by the tier's breaker. A cold read's reply is judged by
:func:`offload_registry.store.records.read_reply`, as the tier's own loads are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from offload_registry._async.redis_tier import RedisTier
from offload_registry.changes import TierSnapshot
from offload_registry.store.keyspace import RedisSessionKeys
from offload_registry.store.records import ANCHOR_FIELDS, Anchor, as_text, queue_read
from offload_registry.store.script_args import encoded_publish_call

__all__ = ["fetch_many", "publish_many", "read_anchors", "scan_state_keys"]


async def read_anchors(tier: RedisTier, sessions: Sequence[RedisSessionKeys]) -> list[Anchor]:
    """The anchors of many sessions in one pipelined round trip (plain reads, no
    script; a value of the wrong type reads as ``Anchor(wrong_type=True)``)."""
    async with tier.client.pipeline(transaction=False) as pipe:
        for keys in sessions:
            pipe.hmget(keys.state, *ANCHOR_FIELDS)
            pipe.llen(keys.deltas)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return [Anchor.parse(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]


async def fetch_many(tier: RedisTier, sessions: Sequence[RedisSessionKeys]) -> list[Any]:
    """:meth:`RedisTier.fetch` for many sessions in one pipelined round trip (not one
    transaction: a session written meanwhile may read torn; callers re-check a difference
    with :meth:`RedisTier.fetch`). A failed read (``WRONGTYPE``) is its ``ResponseError``."""
    async with tier.client.pipeline(transaction=False) as pipe:
        for keys in sessions:
            queue_read(pipe, keys)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    out: list[Any] = []
    for i in range(0, len(replies), 4):
        reply = replies[i : i + 4]
        failed = next((r for r in reply if isinstance(r, Exception)), None)
        out.append(failed if failed is not None else reply)
    return out


async def publish_many(
    tier: RedisTier,
    items: Sequence[tuple[RedisSessionKeys, TierSnapshot, str]],
    *,
    announce: bool,
) -> list[int]:
    """Publish many snapshots read from their journals, in one pipelined round trip, each
    with its ``publish.lua`` mode (``always``, ``if-absent``, or a version to compare and
    set). Returns each new version; 0 where refused (by the mode, or a snapshot behind the
    one held: ``lua/_order.lua``), -1 where the snapshot could not be encoded (nothing sent
    for it).

    Durability and concurrency: Redis only, journals untouched; each publish is one
    atomic script call, so a compare-and-set never overwrites a write made after the
    version it names. Announced on the invalidation channel only when ``announce``.
    """
    results = [-1] * len(items)
    sent: list[int] = []
    calls: list[list[Any]] = []
    for i, (keys, snapshot, mode) in enumerate(items):
        call = encoded_publish_call(keys, tier.stamp(keys, announce=announce), snapshot, mode)
        if call is not None:
            calls.append([len(call[0]), *call[0], *call[1]])
            sent.append(i)
    replies = await _pipelined_evalsha(tier.client, tier.publish_script, calls) if calls else []
    for i, reply in zip(sent, replies, strict=True):
        results[i] = int(reply)
    tier.stats.snapshots_published += sum(1 for r in results if r > 0)
    return results


async def _pipelined_evalsha(client: Any, script: Any, calls: list[list[Any]]) -> list[Any]:
    """Run many calls of one script in one pipelined round trip, with plain ``EVALSHA``
    (redis-py's pipelined scripts would first send ``SCRIPT EXISTS``, a command the
    least-privilege ACL does not grant); loads the script and retries once on
    ``NOSCRIPT`` (the server restarted)."""
    for attempt in (1, 2):
        async with client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(script.sha, *call)
            try:
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                await client.script_load(script.script)
    raise AssertionError("unreachable")


async def scan_state_keys(tier: RedisTier, count: int = 1000) -> AsyncIterator[str]:
    """The ``state`` key of every session of this deployment (``SCAN MATCH``, never
    ``KEYS``: the server never blocks; a key may be reported twice)."""
    async for key in tier.client.scan_iter(match=tier.keyspace.state_pattern(), count=count):
        yield as_text(key)
