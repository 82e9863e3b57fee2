"""The registry on a real Redis Cluster (3 masters, 3 replicas, started by the tests).

One cluster serves the whole module (``shared_cluster``); each test has its own key prefix
and data root, and none breaks the cluster (failover and resharding are in
``test_cluster_failover.py``). The truth every answer is compared with is a journal-only,
read-only registry.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from redis.crc import key_slot

from cluster_fixtures import LocalCluster, command, shared_cluster
from offload_registry import SessionRegistry
from offload_registry import sync as blocking
from offload_registry.config import TierOptions
from offload_registry.disk.layout import data_root_id
from offload_registry.keys import resolve_identity
from offload_registry.store.keyspace import Keyspace
from session_helpers import PATIENCE, described, entry, truth, until

__all__ = ["shared_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(90)]

SESSIONS = [f"agent:main:s{i}" for i in range(8)]  # spread over the three masters' slots


def opened(root: Path, cluster: LocalCluster, prefix: str) -> SessionRegistry:
    return SessionRegistry(
        root, redis_url=cluster.url, redis_options=TierOptions(key_prefix=prefix)
    )


def keys_of(root: Path, prefix: str, key: str) -> Any:
    identity = resolve_identity(key, None)
    return Keyspace.for_data_root(prefix, root).session_for(identity)


async def seen_within(reg: Any, key: str, tool_call_id: str, seconds: float = PATIENCE) -> float:
    async def seen() -> bool:
        return tool_call_id in (await reg.resolve(key)).manager.processed_tool_call_ids

    return await until(f"{tool_call_id} visible in {key}", seen, seconds)


@pytest.fixture
def prefix() -> str:
    return f"cl{uuid4().hex[:10]}"


def test_every_key_of_a_session_and_its_shard_channel_hash_to_one_slot(tmp_path: Path) -> None:
    keyspace = Keyspace.for_data_root("p", tmp_path)
    for key in SESSIONS:
        keys = keyspace.session_for(resolve_identity(key, None))
        names = [*keys.all, keyspace.session_channel(keys.tag)]
        assert len({key_slot(name.encode()) for name in names}) == 1, names
    slots = {key_slot(keys_of(tmp_path, "p", key).state.encode()) for key in SESSIONS}
    assert len(slots) == len(SESSIONS)  # the sessions do spread over the cluster


async def test_writes_on_a_cluster_are_resolved_from_redis_by_a_second_registry(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    async with opened(tmp_path, shared_cluster, prefix) as writer:
        for n, key in enumerate(SESSIONS):
            manager = (await writer.resolve(key)).manager
            await manager.append_entries([entry(f"toolu_{n}a"), entry(f"toolu_{n}b")])
            await manager.mark_offload_status({f"toolu_{n}a": "deleted", f"toolu_{n}b": True})
            assert await manager.claim([f"call_{n}", f"toolu_{n}a"]) == [f"call_{n}"]
    async with opened(tmp_path, shared_cluster, prefix) as reader:
        for key in SESSIONS:
            manager = (await reader.resolve(key)).manager
            assert manager.source == "redis", key
            assert described(manager) == await truth(tmp_path, key)
        assert reader.tier.stats.hits == len(SESSIONS)  # type: ignore[attr-defined]
        assert reader.tier.stats.rebuilds == 0  # type: ignore[attr-defined]


async def test_a_cold_session_is_rebuilt_once_and_published_to_its_slot(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    async with SessionRegistry(tmp_path) as journal_only:  # written without Redis
        await (await journal_only.resolve(SESSIONS[0])).manager.append_entries([entry("t1")])
    async with opened(tmp_path, shared_cluster, prefix) as first:
        assert (await first.resolve(SESSIONS[0])).manager.source == "journal"
    keys = keys_of(tmp_path, prefix, SESSIONS[0])
    owner = shared_cluster.master_of_slot(shared_cluster.slot_of(keys.state))
    assert command(owner, "EXISTS", keys.state) == 1
    async with opened(tmp_path, shared_cluster, prefix) as second:
        manager = (await second.resolve(SESSIONS[0])).manager
        assert manager.source == "redis" and "t1" in manager.processed_tool_call_ids


async def test_invalidations_travel_on_the_sessions_shard_channel_only(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    async with (
        opened(tmp_path, shared_cluster, prefix) as writer,
        opened(tmp_path, shared_cluster, prefix) as reader,
    ):
        cached = [(await reader.resolve(key)).manager for key in SESSIONS[:4]]
        keyspace = Keyspace.for_data_root(prefix, tmp_path)
        for key in SESSIONS[:4]:
            channel = keyspace.session_channel(keys_of(tmp_path, prefix, key).tag)
            owner = shared_cluster.master_of_slot(shared_cluster.slot_of(channel))
            await until(
                "the reader subscribed",
                lambda: command(owner, "PUBSUB", "SHARDNUMSUB", channel)[1] >= 1,  # noqa: B023
            )
        # Each subscription marks its session's copy stale once when the listener reads its
        # confirmation; from then on the tier hears the session.
        await until(
            "every subscription confirmed",
            lambda: all(reader.tier.hears(m.identity) for m in cached),  # type: ignore[attr-defined]
        )
        assert [(await reader.resolve(key)).manager for key in SESSIONS[:4]] == cached
        assert not any(manager.stale for manager in cached)
        for n, key in enumerate(SESSIONS[:4]):
            await (await writer.resolve(key)).manager.append_entries([entry(f"w{n}")])
        await until(
            "every invalidation arrived",
            lambda: reader.tier.invalidations >= 4,  # type: ignore[attr-defined]
        )
        assert all(manager.stale for manager in cached)
        for n, key in enumerate(SESSIONS[:4]):
            await seen_within(reader, key, f"w{n}")
        # Nothing on the classic, cluster-wide channel.
        assert command(owner, "PUBSUB", "NUMSUB", keyspace.channel())[1] == 0


async def test_a_session_that_leaves_the_near_cache_is_unsubscribed(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    data_root_id(tmp_path, create=True)  # names the deployment, as the registries below do
    keyspace = Keyspace.for_data_root(prefix, tmp_path)
    channel = keyspace.session_channel(keys_of(tmp_path, prefix, SESSIONS[0]).tag)
    owner = shared_cluster.master_of_slot(shared_cluster.slot_of(channel))

    async def subscribers_become(count: int) -> None:
        deadline = time.monotonic() + 5
        while command(owner, "PUBSUB", "SHARDNUMSUB", channel)[1] != count:
            assert time.monotonic() < deadline, f"never {count} subscribers"
            await asyncio.sleep(0.02)

    reg = SessionRegistry(tmp_path, redis_url=shared_cluster.url, key_prefix=prefix, max_cached=1)
    async with reg:
        await reg.resolve(SESSIONS[0])
        await subscribers_become(1)
        await reg.resolve(SESSIONS[1])  # evicts SESSIONS[0]
        await subscribers_become(0)


async def test_a_registry_ignores_its_own_writes_on_a_cluster(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    async with opened(tmp_path, shared_cluster, prefix) as reg:
        tier: Any = reg.tier
        channel = Keyspace.for_data_root(prefix, tmp_path).session_channel(
            keys_of(tmp_path, prefix, SESSIONS[0]).tag
        )
        owner = shared_cluster.master_of_slot(shared_cluster.slot_of(channel))

        async def delivered() -> None:
            # A foreign message for a session nobody watches, on the session's shard channel:
            # once it is counted, every message sent there before it has been handled too.
            before = tier.invalidations
            command(owner, "SPUBLISH", channel, f"marker{uuid4().hex} test w 1")
            await until("the marker delivered", lambda: tier.invalidations > before)

        manager = (await reg.resolve(SESSIONS[0])).manager
        await until("subscribed (which marks the copy stale once)", lambda: manager.stale)
        await delivered()  # the announcement of our own load, too
        await reg.resolve(SESSIONS[0])
        assert manager.stale is False
        await manager.append_entries([entry("own")])
        await delivered()
        assert manager.stale is False
        assert tier.invalidations == 2  # the markers only


def test_the_sync_twin_works_on_a_cluster(
    tmp_path: Path, shared_cluster: LocalCluster, prefix: str
) -> None:
    with (
        blocking.SessionRegistry(tmp_path, redis_url=shared_cluster.url, key_prefix=prefix) as a,
        blocking.SessionRegistry(tmp_path, redis_url=shared_cluster.url, key_prefix=prefix) as b,
    ):
        b.resolve(SESSIONS[2])
        manager = a.resolve(SESSIONS[2]).manager
        manager.append_entries([entry("sync_1")])
        assert manager.claim(["c1"]) == ["c1"]
        assert b.resolve(SESSIONS[2]).manager.claim(["c1", "c2"]) == ["c2"]
        deadline = time.monotonic() + 5
        while "sync_1" not in b.resolve(SESSIONS[2]).manager.processed_tool_call_ids:
            assert time.monotonic() < deadline, "the sync twin never saw the write"
            time.sleep(0.01)
    with blocking.SessionRegistry(
        tmp_path, redis_url=shared_cluster.url, key_prefix=prefix
    ) as fresh:
        assert fresh.resolve(SESSIONS[2]).manager.source == "redis"
