"""Sessions: list the sessions under a data root by the key that reaches each, and, when a
Redis is given, whether it holds each one, its entry count, its size and its idle time.

Journal file names do not keep the key a worker used, so the key listed is one that
resolves to exactly the session's files (``discover.key_for``), pasteable into every
command; a file no key reaches is listed by its path with ``key`` ``None``. Redis copies
with no files are not listed (their key names are hashes: ``verify`` reports them as
``extra``). Read only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from offload_registry._async.redis_tier import RedisTier
from offload_registry.disk.agent_files import read_session_registry
from offload_registry.ops.batch import fetch_many
from offload_registry.ops.discover import DiskSession, batched, iter_sessions
from offload_registry.store.records import read_reply

BATCH = 256


@dataclass(slots=True)
class SessionRow:
    key: str | None
    """A key that resolves to this session's files, or ``None`` when none does."""
    path: str
    """``<agent>/offload-<id>`` under the data root."""
    agent_name: str
    session_id: str
    journal_bytes: int | None
    """Size of the journal (``None``: only a claims record exists)."""
    recorded_keys: list[str] = field(default_factory=list)
    """Keys ``sessions-registry.json`` maps to this journal (a worker that passed a real
    session id records its key there). Shown for people: such a key reaches these files
    only together with ``--real-session-id``, so ``key`` is the one to paste."""
    redis: str | None = None
    """``ok``, ``missing``, ``stale_epoch``, ``broken_deltas`` or ``undecodable`` (how a
    worker would take the copy); ``None`` when no Redis was asked."""
    entries: int | None = None
    """Entries of the Redis copy (``None`` unless ``redis`` is ``ok``)."""
    redis_bytes: int | None = None
    """``MEMORY USAGE ... SAMPLES 0`` of the session's keys (exact, not sampled)."""
    idle_seconds: int | None = None
    """``OBJECT IDLETIME`` of its state hash (``None`` when absent or not tracked)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _row(session: DiskSession, recorded: dict[str, list[str]]) -> SessionRow:
    try:
        size: int | None = session.paths.journal.stat().st_size
    except FileNotFoundError:
        size = None
    return SessionRow(
        session.key,
        session.relative_path,
        session.agent_name,
        session.session_id,
        size,
        recorded_keys=recorded.get(session.paths.journal.name, []),
    )


def _recorded(agent_dir: Path) -> dict[str, list[str]]:
    """Journal file name -> the keys ``sessions-registry.json`` maps to it."""
    out: dict[str, list[str]] = {}
    for key, record in read_session_registry(agent_dir).items():
        out.setdefault(record.offload_file, []).append(key)
    return out


def _rows(batch: Sequence[DiskSession], cache: dict[str, dict[str, list[str]]]) -> list[SessionRow]:
    rows = []
    for s in batch:
        if s.agent_name not in cache:  # one read per agent directory
            cache[s.agent_name] = _recorded(s.paths.agent_dir)
        rows.append(_row(s, cache[s.agent_name]))
    return rows


def _int(reply: Any) -> int | None:
    return reply if isinstance(reply, int) and not isinstance(reply, bool) else None


async def _fill(tier: RedisTier, batch: Sequence[DiskSession], rows: list[SessionRow]) -> None:
    keys = [tier.keyspace.session_for(s.identity) for s in batch]
    replies = await fetch_many(tier, keys)
    async with tier.client.pipeline(transaction=False) as pipe:
        for k in keys:
            for name in k.data:
                pipe.memory_usage(name, samples=0)
            pipe.object("idletime", k.state)
        sizes: list[Any] = await pipe.execute(raise_on_error=False)
    per = len(keys[0].data) + 1 if keys else 0
    for i, (row, reply) in enumerate(zip(rows, replies, strict=True)):
        status, snapshot = read_reply(reply, tier.epoch)
        row.redis = status
        row.entries = snapshot.state.entry_count if snapshot is not None else None
        chunk = sizes[i * per : (i + 1) * per]
        used = [n for n in (_int(r) for r in chunk[:-1]) if n is not None]
        row.redis_bytes = sum(used) if used else None
        row.idle_seconds = _int(chunk[-1]) if status != "missing" else None


async def list_sessions(
    data_root: Path, tier: RedisTier | None, *, agents: Sequence[str] | None = None
) -> AsyncIterator[SessionRow]:
    """Every session under ``data_root`` (or only ``agents``), agent by agent in name
    order, in batches of :data:`BATCH` (one pipelined Redis round trip each)."""
    recorded: dict[str, dict[str, list[str]]] = {}
    for batch in batched(iter_sessions(data_root, agents), BATCH):
        rows = await asyncio.to_thread(_rows, batch, recorded)
        if tier is not None:
            await _fill(tier, batch, rows)
        for row in rows:
            yield row
