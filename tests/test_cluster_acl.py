"""The least-privilege ACL on a Redis Cluster (a cluster of the test's own: it reshards).

ACL users are per node on a cluster: each test creates its user on every node. The command
list is the single-node one (``REGISTRY_COMMANDS``) plus what cluster mode adds
(``CLUSTER_EXTRA_COMMANDS``), found by running a workload as such a user and reading
``ACL LOG`` on every node after each run:

* ``+cluster|slots`` and ``+command``: redis-py's cluster client loads the slot map and the
  command table (to find the keys of a command) when it starts, and reloads the slot map
  after a failover or a ``MOVED``;
* ``+asking``: sent before the retried command after an ``ASK`` redirection, i.e. while a
  slot is being moved (without it, every write to a migrating session fails until the move
  ends);
* ``+spublish`` (from the scripts and the client), ``+ssubscribe``, ``+sunsubscribe`` (when a
  session leaves the near cache): the per-session shard channels.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from cluster_fixtures import LocalCluster, command, redis_cluster
from offload_registry import SessionRegistry
from offload_registry.config import TierOptions
from offload_registry.errors import RedisPermissionError
from offload_registry.keys import resolve_identity
from offload_registry.store.keyspace import Keyspace
from test_redis_faults import REGISTRY_COMMANDS, SESSIONS, Workload, described, entry, truth

__all__ = ["redis_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

CLUSTER_EXTRA_COMMANDS = "+cluster|slots +command +asking +spublish +ssubscribe +sunsubscribe "
CLUSTER_COMMANDS = REGISTRY_COMMANDS + CLUSTER_EXTRA_COMMANDS
OPTIONAL = {"config|get", "client|setinfo"}
"""Denials the registry ignores: the eviction-policy check and redis-py's library tag."""


def create_user(cluster: LocalCluster, prefix: str, commands: str) -> str:
    """The ``registry`` user on every node; returns the cluster URL with its credentials."""
    rules = ["reset", "on", ">s3cret-pw", f"~{prefix}:*", "resetchannels", f"&{prefix}:*"]
    for node in cluster.nodes:
        command(node, "ACL", "SETUSER", "registry", *rules, "-@all", *commands.split())
        command(node, "ACL", "LOG", "RESET")
    return cluster.url.replace("redis+cluster://", "redis+cluster://registry:s3cret-pw@")


def denied(cluster: LocalCluster) -> set[str]:
    return {str(e["object"]) for node in cluster.nodes for e in command(node, "ACL", "LOG")}


def opened(root: Path, url: str, prefix: str, **kwargs: Any) -> SessionRegistry:
    return SessionRegistry(
        root, redis_url=url, redis_options=TierOptions(key_prefix=prefix), **kwargs
    )


async def test_the_cluster_acl_serves_a_workload_with_a_reshard_and_no_denial(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    cluster, prefix, workload = redis_cluster, f"acl{uuid4().hex[:8]}", Workload(seed=8)
    url = create_user(cluster, prefix, CLUSTER_COMMANDS)
    async with (
        opened(tmp_path, url, prefix) as writer,
        opened(tmp_path, url, prefix, max_cached=1) as reader,  # evicts: SUNSUBSCRIBE
    ):
        for key in SESSIONS:
            await reader.resolve(key)
        await workload.run(writer, 20)
        # Move the first session's slot key by key while it is written (ASK redirections).
        keys = Keyspace.for_data_root(prefix, tmp_path).session_for(
            resolve_identity(SESSIONS[0], None)
        )
        slot = cluster.slot_of(keys.state)
        source = cluster.master_of_slot(slot)
        target = next(n for n in cluster.nodes[:3] if n is not source)
        mover = threading.Thread(target=cluster.migrate_slot, args=(slot, target, 0.2))
        mover.start()
        manager, n = (await writer.resolve(SESSIONS[0])).manager, 0
        while mover.is_alive():
            n += 1
            await manager.append_entries([entry(f"moving_{n}")])
            await asyncio.sleep(0.02)
        mover.join()
        await workload.run(writer, 20)
        for key in SESSIONS:
            assert described((await reader.resolve(key)).manager) == await truth(tmp_path, key)
        assert writer.tier.invalidations + reader.tier.invalidations > 0  # type: ignore[attr-defined]
    async with opened(tmp_path, url, prefix) as fresh:
        for key in SESSIONS:
            manager = (await fresh.resolve(key)).manager
            assert manager.source == "redis", key
            assert described(manager) == await truth(tmp_path, key)
        assert fresh.tier.stats.errors == 0  # type: ignore[attr-defined]
    assert denied(cluster) <= OPTIONAL


@pytest.mark.parametrize("permission", ["cluster|slots", "command"])
async def test_a_cluster_user_without_a_start_up_permission_gets_an_error_naming_it(
    tmp_path: Path, redis_cluster: LocalCluster, permission: str
) -> None:
    """Regression: redis-py's cluster client reports a NOPERM on CLUSTER SLOTS as "Cluster
    mode is not enabled on this node", which the registry took for an outage: it started,
    and answered from the journals for ever, silently."""
    prefix = f"acl{uuid4().hex[:8]}"
    url = create_user(redis_cluster, prefix, CLUSTER_COMMANDS.replace(f"+{permission} ", ""))
    reg = opened(tmp_path, url, prefix)
    try:
        with pytest.raises(RedisPermissionError) as raised:
            async with reg:
                await (await reg.resolve(SESSIONS[0])).manager.append_entries([entry("x")])
    finally:
        await reg.close()
    assert permission in str(raised.value) and "s3cret-pw" not in str(raised.value)


async def test_a_wrong_password_on_a_cluster_fails_at_start(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    prefix = f"acl{uuid4().hex[:8]}"
    url = create_user(redis_cluster, prefix, CLUSTER_COMMANDS).replace("s3cret-pw", "wrong-pw")
    reg = opened(tmp_path, url, prefix)
    try:
        with pytest.raises(RedisPermissionError) as raised:
            async with reg:
                pass
    finally:
        await reg.close()
    assert "wrong-pw" not in str(raised.value)
