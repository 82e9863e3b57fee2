"""The near cache's byte bound, version-gap accounting, and compare-and-set agent state."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis

from offload_registry import SessionRegistry
from offload_registry import sync as sync_api
from offload_registry.errors import ConfigurationError
from offload_registry.near_cache import LruCache
from offload_registry.testing.server import RedisServerProcess

# --------------------------------------------------------------------------------------------
# byte bound
# --------------------------------------------------------------------------------------------


def test_the_lru_evicts_oldest_entries_while_over_its_byte_bound() -> None:
    cache: LruCache[str, int] = LruCache(10, max_bytes=100, weigh=lambda v: v)
    assert cache.put("a", 40) == []
    assert cache.put("b", 40) == []
    cache.get("a")  # b is now the least recently used
    assert cache.put("c", 40) == [("b", 40)]
    assert cache.total_bytes == 80 and set(cache.keys()) == {"a", "c"}


def test_an_entry_heavier_than_the_bound_stays_alone_rather_than_thrash() -> None:
    cache: LruCache[str, int] = LruCache(10, max_bytes=100, weigh=lambda v: v)
    cache.put("a", 10)
    assert cache.put("huge", 500) == [("a", 10)]
    assert list(cache.keys()) == ["huge"] and cache.total_bytes == 500


def test_reweighing_a_grown_entry_evicts_others_and_pop_forgets_its_weight() -> None:
    sizes = {"a": 30, "b": 30}
    cache: LruCache[str, str] = LruCache(10, max_bytes=100, weigh=lambda k: sizes[k])
    cache.put("a", "a")
    cache.put("b", "b")
    sizes["b"] = 90
    assert cache.reweigh("b") == [("a", "a")]
    cache.pop("b")
    assert cache.total_bytes == 0 and len(cache) == 0


def test_a_byte_bound_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_cached_bytes"):
        LruCache(1, max_bytes=0)


async def test_the_registry_keeps_its_cache_under_the_byte_bound_as_sessions_grow(
    tmp_path: Path,
) -> None:
    async with SessionRegistry(tmp_path, max_cached=50, max_cached_bytes=400_000) as reg:
        for n in range(4):
            manager = (await reg.resolve(f"agent:main:s{n}")).manager
            await manager.append_entries(
                [{"tool_call_id": f"toolu_{n}_{i:05d}", "summary": "x"} for i in range(800)]
            )
            assert reg.cached_bytes <= 400_000 or len(reg) == 1
        # Every session weighs the same here (~0.17 MB): exactly the newest ones that fit stay.
        fits = 400_000 // manager.approx_bytes()
        assert 1 < fits < 4, "the sizes must make the bound evict some sessions, not all"
        assert list(reg.keys()) == [f"agent:main:s{n}" for n in range(4 - fits, 4)]
        assert reg.cached_bytes == sum(ctx.manager.approx_bytes() for ctx in reg.values())


# --------------------------------------------------------------------------------------------
# version gaps
# --------------------------------------------------------------------------------------------


async def test_an_invalidation_that_skips_a_version_is_counted_and_revalidated(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with (
        SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as a,
        SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as b,
    ):
        writer = (await a.resolve("agent:main:s1")).manager
        reader = (await b.resolve("agent:main:s1")).manager
        tier: Any = b.tier
        # The reader's subscription starts in the background: write until it hears one.
        await writer.append_entries([{"tool_call_id": "toolu_first", "summary": "x"}])
        for attempt in range(200):
            if tier.invalidations:
                break
            await writer.append_entries([{"tool_call_id": f"toolu_w{attempt}", "summary": "x"}])
            await asyncio.sleep(0.02)
        heard = tier.invalidations
        for i in range(3):  # versions arrive one by one: no gap
            await writer.append_entries([{"tool_call_id": f"toolu_{i}", "summary": "x"}])
        await _until(lambda: tier.invalidations >= heard + 3)
        assert tier.stats.version_gaps == 0
        tag = tier.keyspace.session_for(reader.identity).tag
        client = redis.Redis.from_url(redis_server.url)
        try:  # a message far past the next version: some were lost on the way
            client.publish(tier.keyspace.channel(), f"{tag} elsewhere - 100000")
        finally:
            client.close()
        await _until(lambda: tier.stats.version_gaps == 1)
        assert reader.stale  # and the copy is revalidated before it is served again
        assert "toolu_2" in (await b.resolve("agent:main:s1")).manager.processed_tool_call_ids


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# agent state: compare-and-set and atomic counters across processes
# --------------------------------------------------------------------------------------------


def _cas_worker(root: str, rounds: int, queue: Any) -> None:
    with sync_api.SessionRegistry(root) as reg:
        manager = reg.resolve("agent:main:s1").manager
        numbers = [manager.allocate_mmd_number() for _ in range(rounds)]
        applied = 0
        while applied < rounds:  # a CAS loop: read, compute, swap if unchanged
            current = manager.get_agent_state().active_mmd_id
            seen = int(current or "0")
            if manager.compare_and_set_agent_state(
                {"active_mmd_id": current}, active_mmd_id=str(seen + 1)
            ):
                applied += 1
        queue.put(numbers)


def test_concurrent_workers_lose_no_update_and_never_share_an_mmd_number(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_cas_worker, args=(str(tmp_path), 15, queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    numbers = [n for _ in workers for n in queue.get(timeout=60)]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert sorted(numbers) == sorted(set(numbers)) and len(numbers) == 60
    with sync_api.SessionRegistry(tmp_path, read_only=True) as reg:
        state = reg.resolve("agent:main:s1").manager.get_agent_state()
    assert state.active_mmd_id == "60"  # 4 workers x 15 successful swaps, none lost


async def test_a_compare_and_set_with_a_stale_expectation_changes_nothing(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve("agent:main:s1")).manager
        await manager.set_active_mmd("a.mmd", "1")
        assert not await manager.compare_and_set_agent_state(
            {"active_mmd_id": "0"}, active_mmd_id="2"
        )
        assert (await manager.get_agent_state()).active_mmd_id == "1"
        with pytest.raises(TypeError, match="unknown agent state fields"):
            await manager.compare_and_set_agent_state({"nope": 1}, active_mmd_id="2")
