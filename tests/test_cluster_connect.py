"""Clients built for ``redis+cluster://`` and ``redis+sentinel://`` URLs (no server needed:
the asyncio clients connect lazily)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from offload_registry import SessionRegistry
from offload_registry._async.connection import connect
from offload_registry.config import TierOptions
from offload_registry.store.keyspace import Keyspace
from offload_registry.store.urls import parse_redis_url
from offload_registry.testing.server import free_port

OPTIONS = TierOptions(socket_timeout=0.4, connect_timeout=0.3)


async def test_a_cluster_url_builds_a_cluster_client_over_its_startup_nodes() -> None:
    client = connect(parse_redis_url("redis+cluster://u:pw@127.0.0.1:7000,[::1]:7001"), OPTIONS)
    try:
        assert isinstance(client, RedisCluster)
        nodes = {(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()}
        assert nodes == {("127.0.0.1", 7000), ("::1", 7001)}
        kwargs = client.get_connection_kwargs()
        assert (kwargs["username"], kwargs["password"]) == ("u", "pw")
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.4, 0.3)
        assert client.retry.get_retries() == 3
    finally:
        await client.aclose()


async def test_a_sentinel_url_builds_a_master_client_of_its_service() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2?sentinel_password=s"
    client = connect(parse_redis_url(url), OPTIONS)
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.connection_kwargs["password"] == "pw"
        assert pool.connection_kwargs["db"] == 2
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
        assert all(s.connection_pool.connection_kwargs["password"] == "s" for s in sentinels)
        assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 0.4 for s in sentinels)
    finally:
        await client.aclose()


def test_a_sessions_shard_channel_is_in_its_slot_and_single_node_names_are_unchanged() -> None:
    keyspace = Keyspace("p", deployment="d1")
    keys = keyspace.session("main", "s1")
    assert keyspace.session_channel(keys.tag) == f"p:v1:d1:{keys.tag}:invalidate"
    assert key_slot(keyspace.session_channel(keys.tag).encode()) == key_slot(keys.state.encode())
    assert keyspace.channel() == "p:v1:d1:invalidate"
    assert keys.state == f"p:v1:d1:{keys.tag}:state"


async def test_an_unreachable_cluster_is_an_outage_answered_from_the_journals(
    tmp_path: Path,
) -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    options = TierOptions(socket_timeout=0.2, connect_timeout=0.2)
    async with SessionRegistry(tmp_path, redis_url=url, redis_options=options) as reg:
        manager = (await reg.resolve("agent:main:s1")).manager
        assert await manager.append_entries([{"tool_call_id": "t1", "summary": "s"}]) == 1
        assert await manager.claim(["c1"]) == ["c1"]
        assert manager.source == "journal"
