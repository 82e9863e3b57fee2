"""Invalidations: following the announcements of writes, so near-cache copies go stale.

A write is announced on a channel (``<tag> <origin> <writer> <version>``, see
``redis_tier``); :class:`InvalidationListener`, owned by the tier, keeps the watchers of each
session (one per near-cache copy), follows the channel in the background and marks the
copies of a session stale when another writer's announcement arrives, or all of them when
the stream breaks: messages sent while we were not subscribed are lost, so nothing cached
before a (re)subscription is trusted without a revalidation. :meth:`~InvalidationListener.hears`
says whether announcements reach us now.

Plain Redis and Sentinel: one ``SUBSCRIBE`` to the deployment's channel
(:meth:`~InvalidationListener._follow_channel`), pinged when quiet (``store.heartbeat``),
and on Sentinel resubscribed when the master moved.

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
import threading
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis_client
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from offload_registry._async._primitives import running, sleep, spawn, stop
from offload_registry._async.connection import master_moved
from offload_registry.config import TierOptions
from offload_registry.store.heartbeat import Heartbeat
from offload_registry.store.keyspace import Keyspace
from offload_registry.store.records import TierStats, _Resubscribe

log = logging.getLogger("offload_registry.redis")

_FAILURES = (RedisError, RedisClusterException, OSError)

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

    async def follow(
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
                await self._topology()
                while not closing():
                    await self._sync(wanted())
                    await self._poll(on_message, on_subscribed)
                    delay = 0.05
            except (RedisError, RedisClusterException, OSError, ValueError, _Resubscribe) as exc:
                on_gap()
                log.debug("shard invalidation listener: %s; resubscribing", exc)
            except Exception:  # a failing handler must not leave copies trusted
                (on_failure or on_gap)()
                log.exception("invalidation listener failed; the near cache is dropped")
            finally:
                await self._close_all()
            if not closing():
                self.restarts += 1
                self._refresh = True
                await sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _topology(self) -> None:
        """Refresh the client's slot map after a break (or when it never loaded one)."""
        if self._refresh or not self._cluster.nodes_manager.slots_cache:
            await self._cluster.nodes_manager.initialize()
            self._refresh = False

    async def _sync(self, wanted: set[str]) -> None:
        for tag in set(self._where) - wanted:
            channel = self._channel_of(tag)
            self._tags.pop(channel.encode(), None)
            pubsub = self._pubsubs.get(self._where.pop(tag))
            if pubsub is not None:
                await pubsub.sunsubscribe(channel)
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
                await pubsub.ssubscribe(channel)

    async def _poll(
        self, on_message: Callable[[Any], None], on_subscribed: Callable[[str], None]
    ) -> None:
        pubsubs = [(n, p) for n, p in self._pubsubs.items() if p.subscribed]
        if not pubsubs:
            await sleep(POLL_SECONDS)
            return
        budget = POLL_SECONDS / len(pubsubs)
        for name, pubsub in pubsubs:
            heartbeat = self._heartbeats[name]
            message = await pubsub.get_message(timeout=budget)
            while message is not None:
                heartbeat.heard()
                self._handle(message, on_message, on_subscribed)
                message = await pubsub.get_message(timeout=0.0)
            # A half-open connection never ends by itself: ping a quiet one (see heartbeat.py).
            if heartbeat.dead():
                raise RedisConnectionError(
                    f"nothing heard from {name} for {heartbeat.silence():.1f} s, a PING "
                    "unanswered; resubscribing"
                )
            if heartbeat.due():
                await pubsub.ping()
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

    async def _close_all(self) -> None:
        for pubsub in self._pubsubs.values():
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        for client in self._clients.values():
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        self._pubsubs.clear()
        self._heartbeats.clear()
        self._clients.clear()
        self._where.clear()
        self._tags.clear()


class InvalidationListener:
    """The watchers of a tier's sessions and the background listener that marks them stale.

    Owned by a :class:`~offload_registry._async.redis_tier.RedisTier`, which delegates its
    ``watch``/``unwatch``/``hears`` to it. ``client()`` is the tier's client now (replaced
    after a fork), ``origin()`` the tier's origin id (its own announcements), ``closing()``
    whether the tier is closing, and ``handler(data)`` is called with every message (the
    tier's ``_on_message``, which comes back to :meth:`on_message`).
    """

    def __init__(
        self,
        client: Callable[[], Any],
        keyspace: Keyspace,
        options: TierOptions,
        *,
        sharded: bool,
        stats: TierStats,
        clock: Callable[[], float],
        origin: Callable[[], str],
        closing: Callable[[], bool],
        handler: Callable[[Any], None],
    ) -> None:
        self._client = client
        self.keyspace = keyspace
        self._options = options
        self._sharded = sharded
        self._stats = stats
        self._clock = clock
        self._origin = origin
        self._closing = closing
        self._handler = handler
        self._channel = keyspace.channel()
        self._watchers: dict[str, dict[str, Callable[[], None]]] = {}
        self._watch_lock = threading.Lock()  # the sync twin's listener thread reads these
        self.task: Any = None
        self.invalidations = 0
        self._versions: dict[str, int] = {}  # last version seen per watched session tag
        # Whether invalidations reach us now: the plain channel's subscription is confirmed
        # (``_hearing_all``), or on Redis Cluster each session's shard subscription is.
        self._hearing_all = False
        self._hearing: set[str] = set()
        self._drop_near_cache: Callable[[], None] | None = None

    def watch(self, tag: str, name: str, mark_stale: Callable[[], None]) -> None:
        """Call ``mark_stale`` when a write by anyone but watcher ``name`` reaches Redis (and
        after any gap in the invalidation stream); (re)starts the listener."""
        with self._watch_lock:
            self._watchers.setdefault(tag, {})[name] = mark_stale
            if not self._closing() and (self.task is None or not running(self.task)):
                self.task = spawn(self._listen)

    def unwatch(self, tag: str, name: str) -> None:
        with self._watch_lock:
            watchers = self._watchers.get(tag)
            if watchers is not None:
                watchers.pop(name, None)
                if not watchers:
                    del self._watchers[tag]
                    self._versions.pop(tag, None)
                    self._hearing.discard(tag)  # a new watch waits for a new subscription

    def after_fork_in_child(self) -> None:
        """The parent's listener (task or thread) does not exist here; the next watch starts
        one of our own."""
        self._watch_lock = threading.Lock()
        self._watchers = {}
        self._versions = {}
        self.task = None
        self._hearing_all = False
        self._hearing = set()

    def _marks(self, tag: str | None, skip: str = "") -> list[Callable[[], None]]:
        with self._watch_lock:
            groups = self._watchers.values() if tag is None else [self._watchers.get(tag, {})]
            return [mark for group in groups for name, mark in group.items() if name != skip]

    def _mark_tag_stale(self, tag: str) -> None:
        for mark_stale in self._marks(tag):
            mark_stale()

    def hears(self, tag: str) -> bool:
        return self._hearing_all or tag in self._hearing

    def _subscribed(self, tag: str | None) -> None:
        """The server confirmed a subscription (``tag``'s shard channel, or with ``None`` the
        deployment's channel): from now on we hear its writes, but what was written before
        was missed, so the copies it covers are revalidated once. (Hearing is noted first:
        a revalidation racing this still sees the mark and catches up again.)"""
        if tag is None:
            with self._watch_lock:
                self._versions.clear()  # start counting gaps afresh
            self._hearing_all = True
            self._mark_all_stale()
        else:
            self._hearing.add(tag)
            self._mark_tag_stale(tag)

    def _deaf(self) -> None:
        """The invalidation stream broke: no copy is trusted until it is subscribed again
        (every resolve revalidates meanwhile)."""
        self._hearing_all = False
        self._hearing.clear()
        self._mark_all_stale()

    def _watched_tags(self) -> set[str]:
        with self._watch_lock:
            return set(self._watchers)

    def _mark_all_stale(self) -> None:
        for mark_stale in self._marks(None):
            mark_stale()

    def on_message(self, data: Any) -> None:
        """``<tag> <origin> <writer> <version>``: mark the tag's copies stale, except the
        writer's own (it already holds its write). Malformed messages are ignored."""
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        parts = text.split(" ")
        if len(parts) != 4:
            log.debug("ignoring a malformed invalidation message: %r", text[:80])
            return
        tag, origin, writer, version = parts
        ours = origin == self._origin()
        if not ours:
            self.invalidations += 1  # writes by other processes (or other tiers)
        self._note_version(tag, int(version) if version.isdigit() else 0)
        for mark_stale in self._marks(tag, skip=writer if ours else ""):
            mark_stale()

    def _note_version(self, tag: str, version: int) -> None:
        """Count a skipped version of a watched session (0: a reset, never a gap)."""
        with self._watch_lock:
            if tag not in self._watchers:
                return
            last = self._versions.get(tag)
            if last is not None and version > last + 1:
                self._stats.version_gaps += 1
            self._versions[tag] = version

    def set_failure_handler(self, drop_near_cache: Callable[[], None]) -> None:
        """Call ``drop_near_cache`` if the invalidation handler itself fails: a bug there
        means no message can be trusted, so the near cache is dropped, not just revalidated."""
        self._drop_near_cache = drop_near_cache

    def _handler_failed(self) -> None:
        self._deaf()
        if self._drop_near_cache is not None:
            self._drop_near_cache()

    async def _listen(self) -> None:
        """Follow the invalidation channel until closed. Whenever the subscription (re)starts,
        every watched session is marked stale: messages sent while we were not subscribed
        are lost, so nothing cached before then can be trusted without a revalidation. If
        the listener ends for any other reason, everything is marked stale too."""
        try:
            if self._sharded:
                await ShardListener(self._client(), self.keyspace.session_channel).follow(
                    self._closing,
                    self._watched_tags,
                    self._handler,
                    self._subscribed,
                    self._deaf,
                    on_failure=self._handler_failed,
                )
            else:
                await self._follow_channel()
        finally:
            if self._closing():
                self._hearing_all = False
                self._hearing.clear()
            else:
                self._deaf()

    async def _follow_channel(self) -> None:
        delay = 0.05
        poll = min(0.5, self._options.socket_timeout)
        while not self._closing():
            pubsub = self._client().pubsub()
            heartbeat = Heartbeat(self._options.socket_timeout)
            try:
                await pubsub.subscribe(self._channel)
                checked = self._clock()
                while not self._closing():
                    message = await pubsub.get_message(timeout=poll)
                    if message is not None:
                        heartbeat.heard()
                        kind = message.get("type")
                        if kind == "message":
                            self._handler(message["data"])
                        elif kind == "subscribe":
                            # Only now does the server deliver our channel's messages: what was
                            # written before may have been missed, so revalidate everything.
                            self._subscribed(None)
                            delay = 0.05
                    if heartbeat.dead():  # a half-open connection never ends by itself
                        raise RedisConnectionError(
                            f"nothing heard on the invalidation subscription for "
                            f"{heartbeat.silence():.1f} s, a PING unanswered; resubscribing"
                        )
                    if heartbeat.due():
                        await pubsub.ping()
                        heartbeat.sent()
                    if self._clock() - checked >= MASTER_CHECK_SECONDS:
                        checked = self._clock()
                        if await master_moved(self._client(), pubsub):  # Sentinel failover
                            raise RedisConnectionError("the master moved; resubscribing")
            except (*_FAILURES, ValueError) as exc:
                self._deaf()
                log.debug("invalidation listener: %s; resubscribing", exc)
            except Exception:  # a failing handler must not leave copies trusted
                self._handler_failed()
                log.exception("invalidation listener failed; the near cache is dropped")
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if not self._closing():
                await sleep(delay)
                delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        """Stop the listener (the tier is closing: ``closing()`` is true already)."""
        if self.task is not None:
            await stop(self.task)
            self.task = None
