"""How a Redis tier recovers from faults: the epoch it writes in, and the writes whose
announcement did not certainly happen, repaired once Redis answers again.

A write that failed (a timeout, an outage, an open breaker) may or may not have reached
Redis, and other workers may or may not have heard of it. Its session is marked *dirty*;
the repairer (a background task, or the blocking twin's thread) and every call that
succeeds afterwards re-read the epoch (the server may be a new one), drop the dirty
sessions' Redis copies, so their next reader rebuilds them from the journal, and announce
each, so every live near-cache copy revalidates. An idempotent call rides through a server
restart by retrying (:func:`idempotent`). Owned by
:class:`~offload_registry._async.redis_tier.RedisTier`.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from offload_registry._async._primitives import Thunk, running, sleep, spawn, stop
from offload_registry.store.breaker import CircuitBreaker
from offload_registry.store.diagnose import FAILURES
from offload_registry.store.keyspace import Keyspace, RedisSessionKeys

log = logging.getLogger("offload_registry.redis")

EPOCH_CHECK_SECONDS = 5.0
"""A read re-reads the epoch marker when it was last read longer ago than this."""
REPAIR_SECONDS = 0.2
"""How often the repairer retries announcing writes whose announcement did not certainly
happen (the dirty set); with the listeners' delivery this sets the staleness bound after a
fault heals (README, *Consistency model*)."""
# The retry schedule (tenacity's primitives, which 8.2 and 9.x share): after the first failed
# attempt 20-40 ms, after the second 40-60 ms; three attempts in all.
_FIRST_WAIT_SECONDS = (0.02, 0.04)
_LATER_BACKOFF = wait_exponential(multiplier=0.04, max=0.2) + wait_random(0, 0.02)


async def idempotent(call: Thunk[Any]) -> Any:
    """Run an idempotent call, retrying a refused or reset connection (the server
    restarting) with jittered exponential backoff; timeouts are not retried, so a call
    never waits much beyond the socket timeout.

    The first attempt is a plain call: building tenacity's retry loop costs ~50 us, a
    twentieth of a cold resolve, so it is built only once a connection failed."""
    try:
        return await call()
    except RedisConnectionError:
        await sleep(random.uniform(*_FIRST_WAIT_SECONDS))
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(2),
        wait=_LATER_BACKOFF,
        retry=retry_if_exception_type(RedisConnectionError),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")


class TierHealth:
    """The epoch and the dirty set of one tier, and the repairer that empties the set.

    ``client`` and ``closing`` are read at each use (a forked child gets a new client);
    ``announce_reset(client_or_pipeline, keys)`` queues the announcement that a session was
    reset (version 0, never counted as a gap).
    """

    def __init__(
        self,
        client: Callable[[], Any],
        keyspace: Keyspace,
        breaker: CircuitBreaker,
        *,
        clock: Callable[[], float],
        description: str,
        closing: Callable[[], bool],
        announce_reset: Callable[[Any, RedisSessionKeys], Any],
    ) -> None:
        self._client = client
        self._keyspace = keyspace
        self._breaker = breaker
        self._clock = clock
        self._description = description
        self._closing = closing
        self._announce_reset = announce_reset
        self.epoch = ""
        """The deployment epoch this tier reads and writes in (``store.keyspace``)."""
        self._epoch_checked = float("-inf")
        # Sessions written while their announcement did not certainly happen (a timeout, an
        # outage, an open breaker): the repairer announces them once Redis answers again.
        self._dirty: set[RedisSessionKeys] = set()
        self.marks = 0
        """Counts :meth:`mark_dirty` calls (a publish clears only older marks)."""
        self._repairer: Any = None

    # -- the epoch ----------------------------------------------------------------------
    async def refresh_epoch(self) -> None:
        """Read the epoch marker, creating it (``SET NX``, whichever value wins) when the
        server lost it."""
        client = self._client()
        marker = self._keyspace.marker()
        epoch = await client.get(marker)
        if epoch is None:
            await client.set(marker, uuid.uuid4().hex, nx=True)
            epoch = await client.get(marker)
            if self.epoch:
                log.warning(
                    "Redis lost the registry's data (epoch marker missing); sessions are "
                    "rebuilt from their journals as they are resolved",
                    extra={"redis": self._description},
                )
        self.epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        self._epoch_checked = self._clock()

    async def maybe_refresh_epoch(self) -> None:
        """:meth:`refresh_epoch` at most every ``EPOCH_CHECK_SECONDS``."""
        if self._clock() - self._epoch_checked >= EPOCH_CHECK_SECONDS:
            await self.refresh_epoch()

    # -- the dirty set ------------------------------------------------------------------
    def mark_dirty(self, keys: RedisSessionKeys) -> None:
        """A write to ``keys`` may not have been announced: announce it once Redis answers
        (the next successful call, or the repairer within ``REPAIR_SECONDS``), whatever
        state the breaker is in."""
        self.marks += 1
        self._dirty.add(keys)
        if not self._closing() and (self._repairer is None or not running(self._repairer)):
            self._repairer = spawn(self._repair, name="offload-registry-repairer")

    def announced(self, keys: RedisSessionKeys, marks: int) -> None:
        """A snapshot of ``keys`` was published and announced whole: unless a write failed
        since :attr:`marks` read ``marks``, nothing older is left to repair."""
        if self.marks == marks:
            self._dirty.discard(keys)

    async def succeeded(self) -> None:
        """A call answered: close the breaker, and repair what is dirty."""
        if self._breaker.record_success() or self._dirty:
            await self.reconcile()

    async def _repair(self) -> None:
        """Retry the dirty set every ``REPAIR_SECONDS`` until it is empty. Runs whatever the
        breaker says (it is the breaker's background probe: nobody waits on it), so one
        timeout, which never opens the breaker, is repaired as soon as Redis answers, and
        an open breaker closes as soon as Redis is back."""
        while self._dirty and not self._closing():
            await sleep(REPAIR_SECONDS)
            if self._dirty and not self._closing() and await self.reconcile():
                self._breaker.record_success()

    async def reconcile(self) -> bool:
        """After a failed write or an outage: re-read the epoch (the server may be a new one),
        drop the Redis copies of the dirty sessions, so their next reader rebuilds them from
        the journal, and announce each (its writes may never have been), so every live copy
        revalidates. ``True`` when the whole dirty set was repaired."""
        taken: RedisSessionKeys | None = None
        try:
            await self.refresh_epoch()
            for keys in list(self._dirty):
                # Taken before the call: a write failing meanwhile marks the session again.
                taken = keys
                self._dirty.discard(keys)
                async with self._client().pipeline(transaction=True) as pipe:
                    pipe.delete(keys.state, keys.deltas)
                    self._announce_reset(pipe, keys)
                    await pipe.execute()
                taken = None
        except FAILURES as exc:
            if taken is not None:
                self._dirty.add(taken)
            self._breaker.record_failure(exc, "reconcile")
            return False
        return True

    async def drop(self, sessions: Sequence[RedisSessionKeys]) -> int:
        """Delete the Redis copies of many sessions and announce each, in one round trip;
        returns how many had a copy (see ``RedisTier.drop_sessions`` for the rule)."""
        async with self._client().pipeline(transaction=False) as pipe:
            for keys in sessions:
                pipe.delete(*keys.data)
                self._announce_reset(pipe, keys)
            replies: list[Any] = await pipe.execute()
        return sum(1 for deleted in replies[0::2] if deleted)

    async def close(self) -> None:
        if self._repairer is not None:
            await stop(self._repairer)
            self._repairer = None

    def after_fork_in_child(self) -> None:
        self._dirty = set()  # the parent repairs its own writes
        self._repairer = None
