"""What the Redis tier's values mean, parsed: no I/O, shared by the asyncio and blocking twins.

A session's ``state`` hash read as an :class:`Anchor`, a cold read's reply (snapshot plus
deltas) judged and decoded into one :class:`~offload_registry.changes.TierSnapshot` by
:func:`read_reply` (the tier's loads and the operator tools alike), and the tier's counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from offload_registry.changes import APPEND, TierSnapshot
from offload_registry.codec import CodecError, decode_delta, decode_snapshot, decode_watermark
from offload_registry.store.keyspace import (
    CLAIMS_POSITION_FIELD,
    CLAIMS_WATERMARK_FIELD,
    DELTA_COUNT_FIELD,
    EPOCH_FIELD,
    JOURNAL_POSITION_FIELD,
    SNAPSHOT_FIELD,
    VERSION_FIELD,
    RedisSessionKeys,
)

ANCHOR_FIELDS = (
    EPOCH_FIELD,
    JOURNAL_POSITION_FIELD,
    CLAIMS_POSITION_FIELD,
    VERSION_FIELD,
    DELTA_COUNT_FIELD,
)
"""The ``state`` fields an :class:`Anchor` is read from, in :meth:`Anchor.parse`'s order."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a session's ``state`` hash says about itself, without its snapshot (operator
    tools compare it with the journal's position to skip sessions Redis already holds)."""

    exists: bool
    wrong_type: bool = False
    epoch: str = ""
    journal_position: str = ""
    """``codec.watermark_id`` of the journal position the anchor reflects (deltas included)."""
    claims_position: str = ""
    version: str = ""
    intact: bool = False
    """The recorded delta count equals the ``deltas`` list's length (else readers miss)."""

    def usable(self, epoch: str) -> bool:
        """True when a reader of ``epoch`` would take this anchor (barring an undecodable
        snapshot, which only a full read sees)."""
        return self.exists and not self.wrong_type and self.epoch == epoch and self.intact

    def cas_mode(self, epoch: str) -> str:
        """The ``publish.lua`` mode that replaces this anchor only if nobody wrote since it
        was read: its version, or ``if-absent`` when there was no current-epoch anchor."""
        if self.exists and not self.wrong_type and self.epoch == epoch and self.version:
            return self.version
        return "if-absent"

    @classmethod
    def parse(cls, fields: Any, length: Any) -> Anchor:
        """An anchor from the replies to ``HMGET state`` :data:`ANCHOR_FIELDS` and ``LLEN
        deltas``."""
        if isinstance(fields, ResponseError):
            return cls(exists=True, wrong_type=True)
        if isinstance(fields, Exception):
            raise fields
        epoch, jwm, cwm, version, recorded = (as_text(f) for f in fields)
        if not epoch and not version:
            return cls(exists=False)
        intact = not isinstance(length, Exception) and recorded == str(length)
        return cls(True, False, epoch, jwm, cwm, version, intact)


def as_text(value: Any) -> str:
    """A Redis reply as text (``""`` for nil; bytes decoded as UTF-8, bad bytes replaced)."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class TierStats:
    """What one Redis tier counted since it started (reads, writes, faults)."""

    hits: int = 0
    misses: int = 0
    bad_values: int = 0
    errors: int = 0
    rebuilds: int = 0
    rebuild_waits: int = 0
    snapshots_published: int = 0
    deltas_published: int = 0
    gaps: int = 0
    fenced: int = 0
    version_gaps: int = 0
    """Invalidations whose version skipped one this process never saw (a lost message);
    the session is revalidated either way, so this only measures the stream's health."""
    oom: int = 0
    """Calls Redis refused because it was over its ``maxmemory`` (counted in ``errors``
    too): the registry answered from the journals, as in any outage."""


def fence_arg(fence: int | None) -> str:
    """A lease fencing token as a script argument (``""``: no lease)."""
    return "" if fence is None else str(fence)


def decode_tier_snapshot(snap: bytes, claims_watermark: bytes, deltas: list[bytes]) -> TierSnapshot:
    """A session as Redis holds it: its snapshot with every delta after it applied."""
    decoded = decode_snapshot(snap)
    state, claimed, watermark = decoded.state, decoded.claimed, decoded.watermark
    cwm = decode_watermark(claims_watermark)
    for raw in deltas:
        delta = decode_delta(raw)
        if delta.kind == APPEND:
            state.apply_scan(delta.ids, delta.statuses)
            watermark = delta.watermark
        else:
            claimed.update(delta.ids)
            claimed.update([i.replace("_", "") for i in delta.ids])
            cwm = delta.watermark
    return TierSnapshot(state, claimed, watermark, cwm)


class _Resubscribe(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The server dropped one of our shard subscriptions (its slot moved)."""


def queue_read(pipe: Any, keys: RedisSessionKeys) -> None:
    """Queue a session's cold read on ``pipe`` (a pipeline of either twin): the four plain
    reads whose replies :func:`read_reply` takes, ``[[epoch, claims watermark, recorded
    delta count], snapshot, deltas, remaining TTL in ms]`` (no script, so the large snapshot
    is never copied through Lua and a read never writes)."""
    pipe.hmget(keys.state, EPOCH_FIELD, CLAIMS_WATERMARK_FIELD, DELTA_COUNT_FIELD)
    pipe.hget(keys.state, SNAPSHOT_FIELD)
    pipe.lrange(keys.deltas, 0, -1)
    pipe.pttl(keys.state)


def read_reply(reply: Any, epoch: str) -> tuple[str, TierSnapshot | None]:
    """How a reader of ``epoch`` takes a :func:`queue_read` reply: ``("ok", snapshot)``, or
    ``(reason, None)`` with reason ``missing``, ``stale_epoch``, ``broken_deltas`` (the
    deltas list does not match its recorded length, say evicted apart from its snapshot) or
    ``undecodable`` (a failed read such as ``WRONGTYPE``, or values that cannot be used)."""
    status, snapshot, _ = judge_reply(reply, epoch)
    return status, snapshot


def judge_reply(reply: Any, epoch: str) -> tuple[str, TierSnapshot | None, str]:
    """:func:`read_reply` with why an ``undecodable`` reply is so (for the tier's log)."""
    if isinstance(reply, Exception):
        return "undecodable", None, str(reply)
    try:
        (held_epoch, claims_watermark, recorded), snap, deltas, _ = reply
        if snap is None and held_epoch is None:
            return "missing", None, ""
        if held_epoch is None or held_epoch.decode("ascii", "replace") != epoch:
            return "stale_epoch", None, ""
        if recorded is None or int(recorded) != len(deltas):
            return "broken_deltas", None, ""
        if snap is None:
            return "undecodable", None, "no snapshot beside a current-epoch anchor"
        return "ok", decode_tier_snapshot(snap, claims_watermark or b"", deltas), ""
    except (CodecError, ValueError, TypeError, AttributeError) as exc:
        # Undecodable or foreign values (or a client with decode_responses=True).
        return "undecodable", None, str(exc)
