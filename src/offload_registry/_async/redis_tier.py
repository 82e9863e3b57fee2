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

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offload_registry._async._primitives import (
    Thunk,
    run_blocking,
    running,
    sleep,
    spawn,
    stop,
)
from offload_registry._async.connection import close_client, connect, is_cluster
from offload_registry._async.invalidation import InvalidationListener
from offload_registry.changes import APPEND, SessionChange, TierSnapshot
from offload_registry.codec import (
    CodecError,
    Delta,
    encode_delta,
    encode_snapshot,
    encode_watermark,
    watermark_id,
)
from offload_registry.errors import ConfigurationError, RedisPermissionError, RedisUnavailableError
from offload_registry.fsutil import (
    DEFAULT_FILE_MODE,
)
from offload_registry.keys import SessionIdentity
from offload_registry.session_state import SessionState
from offload_registry.store.breaker import CircuitBreaker
from offload_registry.store.diagnose import configuration_problem
from offload_registry.store.keyspace import Keyspace, RedisSessionKeys
from offload_registry.store.records import (
    Anchor,
    TierStats,
    as_text,
    decode_tier_snapshot,
    fence_arg,
)
from offload_registry.store.startup import (
    FLAGS_PROBE,
    check_tls_files,
    data_root_id,
    denial_in,
    plain_text_reply,
    script_text,
    shebang_refused,
    tls_failure,
)
from offload_registry.store.urls import (
    TierOptions,
    apply_url_options,
    parse_redis_url,
    redact,
)

log = logging.getLogger("offload_registry.redis")

MAX_DELTAS = 256
"""A writer folds the deltas into a new snapshot when a session holds more than this."""
REBUILD_LOCK_MS = 15_000
REBUILD_WAIT_SECONDS = 5.0
EPOCH_CHECK_SECONDS = 5.0
REPAIR_SECONDS = 0.2
"""How often the repairer retries announcing writes whose announcement did not certainly
happen (the dirty set); with the listeners' delivery this sets the staleness bound after a
fault heals (README, *Consistency model*)."""
NO_WRITER = "-"
"""The writer id of a write no watcher of this process made (a rebuild, a reconcile)."""
# RedisClusterException is not a RedisError: redis-py raises it when no cluster node answers.
# OutOfMemoryError (a server over its maxmemory refusing writes) is an outage like any other.
_OUTAGE = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    RedisClusterException,
    OSError,
)
_FAILURES = (RedisError, RedisClusterException, OSError)
_ATTEMPTS = 3
"""Attempts of an idempotent call whose connection was refused or reset (``_idempotent``)."""


def _backoff(failed: int) -> float:
    """Seconds to wait after the ``failed``-th failed attempt: 20 ms doubling each time, at
    most 200 ms, plus up to 20 ms of jitter (the schedule tenacity's
    ``wait_exponential(multiplier=0.02, max=0.2) + wait_random(0, 0.02)`` gave)."""
    return min(0.02 * 2.0 ** (failed - 1), 0.2) + random.uniform(0, 0.02)


_policy_warned = False


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
        self._epoch = ""
        self._epoch_checked = float("-inf")
        self._started = False
        # Sessions written while their announcement did not certainly happen (a timeout, an
        # outage, an open breaker): the repairer announces them once Redis answers again.
        self._dirty: set[RedisSessionKeys] = set()
        self._dirty_marks = 0  # counts _mark_dirty calls (a publish clears only older marks)
        self._repairer: Any = None
        self.origin = uuid.uuid4().hex[:12]  # tells this tier's own invalidations apart
        self._channel = keyspace.channel()
        # On Redis Cluster each session has its own shard channel (SPUBLISH), see invalidation.py.
        self._sharded = is_cluster(client)
        self._publish_mode = "sharded" if self._sharded else "plain"
        self._closing = False
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

    async def _load_scripts(self) -> None:
        """Load every script; a server that cannot run a shebang (older than Redis 7, or
        fakeredis, which compiles a script only when it runs it) gets them without it."""
        try:
            if self._flagged_scripts:  # a read-only flagged script runs even over maxmemory
                probe = self._client.register_script(FLAGS_PROBE)
                await probe(keys=[self.keyspace.marker()])
        except ResponseError as exc:
            if not shebang_refused(exc):
                raise
            log.warning(
                "this Redis does not support script flags (Redis 7+); scripts run unflagged",
                extra={"redis": self.description},
            )
            self._flagged_scripts = False
            self._register_scripts(self._client)
        for script in (self._publish, self._delta, self._unlock, self._lease, self._claim):
            await self._client.script_load(script.script)

    # -- start-up -----------------------------------------------------------------------
    async def start(self) -> None:
        """Check the server once: permissions, epoch, data root, eviction policy.

        Raises :class:`RedisPermissionError` when the user lacks a needed permission and
        :class:`ConfigurationError` when another data root owns these keys. An unreachable
        server is not an error: the registry answers from the journals until it is back.
        """
        if self._started:
            return
        try:
            await self._client.ping()
            await self._refresh_epoch()
            await self._check_deployment()
            await self._warn_about_eviction_policy()
            await self._load_scripts()
            await self._probe_permissions()
        except OutOfMemoryError as exc:
            # Over maxmemory (the marker or deployment key cannot be created, the probe
            # cannot write): an outage like any other, ridden through on the journals. The
            # permission probe is skipped, as when the server is down at start.
            self._failed(exc, "start", None)
        except (NoPermissionError, AuthenticationError) as exc:
            raise self._permission_error(exc) from exc
        except ResponseError as exc:
            if "NOPERM" in str(exc):
                raise self._permission_error(exc) from exc
            problem = configuration_problem(exc)
            if problem is None:
                raise
            raise ConfigurationError(f"cannot use Redis at {self.description}: {problem}") from exc
        except ConfigurationError:
            raise
        except _FAILURES as exc:  # down, read-only replica, failing over: later
            denied = denial_in(exc)
            if denied is not None:  # a cluster client wraps what it could not run
                raise self._permission_error(denied) from exc
            # A wrong password, database or server mode never heals: refuse it now rather
            # than answer from the journals for ever.
            problem = configuration_problem(exc)
            if problem is not None:
                raise ConfigurationError(
                    f"cannot use Redis at {self.description}: {problem}"
                ) from exc
            await self._check_tls_handshake(exc)
            self.breaker.record_failure(exc, "start")
        self._started = True

    async def _check_tls_handshake(self, exc: BaseException) -> None:
        """Raise :class:`ConfigurationError` when a TLS start failed because of TLS (a bad
        certificate, or a server that speaks plain text, which makes the handshake hang
        until the timeout): retrying cannot fix either, so it must not read as an outage."""
        if self.tls_address is None or not isinstance(exc, _OUTAGE):
            return
        reason = tls_failure(exc)
        if reason is not None:
            raise ConfigurationError(
                f"TLS handshake with {self.description} failed: {reason}"
            ) from exc
        host, port = self.tls_address
        reply = await run_blocking(plain_text_reply, host, port, self._options.connect_timeout)
        if reply[:1] in (b"+", b"-"):  # +PONG, -NOAUTH, -ERR: a RESP server without TLS
            raise ConfigurationError(
                f"{self.description} is a rediss:// URL but the server at {host}:{port} "
                "speaks plain text (no TLS): use redis://, or enable TLS on the server"
            ) from exc

    def _permission_error(self, exc: Exception) -> RedisPermissionError:
        problem = configuration_problem(exc)
        if problem is not None and "permission" not in problem:  # a password problem
            return RedisPermissionError(f"cannot use Redis at {self.description}: {problem}")
        return RedisPermissionError(
            f"the Redis user of {self.description} lacks a permission the registry needs: {exc}"
        )

    async def _probe_permissions(self) -> None:
        """Exercise every command the registry uses, once, on a probe session: ACLs check
        the commands a script runs only when it runs them, and a missing permission must
        fail here, loudly, not later as a silent fallback to the journals."""
        probe = self.keyspace.session("probe", "start")
        snapshot = encode_snapshot(SessionState(), set(), None, 0)
        delta = encode_delta(Delta(APPEND, [], [], None))
        state_keys = [probe.state, probe.deltas, probe.fence]
        lease_keys = [probe.lease, probe.fence]
        steps: list[tuple[str, Thunk[Any]]] = [
            (
                "publish.lua (evalsha, get, type, del, hget, hset, hincrby, pexpire)",
                lambda: self._publish(
                    keys=state_keys,
                    args=[self._epoch, snapshot, "", "", b"", 60_000, "always", "", "", "0"],
                ),
            ),
            (
                "delta.lua (evalsha, get, hmget, llen, rpush, hset, hincrby, pexpire)",
                lambda: self._delta(
                    keys=state_keys, args=[self._epoch, "jwm", "", "", delta, 60_000, "", "", "0"]
                ),
            ),
            (
                "lease.lua (evalsha, get, set, pttl, pexpire, del)",
                lambda: self._probe_lease(lease_keys),
            ),
            (
                "claim.lua (evalsha, hexists, hset, pexpire)",
                lambda: self._probe_claims(probe.claims),
            ),
            ("a cold read (multi, exec, hmget, hget, lrange, pttl)", lambda: self.fetch(probe)),
            (
                f"invalidations (publish to the channel {self._channel_of(probe)})",
                lambda: self._announce(self._client, probe, f"{probe.tag} {self.origin} - 0"),
            ),
            ("unlock.lua (evalsha, get, del)", lambda: self._unlock(keys=[probe.lock], args=["x"])),
        ]
        try:
            for name, step in steps:
                try:
                    await step()
                except OutOfMemoryError:
                    raise  # not a permission: the server is full (start treats it as an outage)
                except ResponseError as exc:
                    raise RedisPermissionError(
                        f"the Redis user of {self.description} cannot run {name}: {exc}"
                    ) from exc
        finally:
            await self._client.delete(*probe.all)

    async def _probe_lease(self, keys: list[str]) -> None:
        await self._lease(keys=keys, args=["acquire", "probe", 60_000, 0, 60_000])
        await self._lease(keys=keys, args=["renew", "probe", 60_000, 1, 60_000])
        await self._lease(keys=keys, args=["release", "probe", 60_000, 1, 60_000])

    async def _probe_claims(self, key: str) -> None:
        await self._claim(keys=[key], args=["filter", 60_000, 1, "x"])
        await self._claim(keys=[key], args=["commit", 60_000, "x"])

    async def _refresh_epoch(self) -> None:
        marker = self.keyspace.marker()
        epoch = await self._client.get(marker)
        if epoch is None:
            await self._client.set(marker, uuid.uuid4().hex, nx=True)
            epoch = await self._client.get(marker)
            if self._epoch:
                log.warning(
                    "Redis lost the registry's data (epoch marker missing); sessions are "
                    "rebuilt from their journals as they are resolved",
                    extra={"redis": self.description},
                )
        self._epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        self._epoch_checked = self._clock()

    async def _check_deployment(self) -> None:
        if self._root_id is None:
            return
        key = self.keyspace.deployment_key()
        owner = await self._client.get(key)
        if owner is None:  # read first: a server over maxmemory still answers the check
            await self._client.set(key, self._root_id, nx=True)
            owner = await self._client.get(key)
        owner_id = owner.decode() if isinstance(owner, bytes) else owner
        if owner_id != self._root_id:
            pattern = self.keyspace.pattern()
            # The usual cause: the data root was deleted and made again at the same path (a
            # new id file), so the Redis copies describe journals that are gone. Say how out.
            raise ConfigurationError(
                f"Redis keys {pattern!r} belong to another data root (id {owner_id}, this "
                f"one is {self._root_id}). If this data root was deleted or recreated at the "
                "same path, those copies are stale: delete them (as an admin user: "
                f"redis-cli --scan --pattern '{pattern}' | xargs redis-cli unlink) and run "
                "`offload-registry warm`; if two data roots share this path and prefix, give "
                "each its own --key-prefix"
            )

    async def _warn_about_eviction_policy(self) -> None:
        global _policy_warned  # noqa: PLW0603 - once per process, not per registry
        try:
            config = await self._client.config_get("maxmemory*")
        except ResponseError:  # CONFIG is often denied on managed servers: nothing to say
            return
        policy = str(config.get("maxmemory-policy", ""))
        limited = str(config.get("maxmemory", "0")) not in ("0", "")
        if limited and policy == "noeviction" and not _policy_warned:
            _policy_warned = True
            log.warning(
                "Redis maxmemory-policy is noeviction: at maxmemory, writes to Redis fail and "
                "the registry falls back to the journals; allkeys-lru is recommended (an "
                "evicted session only becomes cold, never wrong)",
                extra={"redis": self.description},
            )

    # -- reads --------------------------------------------------------------------------
    async def load(self, identity: SessionIdentity) -> TierSnapshot | None:
        snapshot, _ = await self._load_with_status(identity)
        return snapshot

    async def _load_with_status(self, identity: SessionIdentity) -> tuple[TierSnapshot | None, str]:
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
        try:
            snapshot = self._snapshot_from(reply)
        except (CodecError, ValueError, TypeError, AttributeError) as exc:
            # Undecodable or foreign values (or a client with decode_responses=True).
            self._bad_value(identity, exc)
            return None, "bad"
        if snapshot is None:
            self.stats.misses += 1
            return None, "miss"
        if 0 <= reply[3] < self._refresh_below_ms:
            await self._touch(keys)
        self.stats.hits += 1
        return snapshot, "hit"

    def _snapshot_from(self, reply: list[Any]) -> TierSnapshot | None:
        (epoch, claims_watermark, recorded), snap, deltas, _ = reply
        if snap is None or epoch is None or epoch.decode("ascii", "replace") != self._epoch:
            return None
        if recorded is None or int(recorded) != len(deltas):
            # The deltas list was evicted or expired apart from its snapshot: a gap.
            return None
        return decode_tier_snapshot(snap, claims_watermark or b"", deltas)

    async def fetch(self, keys: RedisSessionKeys) -> list[Any]:
        """One round trip, one transaction of plain reads: ``[[epoch, claims watermark,
        recorded delta count], snapshot, deltas, remaining TTL in ms]`` (no script, so the
        large snapshot is never copied through Lua and a read never writes)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.state, "epoch", "cwmb", "deltas")
            pipe.hget(keys.state, "snap")
            pipe.lrange(keys.deltas, 0, -1)
            pipe.pttl(keys.state)
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

    def _bad_value(self, identity: SessionIdentity, exc: Exception) -> None:
        self.stats.bad_values += 1
        log.warning(
            "unusable Redis value for %s (%s); rebuilding from the journal",
            identity.session_key,
            exc,
            extra={"session_key": identity.session_key},
        )

    async def load_or_rebuild(
        self, identity: SessionIdentity, rebuild: Thunk[TierSnapshot]
    ) -> tuple[TierSnapshot, bool]:
        snapshot, status = await self._load_with_status(identity)
        if snapshot is not None:
            return snapshot, True
        if status == "outage" or not self.breaker.allow():
            # Redis did not answer: no lock, no publish, so a call never waits on it twice.
            return await rebuild(), False
        keys = self.keyspace.session_for(identity)
        token = uuid.uuid4().hex
        try:
            leader = await self._client.set(keys.lock, token, nx=True, px=REBUILD_LOCK_MS)
        except _FAILURES as exc:
            self._failed(exc, "lock", keys)
            return await rebuild(), False
        if leader and status == "miss":
            # Another worker may have published and released the lock since our miss.
            snapshot, status = await self._load_with_status(identity)
            if snapshot is not None:
                await self._release(keys, token)
                return snapshot, True
        elif not leader:
            waited = await self._wait_for_rebuild(identity)
            if waited is not None:
                return waited, True
        try:
            snapshot = await rebuild()
            self.stats.rebuilds += 1
            # A bad value must be replaced; a plain miss must not overwrite a newer publish.
            mode = "always" if status == "bad" else "if-absent"
            await self._publish_snapshot(keys, snapshot, mode=mode)
            return snapshot, False
        finally:
            if leader:
                await self._release(keys, token)

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
        keys = self.keyspace.session_for(identity)
        await self._publish_snapshot(keys, snapshot, "always", writer, fence)

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
            self._mark_dirty(keys)
            return
        delta = Delta(change.kind, change.ids, change.statuses, change.watermark)
        chained = "jwm" if change.kind == APPEND else "cwm"
        try:
            # A retried delta that had landed is refused as a gap by the chain check, so
            # retrying a reset connection (say, the first call after a restart) is safe.
            args = [
                self._epoch,
                chained,
                watermark_id(change.base),
                watermark_id(change.watermark),
                encode_delta(delta),
                self._ttl_ms,
                self._channel_of(keys),
                f"{keys.tag} {self.origin} {writer}",
                fence_arg(fence),
                self._publish_mode,
            ]
            reply = await self._idempotent(
                lambda: self._delta(keys=[keys.state, keys.deltas, keys.fence], args=args)
            )
        except _FAILURES as exc:
            # Maybe applied, maybe not (a timeout, a reset, READONLY after a failover): never
            # assume either way. After a reset, replace the snapshot (idempotent); after a
            # timeout the server is slow or gone, so only mark the session for
            # reconciliation when Redis is back (readers catch up from the journal meanwhile).
            self._failed(exc, "delta", keys)
            if not isinstance(exc, RedisTimeoutError):
                await self._publish_snapshot(keys, snapshot, "always", writer, fence)
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
        mode = "always" if reason == "gap" else "if-absent"
        if await self._publish_snapshot(keys, snapshot, mode, writer, fence) == 0:
            # Refused: another worker republished the session under the new epoch (from the
            # journal, perhaps before this write). Redis may lag by this write (readers catch
            # up from the journal), but the live copies elsewhere must still hear of it.
            await self._announce_write(keys, writer)

    async def _publish_snapshot(
        self,
        keys: RedisSessionKeys,
        snapshot: TierSnapshot,
        mode: str,
        writer: str = NO_WRITER,
        fence: int | None = None,
    ) -> int | None:
        """Replace the session's snapshot (``mode``: always, if-absent, or a version to CAS);
        returns ``publish.lua``'s answer (0: the mode refused it), ``None`` when not sent."""
        if not self.breaker.allow():
            self._mark_dirty(keys)
            return None
        args = self._snapshot_args(keys, snapshot, mode, writer, fence, announce=True)
        if args is None:
            return None
        marks = self._dirty_marks
        try:
            written = int(
                await self._idempotent(
                    lambda: self._publish(keys=[keys.state, keys.deltas, keys.fence], args=args)
                )
            )
        except _FAILURES as exc:
            self._failed(exc, "publish", keys)
            return None
        if written > 0:
            self.stats.snapshots_published += 1
            if self._dirty_marks == marks:  # announced whole: nothing older left to repair
                self._dirty.discard(keys)
        await self._succeeded()
        if written == -1:
            self.stats.fenced += 1  # see publish_change: the journal holds the write
            await self._announce_write(keys, writer)
        return written

    # -- leases -----------------------------------------------------------------------------
    async def lease_call(
        self, identity: SessionIdentity, op: str, holder: str, token: int, ttl_ms: int
    ) -> Any:
        """Run one ``lua/lease.lua`` operation; ``None`` when Redis cannot answer (the
        journal's lease record then arbitrates). Not retried: a grant is not idempotent.

        Durability and concurrency: one atomic script on the session's slot, in Redis only (a
        grant becomes usable only once the journal's lease record commits it).
        """
        if not self.breaker.allow():
            return None
        keys = self.keyspace.session_for(identity)
        try:
            reply = await self._lease(
                keys=[keys.lease, keys.fence], args=[op, holder, ttl_ms, token, self._ttl_ms]
            )
        except _FAILURES as exc:
            self._failed(exc, "lease", None)
            return None
        await self._succeeded()
        return reply

    # -- the claim filter ---------------------------------------------------------------------
    async def claim_filter(
        self, identity: SessionIdentity, op: str, groups: list[list[str]]
    ) -> list[int] | None:
        """Run one ``lua/claim.lua`` operation over id groups (each id with its forms).

        ``filter`` answers the indexes of the groups none of whose forms is known to be
        committed (only those need the journal's lock); ``commit`` records forms the journal
        now holds. ``None`` when Redis cannot answer: the journal's claims record decides
        alone, as it always does in the end.

        Durability and concurrency: one atomic script on the session's slot, in Redis only,
        holding only facts the journal already made durable; a lost commit costs the next
        claimer a trip to the journal's lock, never a double win.
        """
        if not self.breaker.allow():
            return None
        keys = self.keyspace.session_for(identity)
        args: list[Any] = [op, self._ttl_ms]
        for group in groups:
            if op == "filter":
                args.append(len(group))
            args.extend(group)
        try:
            reply = await self._claim(keys=[keys.claims], args=args)
        except _FAILURES as exc:
            self._failed(exc, "claim", None)
            return None
        await self._succeeded()
        return [int(i) - 1 for i in reply] if op == "filter" else []

    # -- operator tools: many sessions per round trip (offload_registry.ops) -----------------
    # Not used by the registry itself. Errors are raised to the caller (an operator tool
    # must fail loudly), not absorbed by the breaker.
    @property
    def epoch(self) -> str:
        """The deployment epoch this tier reads and writes in (``store.keyspace``)."""
        return self._epoch

    @property
    def idle_ttl_seconds(self) -> int:
        """The idle TTL this tier sets on a session's keys."""
        return self._ttl_ms // 1000

    @property
    def client(self) -> Any:
        """The redis-py client, for operator tools' own read-only commands."""
        return self._client

    async def read_anchors(self, sessions: Sequence[RedisSessionKeys]) -> list[Anchor]:
        """The anchors of many sessions in one pipelined round trip (plain reads, no
        script; a value of the wrong type reads as ``Anchor(wrong_type=True)``)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for keys in sessions:
                pipe.hmget(keys.state, "epoch", "jwm", "cwm", "ver", "deltas")
                pipe.llen(keys.deltas)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [Anchor.parse(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]

    async def fetch_many(self, sessions: Sequence[RedisSessionKeys]) -> list[Any]:
        """:meth:`fetch` for many sessions in one pipelined round trip (not one transaction:
        a session written meanwhile may read torn; callers re-check a difference with
        :meth:`fetch`). A failed read (``WRONGTYPE``) is its ``ResponseError``."""
        async with self._client.pipeline(transaction=False) as pipe:
            for keys in sessions:
                pipe.hmget(keys.state, "epoch", "cwmb", "deltas")
                pipe.hget(keys.state, "snap")
                pipe.lrange(keys.deltas, 0, -1)
                pipe.pttl(keys.state)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        out: list[Any] = []
        for i in range(0, len(replies), 4):
            reply = replies[i : i + 4]
            failed = next((r for r in reply if isinstance(r, Exception)), None)
            out.append(failed if failed is not None else reply)
        return out

    def read_reply(self, reply: Any) -> tuple[str, TierSnapshot | None]:
        """How a reader would take a :meth:`fetch` reply: ``("ok", snapshot)``, or
        ``(reason, None)`` with reason ``missing``, ``stale_epoch``, ``broken_deltas`` (the
        deltas list does not match its recorded length) or ``undecodable``."""
        if isinstance(reply, Exception):
            return "undecodable", None
        (epoch, _, recorded), snap, deltas, _ = reply
        if snap is None and epoch is None:
            return "missing", None
        if epoch is None or epoch.decode("ascii", "replace") != self._epoch:
            return "stale_epoch", None
        if recorded is None or int(recorded) != len(deltas):
            return "broken_deltas", None
        try:
            snapshot = self._snapshot_from(reply)
        except (CodecError, ValueError, TypeError, AttributeError):
            return "undecodable", None
        return ("ok", snapshot) if snapshot is not None else ("undecodable", None)

    async def publish_many(
        self, items: Sequence[tuple[RedisSessionKeys, TierSnapshot, str]], *, announce: bool
    ) -> list[int]:
        """Publish many snapshots read from their journals, in one pipelined round trip, each
        with its ``publish.lua`` mode (``always``, ``if-absent``, or a version to compare and
        set). Returns each new version; 0 where the mode refused, -1 where the snapshot could
        not be encoded (nothing sent for it).

        Durability and concurrency: Redis only, journals untouched; each publish is one
        atomic script call, so a compare-and-set never overwrites a write made after the
        version it names. Announced on the invalidation channel only when ``announce``.
        """
        results = [-1] * len(items)
        sent: list[int] = []
        calls: list[list[Any]] = []
        for i, (keys, snapshot, mode) in enumerate(items):
            args = self._snapshot_args(keys, snapshot, mode, NO_WRITER, None, announce=announce)
            if args is not None:
                calls.append([3, keys.state, keys.deltas, keys.fence, *args])
                sent.append(i)
        replies = await self._pipelined_evalsha(self._publish, calls) if calls else []
        for i, reply in zip(sent, replies, strict=True):
            results[i] = int(reply)
        self.stats.snapshots_published += sum(1 for r in results if r > 0)
        return results

    async def _pipelined_evalsha(self, script: Any, calls: list[list[Any]]) -> list[Any]:
        """Run many calls of one script in one pipelined round trip, with plain ``EVALSHA``
        (redis-py's pipelined scripts would first send ``SCRIPT EXISTS``, a command the
        least-privilege ACL does not grant); loads the script and retries once on
        ``NOSCRIPT`` (the server restarted)."""
        for attempt in (1, 2):
            async with self._client.pipeline(transaction=False) as pipe:
                for call in calls:
                    pipe.evalsha(script.sha, *call)
                try:
                    replies: list[Any] = await pipe.execute()
                    return replies
                except NoScriptError:
                    if attempt == 2:
                        raise
                    await self._client.script_load(script.script)
        raise AssertionError("unreachable")

    async def drop_sessions(self, sessions: Sequence[RedisSessionKeys]) -> int:
        """Delete the Redis copies of many sessions and announce each on the invalidation
        channel, in one round trip; returns how many had a copy.

        Durability and concurrency: journals untouched, so nothing is lost: a reader then
        misses and rebuilds from the journal, and a writer racing the delete finds no anchor
        and republishes a full snapshot. A rebuild lock in flight is left to expire.
        """
        async with self._client.pipeline(transaction=False) as pipe:
            for keys in sessions:
                pipe.delete(*keys.data)
                self._announce(pipe, keys, f"{keys.tag} {self.origin} {NO_WRITER} 0")
            replies: list[Any] = await pipe.execute()
        return sum(1 for deleted in replies[0::2] if deleted)

    async def scan_state_keys(self, count: int = 1000) -> AsyncIterator[str]:
        """The ``state`` key of every session of this deployment (``SCAN MATCH``, never
        ``KEYS``: the server never blocks; a key may be reported twice)."""
        pattern = self.keyspace.state_pattern()
        async for key in self._client.scan_iter(match=pattern, count=count):
            yield as_text(key)

    async def _announce_write(self, keys: RedisSessionKeys, writer: str) -> None:
        """Tell other workers a session changed when no script announced it (version 0:
        a reset, never counted as a gap)."""
        try:
            await self._announce(self._client, keys, f"{keys.tag} {self.origin} {writer} 0")
        except _FAILURES as exc:
            self._failed(exc, "announce", keys)

    def _snapshot_args(
        self,
        keys: RedisSessionKeys,
        snapshot: TierSnapshot,
        mode: str,
        writer: str,
        fence: int | None,
        *,
        announce: bool,
    ) -> list[Any] | None:
        """The ``publish.lua`` arguments for one snapshot; ``None`` (logged) when it cannot be
        encoded."""
        try:
            packed = encode_snapshot(snapshot.state, snapshot.claimed, snapshot.watermark, 0)
        except CodecError as exc:
            log.error("cannot encode a snapshot for Redis: %s", exc)
            return None
        return [
            self._epoch,
            packed,
            watermark_id(snapshot.watermark),
            watermark_id(snapshot.claims_watermark),
            encode_watermark(snapshot.claims_watermark),
            self._ttl_ms,
            mode,
            self._channel_of(keys) if announce else "",
            f"{keys.tag} {self.origin} {writer}",
            fence_arg(fence),
            self._publish_mode,
        ]

    async def _idempotent(self, call: Thunk[Any]) -> Any:
        """Run an idempotent call, retrying a refused or reset connection (the server
        restarting) with jittered exponential backoff; timeouts are not retried, so a call
        never waits much beyond the socket timeout.

        A plain loop (at most ``_ATTEMPTS`` attempts, :func:`_backoff` between them): the
        tenacity loop it replaces cost ~50 us to build on every read, failing or not."""
        failed = 0
        while True:
            try:
                return await call()
            except RedisConnectionError:
                failed += 1
                if failed >= _ATTEMPTS:
                    raise
            await sleep(_backoff(failed))

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
        self._dirty = set()  # the parent repairs its own writes
        self._repairer = None
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
            self._mark_dirty(keys)
        self.breaker.record_failure(exc, where)

    def _mark_dirty(self, keys: RedisSessionKeys) -> None:
        """A write to ``keys`` may not have been announced: announce it once Redis answers
        (the next successful call, or the repairer within ``REPAIR_SECONDS``), whatever
        state the breaker is in."""
        self._dirty_marks += 1
        self._dirty.add(keys)
        if not self._closing and (self._repairer is None or not running(self._repairer)):
            self._repairer = spawn(self._repair, name="offload-registry-repairer")

    async def _repair(self) -> None:
        """Retry the dirty set every ``REPAIR_SECONDS`` until it is empty. Runs whatever the
        breaker says (it is the breaker's background probe: nobody waits on it), so one
        timeout, which never opens the breaker, is repaired as soon as Redis answers, and
        an open breaker closes as soon as Redis is back."""
        while self._dirty and not self._closing:
            await sleep(REPAIR_SECONDS)
            if self._dirty and not self._closing and await self._reconcile():
                self.breaker.record_success()

    async def _succeeded(self) -> None:
        if self.breaker.record_success() or self._dirty:
            await self._reconcile()

    async def _refresh_epoch_safely(self) -> None:
        try:
            await self._refresh_epoch()
        except _FAILURES as exc:
            self._failed(exc, "epoch", None)

    async def _maybe_refresh_epoch(self) -> None:
        if self._clock() - self._epoch_checked >= EPOCH_CHECK_SECONDS:
            await self._refresh_epoch()

    async def _reconcile(self) -> bool:
        """After a failed write or an outage: re-read the epoch (the server may be a new one),
        drop the Redis copies of the dirty sessions, so their next reader rebuilds them from
        the journal, and announce each (its writes may never have been), so every live copy
        revalidates. ``True`` when the whole dirty set was repaired."""
        taken: RedisSessionKeys | None = None
        try:
            await self._refresh_epoch()
            for keys in list(self._dirty):
                # Taken before the call: a write failing meanwhile marks the session again.
                taken = keys
                self._dirty.discard(keys)
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.delete(keys.state, keys.deltas)
                    self._announce(pipe, keys, f"{keys.tag} {self.origin} {NO_WRITER} 0")
                    await pipe.execute()
                taken = None
        except _FAILURES as exc:
            if taken is not None:
                self._dirty.add(taken)
            self.breaker.record_failure(exc, "reconcile")
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        await self._invalidation.close()
        if self._repairer is not None:
            await stop(self._repairer)
            self._repairer = None
        if self._owns_client:
            await close_client(self._client)


def open_redis_tier(
    data_root: Path,
    *,
    url: str | None,
    client: Any,
    options: TierOptions,
    read_only: bool,
    file_mode: int = DEFAULT_FILE_MODE,
    clock: Callable[[], float] = time.monotonic,
) -> RedisTier:
    """A tier from a URL (``redis://``, ``rediss://``, ``unix://``, ``memory://``) or from a
    redis-py client the application already owns (then never closed by the registry);
    ``clock`` (monotonic seconds) is the tier's, see :class:`RedisTier`."""
    # The id first: it names the deployment, whatever path this host mounts the root at.
    root_id = data_root_id(data_root, create=not read_only, file_mode=file_mode)
    keyspace = Keyspace.for_data_root(options.key_prefix, data_root, root_id=root_id)
    if client is not None:
        pool = getattr(client, "connection_pool", None)
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ConfigurationError(
                "the registry needs a Redis client that returns bytes (decode_responses=False)"
            )
        return RedisTier(
            client,
            keyspace,
            options,
            description="client",
            root_id=root_id,
            owns_client=False,
            clock=clock,
        )
    if url is None:
        raise ConfigurationError("a Redis tier needs a URL or a client")
    target = parse_redis_url(url)
    options = apply_url_options(target, options)
    check_tls_files(options)
    try:
        client = connect(target, options)
    except ConfigurationError:
        raise
    except (RedisError, RedisClusterException, OSError) as exc:
        # Only a synchronous cluster client connects here (it must learn the slot map from a
        # node before it exists), so there is no client to fall back from: name the cause.
        problem = configuration_problem(exc)
        if problem is not None:
            raise ConfigurationError(f"cannot use Redis at {redact(url)}: {problem}") from exc
        raise RedisUnavailableError(f"cannot reach Redis at {redact(url)}: {exc}") from exc
    tier = RedisTier(
        client,
        keyspace,
        options,
        description=redact(url),
        root_id=root_id,
        reconnect=lambda: connect(target, options),
        clock=clock,
    )
    if target.tls and target.hosts:
        tier.tls_address = target.hosts[0]
    return tier
