# GENERATED from src/offload_registry/_async/cluster.py by scripts/unasync.py. Do not edit.
"""Following invalidations on a Redis Cluster (the clients themselves: ``connection.py``).

Invalidations on a cluster (:class:`ShardListener`): a plain ``PUBLISH`` on a cluster is
broadcast over the cluster bus to every node, and a script may only ``SPUBLISH`` to a shard
channel of its own slot (checked on Redis 7.0 and Valkey 9: another slot is refused with
"non local key"). So each session has its own shard channel, carrying the session's hash tag
(``Keyspace.session_channel``); the write scripts ``SPUBLISH`` to it in the same atomic step
as the write, and the message travels only from the slot's master to its subscribers. A
registry ``SSUBSCRIBE``s, on the master owning each slot, to the channels of the sessions
its near cache holds, so it receives only what it caches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis as redis_client
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from offload_registry._sync._primitives import sleep
from offload_registry.store.heartbeat import Heartbeat
from offload_registry.store.records import _Resubscribe

log = logging.getLogger("offload_registry.redis")

POLL_SECONDS = 0.05
"""One sweep over every node's subscription waits at most this long: a new watch is
subscribed, and a message on a quiet node is read, within about this delay."""
MASTER_CHECK_SECONDS = 1.0
"""How often the listener of a Sentinel deployment asks whether the master moved."""
_NODE_KWARGS = (
    "username",
    "password",
    "credential_provider",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "client_name",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


def _node_kwargs(cluster: Any) -> dict[str, Any]:
    """Connection settings for a plain client to one node, taken from the cluster client."""
    given = cluster.get_connection_kwargs()
    kwargs = {k: given[k] for k in _NODE_KWARGS if given.get(k) is not None}
    connection_class = given.get("connection_class")
    if given.get("ssl") or "SSL" in getattr(connection_class, "__name__", ""):
        kwargs["ssl"] = True
    return kwargs


class ShardListener:
    """Keeps one ``SSUBSCRIBE`` per watched session, on the master that owns its slot.

    :meth:`follow` runs until ``closing()``. Every subscription confirmed by the server calls
    ``on_subscribed(tag)`` (the session's cached copies must be revalidated: writes made
    before the subscription were not heard). Any break (a node down, a failover, a slot
    moved away, which the server announces with an ``sunsubscribe``) calls ``on_gap()``,
    closes every subscription, refreshes the slot map and subscribes again.
    """

    def __init__(self, cluster: Any, channel_of: Callable[[str], str]) -> None:
        self._cluster = cluster
        self._channel_of = channel_of
        self._kwargs = _node_kwargs(cluster)
        self._pubsubs: dict[str, Any] = {}  # node name -> PubSub
        self._heartbeats: dict[str, Heartbeat] = {}  # node name -> its connection's liveness
        self._timeout = float(self._kwargs.get("socket_timeout") or 1.0)
        self._clients: dict[str, Any] = {}  # node name -> its client
        self._where: dict[str, str] = {}  # tag -> node name
        self._tags: dict[bytes, str] = {}  # channel -> tag
        self._refresh = False
        self.restarts = 0

    def follow(
        self,
        closing: Callable[[], bool],
        wanted: Callable[[], set[str]],
        on_message: Callable[[Any], None],
        on_subscribed: Callable[[str], None],
        on_gap: Callable[[], None],
        *,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        delay = 0.05
        while not closing():
            try:
                self._topology()
                while not closing():
                    self._sync(wanted())
                    self._poll(on_message, on_subscribed)
                    delay = 0.05
            except (RedisError, RedisClusterException, OSError, ValueError, _Resubscribe) as exc:
                on_gap()
                log.debug("shard invalidation listener: %s; resubscribing", exc)
            except Exception:  # a failing handler must not leave copies trusted
                (on_failure or on_gap)()
                log.exception("invalidation listener failed; the near cache is dropped")
            finally:
                self._close_all()
            if not closing():
                self.restarts += 1
                self._refresh = True
                sleep(delay)
                delay = min(delay * 2, 2.0)

    def _topology(self) -> None:
        """Refresh the client's slot map after a break (or when it never loaded one)."""
        if self._refresh or not self._cluster.nodes_manager.slots_cache:
            self._cluster.nodes_manager.initialize()
            self._refresh = False

    def _sync(self, wanted: set[str]) -> None:
        for tag in set(self._where) - wanted:
            channel = self._channel_of(tag)
            self._tags.pop(channel.encode(), None)
            pubsub = self._pubsubs.get(self._where.pop(tag))
            if pubsub is not None:
                pubsub.sunsubscribe(channel)
        groups: dict[str, tuple[Any, list[str]]] = {}
        for tag in wanted - set(self._where):
            node = self._cluster.get_node_from_key(self._channel_of(tag))
            groups.setdefault(node.name, (node, []))[1].append(tag)
        for name, (node, tags) in groups.items():
            pubsub = self._pubsubs.get(name)
            if pubsub is None:
                client: Any = redis_client.Redis(host=node.host, port=node.port, **self._kwargs)
                self._clients[name] = client
                pubsub = self._pubsubs[name] = client.pubsub()
                self._heartbeats[name] = Heartbeat(self._timeout)
            for tag in tags:
                channel = self._channel_of(tag)
                self._where[tag] = name
                self._tags[channel.encode()] = tag
                # One channel per command: the server refuses channels of several slots in one.
                pubsub.ssubscribe(channel)

    def _poll(
        self, on_message: Callable[[Any], None], on_subscribed: Callable[[str], None]
    ) -> None:
        pubsubs = [(n, p) for n, p in self._pubsubs.items() if p.subscribed]
        if not pubsubs:
            sleep(POLL_SECONDS)
            return
        budget = POLL_SECONDS / len(pubsubs)
        for name, pubsub in pubsubs:
            heartbeat = self._heartbeats[name]
            message = pubsub.get_message(timeout=budget)
            while message is not None:
                heartbeat.heard()
                self._handle(message, on_message, on_subscribed)
                message = pubsub.get_message(timeout=0.0)
            # A half-open connection never ends by itself: ping a quiet one (see heartbeat.py).
            if heartbeat.dead():
                raise RedisConnectionError(
                    f"nothing heard from {name} for {heartbeat.silence():.1f} s, a PING "
                    "unanswered; resubscribing"
                )
            if heartbeat.due():
                pubsub.ping()
                heartbeat.sent()

    def _handle(
        self,
        message: dict[str, Any],
        on_message: Callable[[Any], None],
        on_subscribed: Callable[[str], None],
    ) -> None:
        kind = message.get("type")
        if kind == "smessage":
            on_message(message["data"])
            return
        channel = message.get("channel")
        tag = self._tags.get(channel) if isinstance(channel, bytes) else None
        if tag is None:
            return
        if kind == "ssubscribe" and tag in self._where:
            on_subscribed(tag)
        elif kind == "sunsubscribe" and tag in self._where:
            raise _Resubscribe(f"the server dropped {channel!r} (its slot moved)")

    def _close_all(self) -> None:
        for pubsub in self._pubsubs.values():
            with contextlib.suppress(RedisError, OSError):
                pubsub.close()
        for client in self._clients.values():
            with contextlib.suppress(RedisError, OSError):
                client.close()
        self._pubsubs.clear()
        self._heartbeats.clear()
        self._clients.clear()
        self._where.clear()
        self._tags.clear()
