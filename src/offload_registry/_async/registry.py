"""SessionRegistry: session key -> OffloadStateManager, through near cache, shared tier, journal.

A resolve answers from the in-process LRU when it can (no I/O at all); otherwise one flight
per key loads the session from the shared tier or rebuilds it from its journal, so concurrent
resolves of one key in this process do the work once.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from offload_registry._async._primitives import SingleFlight
from offload_registry._async.manager import OffloadStateManager
from offload_registry._async.open_redis import open_redis_tier
from offload_registry._async.tier import NoSharedTier, SharedTier
from offload_registry.config import TierOptions, registry_tier_options
from offload_registry.disk.fsutil import DEFAULT_FILE_MODE, FsyncPolicy, check_file_mode
from offload_registry.disk.session_files import SessionFiles, SessionPaths
from offload_registry.errors import ConfigurationError, RegistryClosedError
from offload_registry.keys import is_internal_memory_session, resolve_identity
from offload_registry.near_cache import LruCache
from offload_registry.stats import RegistryStats
from offload_registry.store.keyspace import DEFAULT_PREFIX

log = logging.getLogger(__name__)

DEFAULT_MAX_CACHED = 20
DEFAULT_MAX_CACHED_BYTES = 256 * 1024 * 1024
"""The near cache's default byte bound (approximate, see ``OffloadStateManager.approx_bytes``)."""
DATA_ROOT_ENV = "OFFLOAD_REGISTRY_DATA_ROOT"


def default_data_root() -> Path:
    """``$OFFLOAD_REGISTRY_DATA_ROOT``, else the seed's ``~/.openclaw/context-offload``."""
    configured = os.environ.get(DATA_ROOT_ENV)
    return Path(configured) if configured else Path.home() / ".openclaw" / "context-offload"


_live_registries: weakref.WeakSet[SessionRegistry] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for registry in list(_live_registries):
        registry._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)


def _weigh(ctx: SessionCtx) -> int:
    return ctx.manager.approx_bytes()


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SessionCtx:
    """A resolved session: its key, its manager, and when it was last resolved
    (``last_access_ms``, by the registry's clock: the wall clock unless one was injected).

    The access time is kept in float seconds, so a near-cache hit stores one ``time.time()``
    (cheaper than ``time.time_ns()``'s big integer) and the conversion into milliseconds
    happens only when someone reads it.
    """

    __slots__ = ("_access_s", "manager", "session_key")

    def __init__(self, session_key: str, manager: OffloadStateManager, last_access_ms: int) -> None:
        self.session_key = session_key
        self.manager = manager
        self._access_s = last_access_ms / 1000

    @property
    def last_access_ms(self) -> int:
        # Floor, nudged by 1 us: a float second is exact to well under that today, so an
        # injected clock's whole milliseconds come back exactly (negative ones too: a floor,
        # not int()'s truncation toward zero).
        return math.floor(self._access_s * 1000 + 1e-3)

    @last_access_ms.setter
    def last_access_ms(self, value: int) -> None:
        self._access_s = value / 1000

    def __repr__(self) -> str:
        return (
            f"SessionCtx(session_key={self.session_key!r}, manager={self.manager!r}, "
            f"last_access_ms={self.last_access_ms})"
        )


class SessionRegistry:
    """Routes session keys to per-session managers, with an O(1) LRU of at most ``max_cached``
    entries and about ``max_cached_bytes`` bytes (``None``: no byte bound).

    The shared tier comes from one of ``redis_url``, ``redis_options`` with a URL
    (``TierOptions.from_url``), ``redis_client`` (an application's own redis-py client, never
    closed here) or ``tier``; ``redis_options`` and ``key_prefix`` set the Redis tier's
    settings. How these keywords combine is ``config.registry_tier_options``'s rule (in
    short: one source; ``key_prefix``, when not the default, wins over the options'). Without
    any, the registry works on the journals alone, for one process at a time.

    ``read_only=True`` never writes to the data root (no directories, lock files,
    ``state.json`` or ``sessions-registry.json``); writes then raise ``JournalError``.

    ``clock_ms`` (wall clock, ms) stamps ``last_access_ms`` and times when lease records
    expire, so a test can expire a lease without sleeping.

    Files the registry creates get ``file_mode`` (default ``0o600``, owner only) and
    directories the matching mode (``0o700``; ``0o640`` gives ``0o750``), under the umask.
    Nothing below the data root is followed: a link, or a FIFO or other non-regular file, in
    the place of a file or agent directory raises ``UnsafePathError`` (the data root itself
    may be a link).
    """

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None = None,
        *,
        redis_url: str | None = None,
        max_cached: int = DEFAULT_MAX_CACHED,
        max_cached_bytes: int | None = DEFAULT_MAX_CACHED_BYTES,
        fsync: FsyncPolicy | str = FsyncPolicy.ALWAYS,
        file_mode: int = DEFAULT_FILE_MODE,
        read_only: bool = False,
        key_prefix: str = DEFAULT_PREFIX,
        redis_client: Any = None,
        redis_options: TierOptions | None = None,
        tier: SharedTier | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        options = registry_tier_options(
            redis_url=redis_url,
            redis_client=redis_client,
            tier=tier,
            redis_options=redis_options,
            key_prefix=key_prefix,
        )
        self._data_root = Path(data_root) if data_root is not None else default_data_root()
        if self._data_root.exists() and not self._data_root.is_dir():
            raise ConfigurationError(f"the data root {self._data_root} is not a directory")
        self._fsync = FsyncPolicy.parse(fsync)
        self._file_mode = check_file_mode(file_mode)
        self._read_only = read_only
        if options is not None:
            tier = open_redis_tier(
                self._data_root,
                url=options.url,
                client=redis_client,
                options=options,
                read_only=read_only,
                file_mode=self._file_mode,
            )
        self._tier: SharedTier = tier if tier is not None else NoSharedTier()
        self._started = False
        self._cache: LruCache[str, SessionCtx] = LruCache(
            max_cached, max_bytes=max_cached_bytes, weigh=_weigh
        )
        # Guards the cache's writes (threads in the blocking twin); hits take no lock.
        self._cache_lock = threading.Lock()
        self._entries, self._touch = self._cache.hit_path()
        self._flights: SingleFlight[str, SessionCtx] = SingleFlight()
        self._clock_ms = clock_ms
        self.stats = RegistryStats()
        self._managers: weakref.WeakSet[OffloadStateManager] = weakref.WeakSet()
        self._tier.set_failure_handler(self._drop_near_cache)
        self._clock_ns: Callable[[], int] = (
            time.time_ns if clock_ms is _wall_clock_ms else lambda: clock_ms() * 1_000_000
        )
        # The same clock in float seconds, for hits (see SessionCtx).
        self._clock_s: Callable[[], float] = (
            time.time if clock_ms is _wall_clock_ms else lambda: clock_ms() / 1000
        )
        self._closed = False
        _live_registries.add(self)

    @property
    def data_root(self) -> Path:
        return self._data_root

    @property
    def max_cached(self) -> int:
        return self._cache.max_entries

    # -- resolving ------------------------------------------------------------------------
    async def resolve(self, session_key: str, real_session_id: str | None = None) -> SessionCtx:
        """The session's context, loading it on first use.

        A cached session is returned without I/O, unless it was marked stale or went
        unchecked for ``TRUST_SECONDS`` (then the journal's new tail is read first: the
        staleness bound of the README's *Consistency model*). Otherwise the shared tier or
        the journal provides the state, and (unless read-only) ``state.json`` records the key
        as the agent's last session, and ``sessions-registry.json`` maps it to
        ``real_session_id`` when one is given. Raises ``InvalidSessionKeyError`` for a key that
        cannot name a safe path. As in the seed, a cached key keeps the session it was first
        resolved to.
        """
        # A hit: LruCache.get inlined (no lock, no extra call; see LruCache.hit_path). A
        # subscript, not ``get``: a hit saves a call, a miss pays for a caught KeyError
        # (well under a microsecond, beside a load's milliseconds).
        try:
            ctx: SessionCtx | None = self._entries[session_key]
        except KeyError:
            ctx = None
        if ctx is not None:
            # Bound callables read into locals: the attribute loads specialize, calling them
            # as ``self._touch(...)`` (a method call on an instance attribute) would not.
            touch, clock_s = self._touch, self._clock_s
            try:  # noqa: SIM105 - contextlib.suppress would cost more than the hit itself
                touch(session_key)
            except KeyError:  # evicted by another thread meanwhile: still a valid answer
                pass
            now = ctx._access_s = clock_s()
            # Another process wrote it (marked stale: trusted_until is in the past), or the
            # copy went unchecked for TRUST_SECONDS (the staleness bound even when no
            # invalidation comes): read the journal's new tail.
            if now >= ctx.manager.trusted_until:
                await ctx.manager.revalidate()
            return ctx
        return await self._resolve_miss(session_key, real_session_id)

    async def _resolve_miss(self, session_key: str, real_session_id: str | None) -> SessionCtx:
        """A miss: one flight per key loads the session. Kept out of ``resolve``: the
        closure's cells would cost every hit three allocations."""
        if self._closed:
            raise RegistryClosedError("the registry is closed")
        if not self._started:
            await self.start()
        return await self._flights.run(
            session_key, lambda: self._load(session_key, real_session_id)
        )

    async def resolve_if_allowed(
        self, session_key: str, real_session_id: str | None = None
    ) -> SessionCtx | None:
        """``None`` for internal memory-pipeline sessions (nothing created); else ``resolve``."""
        if is_internal_memory_session(session_key):
            return None
        return await self.resolve(session_key, real_session_id)

    async def _load(self, session_key: str, real_session_id: str | None) -> SessionCtx:
        identity = resolve_identity(session_key, real_session_id)
        paths = SessionPaths.for_identity(self._data_root, identity)
        files = SessionFiles(
            paths, self._fsync, self._read_only, self._file_mode, clock_ms=self._clock_ms
        )
        manager = OffloadStateManager(
            identity,
            files,
            self._tier,
            clock_ns=self._clock_ns,
            stats=self.stats,
            on_resize=functools.partial(self._reweigh, session_key),
        )
        self._managers.add(manager)
        # Watch before loading: a write by another process during the load marks the new
        # copy stale, so its first resolve catches up instead of missing that write.
        self._tier.watch(identity, manager.writer_id, manager.mark_stale)
        record = None
        # The seed's lastSessionKey: checked inline (an unlocked read of state.json); only a
        # change is written, in the load's own thread hop.
        if not identity.fallback and not files.session_recorded(session_key, real_session_id):
            record = functools.partial(files.record_session, session_key, real_session_id)
        try:
            await manager.load(then=record)
        except BaseException:
            self._tier.unwatch(identity, manager.writer_id)
            raise
        self.stats.cold_resolves[manager.source] += 1
        ctx = SessionCtx(session_key, manager, self._clock_ms())
        with self._cache_lock:
            evicted = self._cache.put(session_key, ctx)
        self._forget(evicted)
        return ctx

    def _drop_near_cache(self) -> None:
        """Forget every cached copy (the invalidation handler failed: trust none of them)."""
        with self._cache_lock:
            dropped = [(key, self._cache.pop(key)) for key in list(self._cache.keys())]
        self._forget([(key, ctx) for key, ctx in dropped if ctx is not None])

    def _reweigh(self, session_key: str) -> None:
        with self._cache_lock:
            evicted = self._cache.reweigh(session_key)
        self._forget(evicted)

    def _forget(self, evicted: list[tuple[str, SessionCtx]]) -> None:
        for key, old in evicted:
            self._tier.unwatch(old.manager.identity, old.manager.writer_id)
            log.debug("evicted session from the near cache", extra={"session_key": key})

    @property
    def cached_bytes(self) -> int:
        """The near cache's approximate size in bytes (see ``max_cached_bytes``)."""
        return self._cache.total_bytes

    # -- the seed's Map-like surface ---------------------------------------------------------
    def get(self, session_key: str) -> SessionCtx | None:
        """The cached context (no load); refreshes its recency and ``last_access_ms``."""
        ctx = self._cache.get(session_key)
        if ctx is not None:
            ctx._access_s = self._clock_s()
        return ctx

    def evict(self, session_key: str) -> bool:
        """Drop a session from this process's cache (its files are untouched)."""
        with self._cache_lock:
            ctx = self._cache.pop(session_key)
        if ctx is None:
            return False
        self._tier.unwatch(ctx.manager.identity, ctx.manager.writer_id)
        return True

    @property
    def size(self) -> int:
        return len(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def keys(self) -> Iterator[str]:
        """Cached keys, least recently used first."""
        with self._cache_lock:
            return self._cache.keys()

    def values(self) -> Iterator[SessionCtx]:
        with self._cache_lock:
            return self._cache.values()

    # -- lifecycle ------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """A forked child starts fresh: no cached copies, flights or listener of the parent
        (redis-py's pools already drop the parent's connections in a new process)."""
        self._cache_lock = threading.Lock()
        self._cache.clear()
        self._flights = SingleFlight()
        self._tier.after_fork_in_child()

    @property
    def tier(self) -> SharedTier:
        """The shared tier (``NoSharedTier`` when the registry runs on the journals alone)."""
        return self._tier

    async def start(self) -> None:
        """Connect the shared tier and check it (called by ``async with`` and on first use).

        Raises ``ConfigurationError`` for a misconfigured tier (missing permissions, keys
        owned by another data root); an unreachable Redis is not an error.
        """
        if not self._started:
            try:
                await self._tier.start()
            except BaseException:
                await self._tier.close()  # never leak the connection pool
                self._closed = True
                raise
            self._started = True

    async def close(self) -> None:
        """Forget cached sessions and release the shared tier's connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for manager in list(self._managers):  # no lease outlives its registry
            await manager.release_leases()
        with self._cache_lock:
            self._cache.clear()
        await self._tier.close()

    async def __aenter__(self) -> SessionRegistry:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"SessionRegistry(data_root={str(self._data_root)!r}, tier={self._tier.name!r},"
            f" cached={len(self._cache)}/{self._cache.max_entries})"
        )
