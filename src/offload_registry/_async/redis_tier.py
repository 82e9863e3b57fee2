"""The Redis tier: session snapshots and deltas in Redis hashes, shared by every worker.

Per session (keys from ``store.keyspace``, one Cluster slot): a ``state`` hash holding the
msgpack snapshot (``codec``), the journal and claims positions it reflects, a version and the
epoch it was written in, and a ``deltas`` list of the writes made since. A cold read is one
transaction of plain reads (snapshot and deltas together, one round trip). A write appends
one small delta, chained on the position Redis holds (``lua/delta.lua``), so a gap (a write
Redis missed) is never papered over: the writer replaces the snapshot instead. Readers
always catch up from the journal past the position they got, so a Redis that lags, lost
keys or restarted empty costs time, never correctness.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offload_registry._async import start_checks, tier_scripts
from offload_registry._async._primitives import Thunk, sleep
from offload_registry._async.connection import close_client, is_cluster
from offload_registry._async.health import TierHealth, idempotent
from offload_registry._async.invalidation import InvalidationListener
from offload_registry._async.tier import LoadStatus, publish_nothing
from offload_registry.changes import RebuildTurn, SessionChange, TierSnapshot
from offload_registry.config import TierOptions
from offload_registry.errors import RedisPermissionError  # noqa: F401 - start raises it
from offload_registry.keys import SessionIdentity
from offload_registry.store import script_args
from offload_registry.store.breaker import CircuitBreaker
from offload_registry.store.diagnose import FAILURES as _FAILURES
from offload_registry.store.diagnose import OUTAGE as _OUTAGE
from offload_registry.store.keyspace import Keyspace, RedisSessionKeys
from offload_registry.store.records import (
    Anchor,  # noqa: F401 - the tier API's, re-exported
    TierStats,
    judge_reply,
    queue_read,
)
from offload_registry.store.script_args import WriteStamp
from offload_registry.store.startup import (
    script_text,
    shebang_refused,
)

log = logging.getLogger("offload_registry.redis")

MAX_DELTAS = 256
"""A writer folds the deltas into a new snapshot when a session holds more than this."""
REBUILD_LOCK_MS = 15_000
REBUILD_WAIT_SECONDS = 5.0
NO_WRITER = "-"
"""The writer id of a write no watcher of this process made (a rebuild, a reconcile)."""


class RedisTier:
    """A :class:`~offload_registry._async.tier.SharedTier` over one Redis server."""

    name = "redis"

    def __init__(
        self,
        client: Any,
        keyspace: Keyspace,
        options: TierOptions,
        *,
        description: str,
        root_id: str | None,
        owns_client: bool = True,
        breaker: CircuitBreaker | None = None,
        reconnect: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # Monotonic seconds for the epoch re-check, the rebuild wait and the Sentinel master
        # check (and the default breaker's): injectable, as the registry's and breaker's are.
        self._clock = clock
        self._reconnect = reconnect  # builds a new client of our own (after a fork)
        self._inherited: list[Any] = []  # a parent's clients, never used nor closed here
        self.keyspace = keyspace
        self._options = options
        self.description = description
        self._root_id = root_id
        self._owns_client = owns_client
        self.breaker = breaker or CircuitBreaker(
            reset_after=min(1.0, options.socket_timeout), clock=clock
        )
        self.stats = TierStats()
        self._ttl_ms = options.idle_ttl_seconds * 1000
        # Refresh the idle TTL only when less than 90 % of it remains: reads stay reads.
        self._refresh_below_ms = self._ttl_ms * 9 // 10
        # fakeredis does not understand a script's shebang; a real server is tried with it.
        self._flagged_scripts = not type(client).__module__.startswith("fakeredis")
        self._register_scripts(client)
        self._started = False
        self.origin = uuid.uuid4().hex[:12]  # tells this tier's own invalidations apart
        self._channel = keyspace.channel()
        # On Redis Cluster each session has its own shard channel (SPUBLISH), see invalidation.py.
        self._sharded = is_cluster(client)
        self._closing = False
        # The epoch, and the writes whose announcement is still owed (health.py).
        self._health = TierHealth(
            lambda: self._client,
            keyspace,
            self.breaker,
            clock=clock,
            description=description,
            closing=lambda: self._closing,
            announce_reset=lambda pipe, keys: self._announce(
                pipe, keys, f"{keys.tag} {self.origin} {NO_WRITER} 0"
            ),
        )
        # The watchers of near-cache copies and the listener that marks them stale.
        self._invalidation = InvalidationListener(
            lambda: self._client,
            keyspace,
            options,
            sharded=self._sharded,
            stats=self.stats,
            clock=clock,
            origin=lambda: self.origin,
            closing=lambda: self._closing,
            handler=lambda data: self._on_message(data),  # noqa: PLW0108 - looked up per message
        )
        self.tls_address: tuple[str, int] | None = None
        """``(host, port)`` of a ``rediss://`` server, for telling TLS failures at start
        apart from an outage."""

    def __repr__(self) -> str:
        return f"RedisTier({self.description}, {self.keyspace.base!r})"

    def _register_scripts(self, client: Any) -> None:
        flagged = self._flagged_scripts
        self._publish = client.register_script(script_text("publish.lua", flagged=flagged))
        self._delta = client.register_script(script_text("delta.lua", flagged=flagged))
        self._unlock = client.register_script(script_text("unlock.lua", flagged=flagged))
        self._lease = client.register_script(script_text("lease.lua", flagged=flagged))
        self._claim = client.register_script(script_text("claim.lua", flagged=flagged))

    # -- start-up -----------------------------------------------------------------------
    async def start(self) -> None:
        """Check the server once: permissions, epoch, data root, eviction policy.

        Raises :class:`RedisPermissionError` when the user lacks a needed permission and
        :class:`ConfigurationError` when another data root owns these keys. An unreachable
        server is not an error: the registry answers from the journals until it is back.
        """
        if self._started:
            return
        await start_checks.start(self)
        self._started = True

    # -- reads --------------------------------------------------------------------------
    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        snapshot, _ = await self.load_with_status(identity)
        return snapshot

    async def load_with_status(
        self, identity: SessionIdentity
    ) -> tuple[TierSnapshot | None, LoadStatus]:
        """The session from Redis and how the read went: ``hit``, ``miss``, ``bad`` (a value
        that cannot be used) or ``outage`` (Redis did not answer)."""
        if not self.breaker.allow():
            return None, "outage"
        keys = self.keyspace.session_for(identity)
        try:
            await self._maybe_refresh_epoch()
            reply = await self._idempotent(lambda: self.fetch(keys))
        except _OUTAGE as exc:
            self._failed(exc, "load", keys)
            return None, "outage"
        except ResponseError as exc:  # WRONGTYPE and friends: a bad value is a miss
            await self._succeeded()
            self._bad_value(identity, exc)
            return None, "bad"
        await self._succeeded()
        status, snapshot, problem = judge_reply(reply, self.epoch)
        if status == "undecodable":
            self._bad_value(identity, problem)
            return None, "bad"
        if snapshot is None:
            self.stats.misses += 1
            return None, "miss"
        if 0 <= reply[3] < self._refresh_below_ms:
            await self._touch(keys)
        self.stats.hits += 1
        return snapshot, "hit"

    async def fetch(self, keys: RedisSessionKeys) -> list[Any]:
        """A session's cold read (``store.records.queue_read``) in one round trip, one
        transaction."""
        async with self._client.pipeline(transaction=True) as pipe:
            queue_read(pipe, keys)
            reply: list[Any] = await pipe.execute()
            return reply

    async def _touch(self, keys: RedisSessionKeys) -> None:
        """Refresh the idle TTL of a session's keys together (at most once per interval)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.pexpire(keys.state, self._ttl_ms)
                pipe.pexpire(keys.deltas, self._ttl_ms)
                await pipe.execute()
        except _FAILURES as exc:
            self._failed(exc, "touch", None)

    def _bad_value(self, identity: SessionIdentity, exc: object) -> None:
        self.stats.bad_values += 1
        log.warning(
            "unusable Redis value for %s (%s); rebuilding from the journal",
            identity.session_key,
            exc,
            extra={"session_key": identity.session_key},
        )

    @contextlib.asynccontextmanager
    async def rebuild_lock(
        self, identity: SessionIdentity, status: LoadStatus
    ) -> AsyncIterator[RebuildTurn]:
        """The distributed single flight of a rebuild (``SET NX PX`` with a token): the
        holder rebuilds and publishes, the others poll for its copy and, after
        ``REBUILD_WAIT_SECONDS``, rebuild too. When Redis did not answer there is no lock and
        no publish, so a caller never waits on it twice."""
        if status == "outage" or not self.breaker.allow():
            yield RebuildTurn(None, publish_nothing)
            return
        keys = self.keyspace.session_for(identity)
        token = uuid.uuid4().hex
        try:
            leader = await self._client.set(keys.lock, token, nx=True, px=REBUILD_LOCK_MS)
        except _FAILURES as exc:
            self._failed(exc, "lock", keys)
            yield RebuildTurn(None, publish_nothing)
            return
        try:
            found = None
            if leader and status == "miss":
                # Another worker may have published and released the lock since our miss.
                found, status = await self.load_with_status(identity)
            elif not leader:
                found = await self._wait_for_rebuild(identity)
            # A bad value must be replaced; a plain miss must not overwrite a newer publish.
            mode = "always" if status == "bad" else "if-absent"
            yield RebuildTurn(found, lambda snapshot: self._publish_rebuilt(keys, snapshot, mode))
        finally:
            if leader:
                await self._release(keys, token)

    async def _publish_rebuilt(
        self, keys: RedisSessionKeys, snapshot: TierSnapshot, mode: str
    ) -> None:
        self.stats.rebuilds += 1
        await self._publish_snapshot(keys, snapshot, mode=mode)

    async def _wait_for_rebuild(self, identity: SessionIdentity) -> TierSnapshot | None:
        """Another process holds the rebuild lock: poll for its result, within a budget."""
        self.stats.rebuild_waits += 1
        deadline = self._clock() + REBUILD_WAIT_SECONDS
        delay = 0.005
        while self._clock() < deadline:
            await sleep(delay)
            delay = min(delay * 2, 0.1)
            snapshot = await self.load(identity)
            if snapshot is not None or not self.breaker.allow():
                return snapshot
        return None

    async def _release(self, keys: RedisSessionKeys, token: str) -> None:
        try:
            await self._unlock(keys=[keys.lock], args=[token])
        except _FAILURES as exc:  # it expires by itself
            self._failed(exc, "unlock", keys)

    # -- writes -------------------------------------------------------------------------
    async def publish(
        self,
        identity: SessionIdentity,
        snapshot: TierSnapshot,
        writer: str = NO_WRITER,
        fence: int | None = None,
    ) -> None:
        """Replace the session's snapshot with one read from its journal.

        Durability and concurrency: Redis only, after the journal holds the write; one
        atomic script, which refuses a snapshot behind the one Redis holds (a later writer's
        publish landed first: ``lua/_order.lua``), so Redis never goes back along the
        journal; a refused write is still announced to the other workers."""
        keys = self.keyspace.session_for(identity)
        await self._replace(keys, snapshot, "always", writer, fence)

    async def publish_change(
        self,
        identity: SessionIdentity,
        change: SessionChange,
        snapshot: TierSnapshot,
        writer: str = NO_WRITER,
        fence: int | None = None,
    ) -> None:
        keys = self.keyspace.session_for(identity)
        if not self.breaker.allow():
            self._health.mark_dirty(keys)
            return
        try:
            # A retried delta that had landed is refused as a gap by the chain check, so
            # retrying a reset connection (say, the first call after a restart) is safe.
            call = script_args.delta_call(keys, self.stamp(keys, writer, fence), change)
            reply = await self._idempotent(lambda: self._delta(*call))
        except _FAILURES as exc:
            # Maybe applied, maybe not (a timeout, a reset, READONLY after a failover): never
            # assume either way. After a reset, replace the snapshot (idempotent); after a
            # timeout the server is slow or gone, so only mark the session for
            # reconciliation when Redis is back (readers catch up from the journal meanwhile).
            self._failed(exc, "delta", keys)
            if not isinstance(exc, RedisTimeoutError):
                await self._replace(keys, snapshot, "always", writer, fence)
            return
        await self._succeeded()
        version, detail = int(reply[0]), reply[1]
        if version:
            self.stats.deltas_published += 1
            if int(detail) > MAX_DELTAS:
                await self._publish_snapshot(keys, snapshot, str(version), writer, fence)
            return
        reason = detail.decode() if isinstance(detail, bytes) else str(detail)
        if reason == "fenced":
            # A newer lease holder exists. The journal accepted this write under its lock
            # before that grant was committed, so it stands; Redis just lags by it (readers
            # catch up from the journal, the next writer reseeds the snapshot), but the
            # other workers must still hear of the write.
            self.stats.fenced += 1
            await self._announce_write(keys, writer)
            return
        if reason == "gap":
            self.stats.gaps += 1
        else:  # no snapshot of our epoch: Redis may have restarted and moved to a new one
            await self._refresh_epoch_safely()
        await self._replace(
            keys, snapshot, "always" if reason == "gap" else "if-absent", writer, fence
        )

    async def _replace(
        self,
        keys: RedisSessionKeys,
        snapshot: TierSnapshot,
        mode: str,
        writer: str,
        fence: int | None,
    ) -> None:
        """Publish a writer's full snapshot; when ``publish.lua`` refuses it (another worker
        republished the session under a new epoch, perhaps from the journal before this
        write, or a later writer's snapshot landed first), Redis may lag by this write
        (readers catch up from the journal), but the live copies elsewhere must still hear
        of it."""
        if await self._publish_snapshot(keys, snapshot, mode, writer, fence) == 0:
            await self._announce_write(keys, writer)

    async def _publish_snapshot(
        self,
        keys: RedisSessionKeys,
        snapshot: TierSnapshot,
        mode: str,
        writer: str = NO_WRITER,
        fence: int | None = None,
    ) -> int | None:
        """Replace the session's snapshot (``mode``: always, if-absent, or a version to CAS;
        in every mode never by one behind the snapshot held, see ``lua/_order.lua``);
        returns ``publish.lua``'s answer (0: refused), ``None`` when not sent."""
        if not self.breaker.allow():
            self._health.mark_dirty(keys)
            return None
        call = script_args.encoded_publish_call(
            keys, self.stamp(keys, writer, fence), snapshot, mode
        )
        if call is None:
            return None
        marks = self._health.marks
        try:
            written = int(await self._idempotent(lambda: self._publish(*call)))
        except _FAILURES as exc:
            self._failed(exc, "publish", keys)
            return None
        if written > 0:
            self.stats.snapshots_published += 1
            self._health.announced(keys, marks)
        await self._succeeded()
        if written == -1:
            self.stats.fenced += 1  # see publish_change: the journal holds the write
            await self._announce_write(keys, writer)
        return written

    # -- leases and the claim filter (tier_scripts.py) ------------------------------------
    async def lease_call(
        self, identity: SessionIdentity, op: str, holder: str, token: int, ttl_ms: int
    ) -> Any:
        """Run one ``lua/lease.lua`` operation (:func:`tier_scripts.lease_call`: Redis only,
        a grant is usable once the journal's lease record commits it)."""
        return await tier_scripts.lease_call(self, identity, op, holder, token, ttl_ms=ttl_ms)

    async def claim_filter(
        self, identity: SessionIdentity, op: str, groups: list[list[str]]
    ) -> list[int] | None:
        """Run one ``lua/claim.lua`` operation (:func:`tier_scripts.claim_filter`: Redis only,
        holding only facts the journal already made durable)."""
        return await tier_scripts.claim_filter(self, identity, op, groups)

    # -- for the operator tools (offload_registry.ops; many sessions per trip: ops/batch.py) --
    # Not used by the registry itself. Errors are raised to the caller (an operator tool
    # must fail loudly), not absorbed by the breaker.
    @property
    def epoch(self) -> str:
        """The deployment epoch this tier reads and writes in (``store.keyspace``)."""
        return self._health.epoch

    @property
    def idle_ttl_seconds(self) -> int:
        """The idle TTL this tier sets on a session's keys."""
        return self._ttl_ms // 1000

    @property
    def client(self) -> Any:
        """The redis-py client, for operator tools' own read-only commands."""
        return self._client

    @property
    def publish_script(self) -> Any:
        """The registered ``publish.lua`` (``ops.batch`` pipelines it over many sessions)."""
        return self._publish

    async def drop_sessions(self, sessions: Sequence[RedisSessionKeys]) -> int:
        """Delete the Redis copies of many sessions and announce each on the invalidation
        channel, in one round trip; returns how many had a copy.

        Durability and concurrency: journals untouched, so nothing is lost: a reader then
        misses and rebuilds from the journal, and a writer racing the delete finds no anchor
        and republishes a full snapshot. A rebuild lock in flight is left to expire.
        (A tier method, not in ``ops.batch``: the canary drops through the blocking twin.)
        """
        return await self._health.drop(sessions)

    async def _announce_write(self, keys: RedisSessionKeys, writer: str) -> None:
        """Tell other workers a session changed when no script announced it (version 0:
        a reset, never counted as a gap)."""
        try:
            await self._announce(self._client, keys, f"{keys.tag} {self.origin} {writer} 0")
        except _FAILURES as exc:
            self._failed(exc, "announce", keys)

    def stamp(
        self,
        keys: RedisSessionKeys,
        writer: str = NO_WRITER,
        fence: int | None = None,
        *,
        announce: bool = True,
    ) -> WriteStamp:
        """What a write script is told of this tier: its epoch and idle TTL, and (when
        ``announce``) the session's channel and this writer's message prefix."""
        channel = self._channel_of(keys) if announce else ""
        message = f"{keys.tag} {self.origin} {writer}"
        return WriteStamp(self.epoch, self._ttl_ms, channel, message, fence, self._sharded)

    async def _idempotent(self, call: Thunk[Any]) -> Any:
        return await idempotent(call)  # retried on a reset connection, see health.py

    # -- near-cache invalidation ----------------------------------------------------------
    def watch(self, identity: SessionIdentity, name: str, mark_stale: Callable[[], None]) -> None:
        """Call ``mark_stale`` when a write by anyone but watcher ``name`` reaches Redis (and
        after any gap in the invalidation stream); (re)starts this tier's listener."""
        self._invalidation.watch(self.keyspace.session_for(identity).tag, name, mark_stale)

    def unwatch(self, identity: SessionIdentity, name: str) -> None:
        self._invalidation.unwatch(self.keyspace.session_for(identity).tag, name)

    def hears(self, identity: SessionIdentity) -> bool:
        return self._invalidation.hears(self.keyspace.session_for(identity).tag)

    def set_failure_handler(self, drop_near_cache: Callable[[], None]) -> None:
        """Call ``drop_near_cache`` if the invalidation handler itself fails: a bug there
        means no message can be trusted, so the near cache is dropped, not just revalidated."""
        self._invalidation.set_failure_handler(drop_near_cache)

    def _on_message(self, data: Any) -> None:
        """One invalidation message (see :meth:`InvalidationListener.on_message`)."""
        self._invalidation.on_message(data)

    @property
    def invalidations(self) -> int:
        """Invalidations received from writes by other processes (or other tiers)."""
        return self._invalidation.invalidations

    @property
    def _listener(self) -> Any:
        """The background listener (a task, or the sync twin's thread), ``None`` if none."""
        return self._invalidation.task

    def after_fork_in_child(self) -> None:
        # The parent's listener (task or thread) does not exist here; the next watch starts
        # one of our own. A client we built is replaced: redis-py's blocking pools notice a
        # new process, but asyncio ones would share the parent's sockets. The parent's client
        # is kept, unused and unclosed, so that nothing in the child touches its sockets.
        # (A client the application passed in is the application's to handle.)
        if self._owns_client and self._reconnect is not None:
            self._inherited.append(self._client)
            self._client = self._reconnect()
            self._register_scripts(self._client)
        self._invalidation.after_fork_in_child()
        self._health.after_fork_in_child()
        self.origin = uuid.uuid4().hex[:12]

    def _channel_of(self, keys: RedisSessionKeys) -> str:
        """Where writes to a session are announced: the deployment's channel, or on Redis
        Cluster the session's own shard channel (in its slot)."""
        return self.keyspace.session_channel(keys.tag) if self._sharded else self._channel

    def _announce(self, client: Any, keys: RedisSessionKeys, message: str) -> Any:
        """PUBLISH (or on Redis Cluster SPUBLISH) ``message`` on the session's channel, with
        ``client`` (a client or a pipeline)."""
        command = "SPUBLISH" if self._sharded else "PUBLISH"
        return client.execute_command(command, self._channel_of(keys), message)

    # -- health -------------------------------------------------------------------------
    def _failed(self, exc: BaseException, where: str, keys: RedisSessionKeys | None) -> None:
        self.stats.errors += 1
        if isinstance(exc, OutOfMemoryError):
            self.stats.oom += 1
        elif self._flagged_scripts and shebang_refused(exc):
            # A server replaced by one without script flags since start (or down at start).
            self._flagged_scripts = False
            self._register_scripts(self._client)
        if keys is not None and where != "load":
            self._health.mark_dirty(keys)
        self.breaker.record_failure(exc, where)

    async def _succeeded(self) -> None:
        await self._health.succeeded()

    async def _refresh_epoch_safely(self) -> None:
        try:
            await self._health.refresh_epoch()
        except _FAILURES as exc:
            self._failed(exc, "epoch", None)

    async def _maybe_refresh_epoch(self) -> None:
        await self._health.maybe_refresh_epoch()

    async def close(self) -> None:
        self._closing = True
        await self._invalidation.close()
        await self._health.close()
        if self._owns_client:
            await close_client(self._client)
