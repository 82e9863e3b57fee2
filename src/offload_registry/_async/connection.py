"""Connections: the redis-py client for each URL scheme, and closing it.

:func:`connect` builds the client of a parsed URL (``store.urls``), without redis-py's own
retries (the tier decides what is safe to retry):

* ``redis://`` and ``rediss://`` (TLS): a ``Redis`` client to the URL's host.
* ``unix://``: a ``Redis`` client over a Unix socket.
* ``memory://``: a fakeredis client over an in-process server (``store.memory``).
* ``redis+cluster://h1:p1,h2:p2/`` -> :func:`cluster_client`, a redis-py ``RedisCluster`` over
  those startup nodes. redis-py follows ``MOVED``/``ASK`` redirections and refreshes its slot
  map after a connection error; its own retries are kept few and short
  (:data:`CLUSTER_RETRIES`), enough to ride the redirections and refreshes that follow a
  failover or a reshard, while a master that is down for longer is the tier's business (its
  circuit breaker answers from the journals meanwhile).
* ``redis+sentinel://s1:p1,s2:p2/service`` -> :func:`sentinel_client`, the client of
  ``Sentinel(...).master_for(service)``: every new connection asks the sentinels for the
  current master, and a connection to a demoted master fails (``READONLY``) and is replaced.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import redis.asyncio as redis_client
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError
from offload_registry.store.memory import memory_server
from offload_registry.store.urls import RedisTarget

CLUSTER_RETRIES = 3
"""redis-py's own retries of one cluster command (connection errors, CLUSTERDOWN, TRYAGAIN),
each after a slot-map refresh, with 50-500 ms jittered backoff."""


def connect(target: RedisTarget, options: TierOptions) -> Any:
    """A redis-py client for ``target`` (hiredis-backed when installed), without redis-py's
    own retries: the tier decides what is safe to retry. (``redis+cluster://`` and
    ``redis+sentinel://``: see below; a cluster client keeps a few short retries of its own
    to follow redirections and slot-map refreshes.)"""
    common: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "username": target.username,
        "password": target.password,
        "db": target.db,
        "client_name": "offload-registry",
    }
    if target.scheme == "memory":
        server = memory_server(target.redacted)  # first: says which extra to install
        import fakeredis  # noqa: PLC0415 - optional extra, checked by memory_server

        return fakeredis.FakeAsyncRedis(server=server)
    if target.scheme == "unix":
        return redis_client.Redis(unix_socket_path=target.socket_path, **common)
    if target.scheme in ("redis", "rediss"):
        host, port = target.hosts[0]
        tls: dict[str, Any] = {}
        if target.tls:
            tls = {
                "ssl": True,
                "ssl_ca_certs": options.ssl_ca_certs,
                "ssl_certfile": options.ssl_certfile,
                "ssl_keyfile": options.ssl_keyfile,
            }
        return redis_client.Redis(host=host, port=port, **common, **tls)
    if target.scheme == "redis+cluster":
        return cluster_client(target, options, common)
    if target.scheme == "redis+sentinel":
        return sentinel_client(target, options, common)
    raise ConfigurationError(f"{target.scheme}:// is not supported by this build")


def cluster_client(target: RedisTarget, options: TierOptions, common: dict[str, Any]) -> Any:
    """A ``RedisCluster`` over the URL's startup nodes, with the tier's timeouts, credentials
    and TLS settings (``common``, without ``db`` and the per-connection retry)."""
    kwargs = {k: v for k, v in common.items() if k not in ("db", "retry")}
    return RedisCluster(
        startup_nodes=[cast(Any, ClusterNode)(host, port) for host, port in target.hosts],
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), CLUSTER_RETRIES),
        **kwargs,
    )


def sentinel_client(target: RedisTarget, options: TierOptions, common: dict[str, Any]) -> Any:
    """The master of ``target.service_name``, as the URL's sentinels name it now."""
    query = dict(target.query)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
    }
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"]
        sentinel_kwargs["username"] = query.get("sentinel_username")
    sentinel = cast(Any, Sentinel)(
        [tuple(host) for host in target.hosts], sentinel_kwargs=sentinel_kwargs, **common
    )
    return cast(Any, sentinel).master_for(target.service_name or "", redis_class=redis_client.Redis)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


async def close_client(client: Any) -> None:
    """Close a client and, for a Sentinel master client, its connections to the sentinels."""
    pool = getattr(client, "connection_pool", None)
    await client.aclose()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            with contextlib.suppress(RedisError, OSError):
                await sentinel.aclose()


async def master_moved(client: Any, pubsub: Any) -> bool:
    """True when ``pubsub`` (of ``client``) is connected to a server that is no longer the
    master the sentinels name (a Sentinel failover that left the old connection open)."""
    pool = getattr(client, "connection_pool", None)
    connection = getattr(pubsub, "connection", None)
    if not isinstance(pool, SentinelConnectionPool) or connection is None:
        return False
    host, port = await cast(Any, pool).get_master_address()
    return (str(connection.host), int(connection.port)) != (str(host), int(port))
