"""The KEYS and ARGV of every ``lua/`` script, built in one place (pure: no I/O, shared by
both twins).

Each script reads its arguments by position (the comment at the top of each ``.lua`` file
says which is which); the builders here are the only code that knows those positions, so a
script and its callers (the tier's writes, its start-up probe, the operator tools' pipelined
publishes) cannot drift apart. Each returns ``(keys, args)`` for a registered script's
``keys=`` and ``args=``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from offload_registry.changes import APPEND, SessionChange, TierSnapshot
from offload_registry.codec import (
    CodecError,
    Delta,
    encode_delta,
    encode_snapshot,
    encode_watermark,
    watermark_id,
)
from offload_registry.store.keyspace import (
    CLAIMS_POSITION_FIELD,
    JOURNAL_POSITION_FIELD,
    RedisSessionKeys,
)
from offload_registry.store.records import fence_arg

log = logging.getLogger("offload_registry.redis")

Call = tuple[list[str], list[Any]]
"""A script call's ``KEYS`` and ``ARGV``."""


@dataclass(frozen=True, slots=True)
class WriteStamp:
    """What the write scripts (``publish.lua``, ``delta.lua``) are told besides the data:
    the epoch written in, the idle TTL set, and where and as whom the write is announced."""

    epoch: str
    ttl_ms: int
    channel: str
    """The invalidation channel (the deployment's, or the session's shard channel), ``""``
    for a write announced to nobody."""
    message: str
    """``"<tag> <origin> <writer>"``: the script appends the new version."""
    fence: int | None
    """The writer's lease token, ``None`` for a write made without a lease."""
    sharded: bool
    """Announce with SPUBLISH (Redis Cluster) rather than PUBLISH."""


def _publish_mode(stamp: WriteStamp) -> str:
    return "sharded" if stamp.sharded else "plain"


def write_keys(keys: RedisSessionKeys) -> list[str]:
    """``publish.lua``'s and ``delta.lua``'s keys: state hash, deltas list, lease fence."""
    return [keys.state, keys.deltas, keys.fence]


def publish_call(
    keys: RedisSessionKeys, stamp: WriteStamp, snapshot: TierSnapshot, mode: str
) -> Call:
    """``publish.lua``: replace the snapshot (``mode``: ``always``, ``if-absent``, or a
    version to compare and set). Raises ``CodecError`` when the snapshot cannot be encoded."""
    packed = encode_snapshot(snapshot.state, snapshot.claimed, snapshot.watermark, 0)
    return write_keys(keys), [
        stamp.epoch,
        packed,
        watermark_id(snapshot.watermark),
        watermark_id(snapshot.claims_watermark),
        encode_watermark(snapshot.claims_watermark),
        stamp.ttl_ms,
        mode,
        stamp.channel,
        stamp.message,
        fence_arg(stamp.fence),
        _publish_mode(stamp),
    ]


def encoded_publish_call(
    keys: RedisSessionKeys, stamp: WriteStamp, snapshot: TierSnapshot, mode: str
) -> Call | None:
    """:func:`publish_call`, or ``None`` (logged) when the snapshot cannot be encoded: the
    writer then leaves Redis as it is (readers catch up from the journal)."""
    try:
        return publish_call(keys, stamp, snapshot, mode)
    except CodecError as exc:
        log.error("cannot encode a snapshot for Redis: %s", exc)
        return None


def chained_field(change: SessionChange) -> str:
    """The ``state`` field a delta chains on: the journal's position or the claims'."""
    return JOURNAL_POSITION_FIELD if change.kind == APPEND else CLAIMS_POSITION_FIELD


def delta_call(keys: RedisSessionKeys, stamp: WriteStamp, change: SessionChange) -> Call:
    """``delta.lua``: append one change, only if it continues where Redis stands."""
    delta = Delta(change.kind, change.ids, change.statuses, change.watermark)
    return write_keys(keys), [
        stamp.epoch,
        chained_field(change),
        watermark_id(change.base),
        watermark_id(change.watermark),
        encode_delta(delta),
        stamp.ttl_ms,
        stamp.channel,
        stamp.message,
        fence_arg(stamp.fence),
        _publish_mode(stamp),
    ]


def lease_call(
    keys: RedisSessionKeys, op: str, holder: str, token: int, ttl_ms: int, *, fence_ttl_ms: int
) -> Call:
    """``lease.lua``: one lease operation (``acquire``, ``renew``, ``restore``, ``release``)."""
    return [keys.lease, keys.fence], [op, holder, ttl_ms, token, fence_ttl_ms]


def claim_call(
    keys: RedisSessionKeys, op: str, ttl_ms: int, groups: Sequence[Sequence[str]]
) -> Call:
    """``claim.lua``: ``filter`` id groups (each id with its forms, counted) or ``commit``
    forms (flattened)."""
    args: list[Any] = [op, ttl_ms]
    for group in groups:
        if op == "filter":
            args.append(len(group))
        args.extend(group)
    return [keys.claims], args


def unlock_call(keys: RedisSessionKeys, token: str) -> Call:
    """``unlock.lua``: release the rebuild lock if ``token`` still holds it."""
    return [keys.lock], [token]
