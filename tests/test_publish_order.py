"""A full snapshot never replaces a snapshot of a later position of the same journal.

Two workers write one session; the older one's full snapshot (a mark's, a gap's, a catch-up's)
reaches Redis after the newer one's. Readers stay right either way (they catch up from the
journal), but Redis would lag the journal until the next write, and ``verify`` would report
it: ``publish.lua`` refuses such a publish (as a compare-and-set refusal) and the write is
still announced. A journal replaced by someone else, restored, or recreated, and an anchor
of an older format or another epoch, are replaced as before.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as redis_asyncio

from offload_registry import SessionRegistry
from offload_registry.changes import APPEND, SessionChange, TierSnapshot
from offload_registry.codec import watermark_id
from offload_registry.disk import layout
from offload_registry.disk.journal import FileIdentity, Watermark
from offload_registry.keys import resolve_identity
from offload_registry.ops.verify import verify
from offload_registry.session_state import SessionState
from session_helpers import described, entry, truth, until

KEY = "agent:main:s1"
IDENTITY = resolve_identity(KEY)


@pytest.fixture(params=["memory", "real"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(url, key_prefix)``: ``memory://`` (fakeredis) or the shared real server."""
    prefix = f"t{uuid4().hex[:12]}"
    if request.param == "memory":
        return "memory://", prefix
    return request.getfixturevalue("redis_server").url, prefix


def registry(root: Path, backend: tuple[str, str]) -> SessionRegistry:
    url, prefix = backend
    return SessionRegistry(root, redis_url=url, key_prefix=prefix)


def copy_of(snapshot: TierSnapshot) -> TierSnapshot:
    """A snapshot frozen now (a manager's snapshot holds its live sets)."""
    return copy.deepcopy(snapshot)


async def redis_agrees(reg: SessionRegistry, root: Path) -> None:
    """Redis holds exactly the files' state and position, and ``verify`` finds no drift."""
    held = await reg.tier.load(IDENTITY)
    assert held is not None
    want = await truth(root, KEY)
    got = {
        "confirmed": sorted(held.state.confirmed),
        "deleted": sorted(held.state.deleted),
        "processed": sorted(set(held.state.processed) | held.claimed),
        "entry_count": held.state.entry_count,
    }
    assert got == want
    async with SessionRegistry(root, read_only=True) as journal_only:
        files = (await journal_only.resolve(KEY)).manager.snapshot()
    assert watermark_id(held.watermark) == watermark_id(files.watermark)
    assert watermark_id(held.claims_watermark) == watermark_id(files.claims_watermark)
    report = await verify(reg.tier, root)  # type: ignore[arg-type]
    assert report.drift == 0, report.differences


async def two_workers(
    root: Path, backend: tuple[str, str]
) -> tuple[SessionRegistry, SessionRegistry, Any, Any]:
    a, b = registry(root, backend), registry(root, backend)
    await a.__aenter__()
    await b.__aenter__()
    manager_a = (await a.resolve(KEY)).manager
    await manager_a.append_entries([entry(f"call_{i}") for i in range(8)])
    assert await manager_a.claim(["won_first"]) == ["won_first"]  # a claims record exists
    manager_b = (await b.resolve(KEY)).manager
    await manager_b.refresh()
    return a, b, manager_a, manager_b


async def close(*regs: SessionRegistry) -> None:
    for reg in regs:
        await reg.__aexit__(None, None, None)


async def test_a_mark_whose_publish_lands_after_a_later_mark_leaves_redis_at_the_later_one(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    a, b, manager_a, manager_b = await two_workers(tmp_path, backend)
    try:
        held, go = asyncio.Event(), asyncio.Event()
        real_publish = a.tier.publish

        async def late_publish(*args: Any, **kwargs: Any) -> None:
            held.set()  # A's mark is in the journal and its lock released
            await go.wait()
            await real_publish(*args, **kwargs)

        a.tier.publish = late_publish  # type: ignore[method-assign]
        first = asyncio.create_task(manager_a.mark_offload_status({"call_6": "deleted"}))
        await held.wait()
        await manager_b.mark_offload_status({"call_6": True, "call_7": "deleted"})
        go.set()
        assert await first == 1
        await redis_agrees(b, tmp_path)
        assert described(manager_b)["deleted"] == ["call7", "call_7"]
    finally:
        await close(a, b)


async def run_late(
    root: Path,
    backend: tuple[str, str],
    later: Callable[[Any], Awaitable[object]],
    publish_old: Callable[[SessionRegistry, TierSnapshot], Awaitable[object]],
) -> None:
    """Take A's snapshot, let B write ``later``, then land A's old snapshot with
    ``publish_old``: Redis must stay at B's write, and B must hear of A's attempt."""
    a, b, manager_a, manager_b = await two_workers(root, backend)
    try:
        old = copy_of(manager_a.snapshot())
        await later(manager_b)
        heard = b.tier.invalidations  # type: ignore[attr-defined]
        await publish_old(a, old)
        await redis_agrees(b, root)
        await until("B hears of A's write", lambda: b.tier.invalidations > heard)  # type: ignore[attr-defined]
    finally:
        await close(a, b)


async def append_later(manager: Any) -> None:
    await manager.append_entries([entry("call_later")])


async def claim_later(manager: Any) -> None:
    assert await manager.claim(["won_later"]) == ["won_later"]


@pytest.mark.parametrize("later", [append_later, claim_later], ids=["append", "claim"])
async def test_an_older_snapshot_published_always_does_not_replace_a_later_write(
    tmp_path: Path, backend: tuple[str, str], later: Callable[[Any], Awaitable[object]]
) -> None:
    await run_late(tmp_path, backend, later, lambda a, old: a.tier.publish(IDENTITY, old, "w-a"))


async def test_a_gap_replacement_does_not_replace_a_later_write(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    async def gap(a: SessionRegistry, old: TierSnapshot) -> None:
        # A delta that starts where Redis no longer stands: the writer replaces the snapshot.
        assert old.watermark is not None
        start = Watermark(old.watermark.identity, 1, b"", 0, old.watermark.generation)
        change = SessionChange(APPEND, ["call_7"], start, old.watermark, [("call_7", None)])
        gaps = a.tier.stats.gaps  # type: ignore[attr-defined]
        await a.tier.publish_change(IDENTITY, change, old, "w-a")
        assert a.tier.stats.gaps == gaps + 1  # type: ignore[attr-defined]

    await run_late(tmp_path, backend, append_later, gap)


# -- what is still replaced ------------------------------------------------------------------
def position(identity: tuple[int, int], generation: int, offset: int, mtime_ns: int) -> Watermark:
    return Watermark(FileIdentity(*identity), offset, b"", 0, generation, mtime_ns)


SAME = (1, 100)
OTHER = (1, 200)
T = 1_700_000_000_000_000_000


@pytest.mark.parametrize(
    ("stored", "new", "replaced"),
    [
        (position(SAME, 2, 500, T), position(SAME, 2, 400, T), False),  # an older append
        (position(SAME, 2, 500, T), position(SAME, 2, 600, T + 1), True),  # a later append
        (position(SAME, 2, 500, T), position(SAME, 2, 500, T), True),  # the same position
        (position(OTHER, 3, 500, T), position(SAME, 2, 400, T), False),  # before a rewrite
        (position(OTHER, 3, 500, T), position(SAME, 2, 400, T - 5), False),
        (position(SAME, 2, 500, T), position(OTHER, 3, 100, T), True),  # after a rewrite
        (position(SAME, 2, 500, T), position(SAME, 3, 100, T), True),  # an inode reused
        # someone else's in-place rewrite, shorter but modified later
        (position(SAME, 2, 500, T), position(SAME, 2, 400, T + 1), True),
        # replaced by someone else (a restore): the generation did not move
        (position(SAME, 2, 500, T), position(OTHER, 2, 100, T - 9), True),
        # recreated with its lock file: the generation went back, the file is newer
        (position(SAME, 5, 500, T), position(OTHER, 0, 100, T + 1), True),
        # watermarks without a modification time: the offsets and generations decide
        (position(SAME, 2, 500, 0), position(SAME, 2, 400, 0), False),
        (position(SAME, 2, 500, 0), position(OTHER, 1, 900, 0), False),
    ],
)
async def test_the_journal_order_publish_lua_keeps(
    tmp_path: Path,
    backend: tuple[str, str],
    stored: Watermark,
    new: Watermark,
    replaced: bool,
) -> None:
    async with registry(tmp_path, backend) as reg:
        tier: Any = reg.tier
        await tier.start()
        keys = tier.keyspace.session_for(IDENTITY)
        first = TierSnapshot(SessionState(entry_count=1), set(), stored)
        assert await tier._publish_snapshot(keys, first, "always") > 0
        second = TierSnapshot(SessionState(entry_count=2), set(), new)
        written = await tier._publish_snapshot(keys, second, "always")
        assert (written > 0) is replaced
        held = await tier.load(IDENTITY)
        assert held.state.entry_count == (2 if replaced else 1)


async def test_the_claims_order_counts_too(tmp_path: Path, backend: tuple[str, str]) -> None:
    journal = position(SAME, 1, 50, T)
    async with registry(tmp_path, backend) as reg:
        tier: Any = reg.tier
        await tier.start()
        keys = tier.keyspace.session_for(IDENTITY)
        later = TierSnapshot(SessionState(), {"b"}, journal, position(OTHER, 0, 90, T))
        older = TierSnapshot(SessionState(), {"a"}, journal, position(OTHER, 0, 40, T))
        assert await tier._publish_snapshot(keys, later, "always") > 0
        assert await tier._publish_snapshot(keys, older, "always") == 0
        # a later journal with older claims: neither is behind the other, the newest write wins
        mixed = TierSnapshot(
            SessionState(), {"c"}, position(SAME, 1, 60, T), older.claims_watermark
        )
        assert await tier._publish_snapshot(keys, mixed, "always") > 0


async def client_of(url: str, reg: SessionRegistry) -> Any:
    return reg.tier._client if url.startswith("memory://") else redis_asyncio.Redis.from_url(url)  # type: ignore[attr-defined]


@pytest.mark.parametrize("anchor", ["old format", "other epoch"])
async def test_an_anchor_without_a_comparable_position_is_replaced(
    tmp_path: Path, backend: tuple[str, str], anchor: str
) -> None:
    async with registry(tmp_path, backend) as reg:
        tier: Any = reg.tier
        await tier.start()
        keys = tier.keyspace.session_for(IDENTITY)
        later = TierSnapshot(SessionState(entry_count=1), set(), position(SAME, 2, 500, T))
        assert await tier._publish_snapshot(keys, later, "always") > 0
        client = await client_of(backend[0], reg)
        if anchor == "old format":  # an older worker's position, without the mtime
            await client.hset(keys.state, "jwm", "1:100:2:500:0:0")
        else:
            await client.hset(keys.state, "epoch", "an-old-epoch")
        if client is not tier._client:
            await client.aclose()
        older = TierSnapshot(SessionState(entry_count=2), set(), position(SAME, 2, 400, T))
        assert await tier._publish_snapshot(keys, older, "always") > 0


async def test_a_journal_recreated_with_its_lock_file_is_published_again(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    async with registry(tmp_path, backend) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry(f"call_{i}") for i in range(3)])
        await manager.mark_offload_status({"call_1": True})
        await manager.mark_offload_status({"call_2": True})
    journal = tmp_path / "main" / "offload-s1.jsonl"
    layout.lock_path(journal).unlink()
    journal.unlink()
    journal.write_bytes(b'{"tool_call_id":"call_new"}\n')
    later = journal.stat().st_mtime_ns + 10**9
    os.utime(journal, ns=(later, later))
    async with registry(tmp_path, backend) as reg:
        assert described((await reg.resolve(KEY)).manager)["processed"] == ["call_new", "callnew"]
        await redis_agrees(reg, tmp_path)
