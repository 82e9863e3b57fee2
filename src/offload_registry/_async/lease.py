"""Session leases: one holder per session across every worker, with fencing tokens.

A lease is granted by ``lua/lease.lua`` in Redis (one clock, one atomic step) and committed
to the journal's lease record (``lease_files``) under the journal's lock before it is
used, so its token is never handed out twice even when Redis restarts empty or fails over.
Without Redis the record alone arbitrates. While held, the lease renews itself every third
of its TTL; it is *lost* the moment a renewal finds another holder, or when its deadline
passes without a successful renewal (a paused or partitioned holder learns it on waking,
before it writes). Writes made with ``lease=`` carry its token, and the journal writer (under
the journal's lock) and the Redis scripts refuse a token older than the newest grant.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from offload_registry._async._primitives import (
    Event,
    Pending,
    run_blocking,
    sleep,
    spawn,
    stop,
    wait_event,
)
from offload_registry.disk.lease_files import LeaseRecord
from offload_registry.errors import LeaseLostError, LeaseUnavailableError

if TYPE_CHECKING:
    from offload_registry._async.tier import SharedTier
    from offload_registry.disk.session_files import SessionFiles
    from offload_registry.keys import SessionIdentity

log = logging.getLogger("offload_registry.lease")

MIN_TTL_SECONDS = 0.1
_MAX_GRANT_ATTEMPTS = 8


class Lease:
    """A held lease of one session: ``token`` (only grows per session), ``lost``, ``check()``.

    Use it through ``async with manager.lease(ttl=...) as lease`` and pass it to writes
    (``append_entries(..., lease=lease)``); a write under a lost lease raises
    :class:`~offload_registry.errors.LeaseLostError` and changes nothing.
    """

    def __init__(
        self,
        identity: SessionIdentity,
        token: int,
        holder: str,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.token = token
        self.holder = holder
        self.ttl = ttl
        self._clock = clock  # seconds, monotonic; injectable so tests expire without sleeping
        self._deadline = clock() + ttl
        self._lost_reason: str | None = None
        self._lost = Event()
        self._released = Event()
        self._keeper: Any = None
        self._pid = os.getpid()  # a forked child never inherits the right to write under it

    @property
    def session_key(self) -> str:
        return self.identity.session_key

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    @property
    def lost(self) -> bool:
        """True once the lease expired unrenewed, was superseded or was released (and in a
        process forked from the holder: the lease stays the parent's)."""
        return (
            self._lost_reason is not None
            or self._clock() >= self._deadline
            or os.getpid() != self._pid
        )

    @property
    def remaining(self) -> float:
        """Seconds this holder may still count on the lease without another renewal."""
        return 0.0 if self.lost else max(self._deadline - self._clock(), 0.0)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lease can no longer be written under."""
        if self.lost:
            reason = self._lost_reason or "not renewed before its deadline"
            if os.getpid() != self._pid:
                reason = "held by the process this one was forked from"
            raise LeaseLostError(self.session_key, self.token, reason)

    async def wait_lost(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the lease to be lost; ``True`` when it was."""
        await wait_event(self._lost, timeout)
        return self.lost

    def _renewed(self, started: float) -> None:
        self._deadline = started + self.ttl

    def _lose(self, reason: str) -> None:
        if self._lost_reason is None:
            self._lost_reason = reason
            if not self._released.is_set():
                log.warning(
                    "lease %d of %r lost: %s",
                    self.token,
                    self.session_key,
                    reason,
                    extra={"session_key": self.session_key},
                )
        self._lost.set()

    def __repr__(self) -> str:
        state = "lost" if self.lost else f"{self.remaining:.2f}s left"
        return f"Lease({self.session_key!r}, token={self.token}, {state})"


class LeaseKeeper:
    """Grants, renews and releases the leases of one session (one per manager).

    Deadlines run on ``clock`` (monotonic seconds); the journal's records expire by the wall
    clock of ``files`` (``SessionFiles.clock_ms``). Both are injectable.
    """

    def __init__(
        self,
        identity: SessionIdentity,
        files: SessionFiles,
        tier: SharedTier,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._identity = identity
        self._files = files
        self._tier = tier
        self._clock = clock
        self.live: set[Lease] = set()  # held here and not yet released (released on close)

    async def acquire(self, ttl: float, wait: float) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for the current holder to go;
        raises :class:`LeaseUnavailableError` when it does not."""
        if not ttl >= MIN_TTL_SECONDS:
            raise ValueError(f"a lease ttl must be at least {MIN_TTL_SECONDS} s, not {ttl!r}")
        self._files.require_writable()
        holder = uuid.uuid4().hex
        ttl_ms = int(ttl * 1000)
        give_up = self._clock() + max(wait, 0.0)
        delay = 0.01
        while True:
            started = self._clock()
            token, retry_ms = await self._grant(holder, ttl_ms)
            if token:
                lease = Lease(self._identity, token, holder, ttl, clock=self._clock)
                lease._renewed(started)
                keep = functools.partial(self._keep, lease)
                lease._keeper = spawn(keep, "offload-registry-lease")
                self.live.add(lease)
                return lease
            left = give_up - self._clock()
            if left <= 0:
                raise LeaseUnavailableError(self._identity.session_key, retry_ms / 1000)
            await sleep(min(delay, left, max(retry_ms / 1000, 0.001)))
            delay = min(delay * 2, 0.25)

    async def _grant(self, holder: str, ttl_ms: int) -> tuple[int, int]:
        """``(token, 0)`` when granted, ``(0, ms the current holder may keep it)`` when not.

        Interrupted (cancelled, or the journal side failed) after Redis granted a token, it
        gives that token up before raising, so no orphan lease blocks others for a TTL.
        """
        granted: list[int] = []
        steps: list[Pending[Any]] = []
        try:
            return await self._try_grant(holder, ttl_ms, granted, steps)
        except BaseException:
            for step in steps:  # a record step may still be running in its thread
                await step.settle()
            await self._give_up(holder, granted, ttl_ms)
            raise

    async def _give_up(self, holder: str, granted: list[int], ttl_ms: int) -> None:
        """Undo whatever an interrupted grant left: Redis's lease key, and the journal's
        record if it names this holder (best effort: a grant also expires by itself)."""
        try:
            for token in granted:
                await self._tier.lease_call(self._identity, "release", holder, token, ttl_ms)
            record = await run_blocking(self._files.lease_record)
            if record is not None and record.holder == holder:
                await run_blocking(self._files.release_lease, record.token, holder)
        except Exception:
            log.exception("could not give up an interrupted lease grant")

    async def _try_grant(
        self, holder: str, ttl_ms: int, granted: list[int], steps: list[Pending[Any]]
    ) -> tuple[int, int]:
        for _ in range(_MAX_GRANT_ATTEMPTS):
            floor = await run_blocking(self._files.lease_floor)
            reply = await self._tier.lease_call(self._identity, "acquire", holder, floor, ttl_ms)
            if reply is None:  # no Redis: the journal's record arbitrates alone
                steps.append(Pending(functools.partial(self._files.grant_lease, holder, ttl_ms)))
                granted_here: LeaseRecord | None = await steps[-1].result()
                return (granted_here.token, 0) if granted_here is not None else (0, ttl_ms)
            token, remaining = int(reply[0]), int(reply[1])
            if not token:
                return 0, remaining
            granted.append(token)
            record = LeaseRecord(token, holder, self._files.clock_ms() + ttl_ms)
            steps.append(Pending(functools.partial(self._files.commit_lease, record)))
            outcome = await steps[-1].result()
            if outcome == "ok":
                return token, 0
            granted.pop()
            await self._tier.lease_call(self._identity, "release", holder, token, ttl_ms)
            if outcome == "busy":  # granted without Redis by another holder, still valid
                return 0, ttl_ms
            # "behind": Redis lost grants the journal recorded; the next try starts above them
        raise LeaseUnavailableError(self._identity.session_key, ttl_ms / 1000)

    async def _keep(self, lease: Lease) -> None:
        """Renew every third of the TTL until released or lost (a background task/thread)."""
        try:
            while not lease._released.is_set():
                pause = min(lease.ttl / 3, max(lease._deadline - self._clock(), 0.0))
                if await wait_event(lease._released, pause):
                    return
                if self._clock() >= lease._deadline:
                    lease._lose("not renewed before its deadline")
                    return
                started = self._clock()
                renewed = await self._renew(lease)
                if renewed is False:
                    lease._lose("another holder took the session")
                    return
                if renewed:
                    lease._renewed(started)
        except Exception as exc:  # a keeper that cannot renew must not leave the lease trusted
            log.exception("lease keeper of %r failed", lease.session_key)
            lease._lose(f"renewal failed: {exc!r}")

    async def _renew(self, lease: Lease) -> bool | None:
        """True renewed, False lost.

        The journal's record is renewed every time, under its lock: it is the authority on
        tokens and on expiry when Redis is unreachable (a worker without Redis must never see
        a renewed lease as expired), and a newer token there means the lease is lost. Redis
        is renewed too, or restored when it lost the lease (restarted empty).
        """
        record = LeaseRecord(lease.token, lease.holder, self._files.clock_ms() + lease.ttl_ms)
        if not await run_blocking(self._files.renew_lease, record):
            return False
        args = (self._identity, "renew", lease.holder, lease.token, lease.ttl_ms)
        reply = await self._tier.lease_call(*args)
        if reply is not None and int(reply) == 0:  # Redis lost it; the record says it is ours
            restore = (self._identity, "restore", lease.holder, lease.token, lease.ttl_ms)
            reply = await self._tier.lease_call(*restore)
        return reply is None or int(reply) == 1

    async def release(self, lease: Lease) -> None:
        """Stop renewing and give the lease up (Redis and the journal's record); in a process
        forked from the holder only this copy is dropped: the lease stays the parent's."""
        lease._released.set()
        self.live.discard(lease)
        if lease._keeper is not None and os.getpid() == lease._pid:
            await stop(lease._keeper)
        lease._keeper = None
        if lease._lost_reason is None:
            lease._lose("released")
        if os.getpid() != lease._pid:
            return
        args = (self._identity, "release", lease.holder, lease.token, lease.ttl_ms)
        await self._tier.lease_call(*args)
        await run_blocking(self._files.release_lease, lease.token, lease.holder)

    async def release_all(self) -> None:
        """Release every lease still held here (the registry is closing)."""
        for lease in list(self.live):
            await self.release(lease)
