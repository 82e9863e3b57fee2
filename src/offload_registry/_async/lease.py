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
import time
import uuid
from typing import TYPE_CHECKING, Any

from offload_registry._async._primitives import (
    Event,
    run_blocking,
    sleep,
    spawn,
    stop,
    wait_event,
)
from offload_registry.errors import LeaseLostError, LeaseUnavailableError
from offload_registry.lease_files import LeaseRecord, now_ms

if TYPE_CHECKING:
    from offload_registry._async.tier import SharedTier
    from offload_registry.keys import SessionIdentity
    from offload_registry.session_files import SessionFiles

log = logging.getLogger("offload_registry.lease")

MIN_TTL_SECONDS = 0.1
_MAX_GRANT_ATTEMPTS = 8


class Lease:
    """A held lease of one session: ``token`` (only grows per session), ``lost``, ``check()``.

    Use it through ``async with manager.lease(ttl=...) as lease`` and pass it to writes
    (``append_entries(..., lease=lease)``); a write under a lost lease raises
    :class:`~offload_registry.errors.LeaseLostError` and changes nothing.
    """

    def __init__(self, identity: SessionIdentity, token: int, holder: str, ttl: float) -> None:
        self.identity = identity
        self.token = token
        self.holder = holder
        self.ttl = ttl
        self._deadline = time.monotonic() + ttl
        self._lost_reason: str | None = None
        self._lost = Event()
        self._released = Event()
        self._keeper: Any = None

    @property
    def session_key(self) -> str:
        return self.identity.session_key

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    @property
    def lost(self) -> bool:
        """True once the lease expired unrenewed, was superseded or was released."""
        return self._lost_reason is not None or time.monotonic() >= self._deadline

    @property
    def remaining(self) -> float:
        """Seconds this holder may still count on the lease without another renewal."""
        return 0.0 if self.lost else max(self._deadline - time.monotonic(), 0.0)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lease can no longer be written under."""
        if self.lost:
            reason = self._lost_reason or "not renewed before its deadline"
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
    """Grants, renews and releases the leases of one session (one per manager)."""

    def __init__(self, identity: SessionIdentity, files: SessionFiles, tier: SharedTier) -> None:
        self._identity = identity
        self._files = files
        self._tier = tier

    async def acquire(self, ttl: float, wait: float) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for the current holder to go;
        raises :class:`LeaseUnavailableError` when it does not."""
        if not ttl >= MIN_TTL_SECONDS:
            raise ValueError(f"a lease ttl must be at least {MIN_TTL_SECONDS} s, not {ttl!r}")
        self._files.require_writable()
        holder = uuid.uuid4().hex
        ttl_ms = int(ttl * 1000)
        give_up = time.monotonic() + max(wait, 0.0)
        delay = 0.01
        while True:
            started = time.monotonic()
            token, retry_ms = await self._grant(holder, ttl_ms)
            if token:
                lease = Lease(self._identity, token, holder, ttl)
                lease._renewed(started)
                keep = functools.partial(self._keep, lease)
                lease._keeper = spawn(keep, "offload-registry-lease")
                return lease
            left = give_up - time.monotonic()
            if left <= 0:
                raise LeaseUnavailableError(self._identity.session_key, retry_ms / 1000)
            await sleep(min(delay, left, max(retry_ms / 1000, 0.001)))
            delay = min(delay * 2, 0.25)

    async def _grant(self, holder: str, ttl_ms: int) -> tuple[int, int]:
        """``(token, 0)`` when granted, ``(0, ms the current holder may keep it)`` when not."""
        for _ in range(_MAX_GRANT_ATTEMPTS):
            floor = await run_blocking(self._files.lease_floor)
            reply = await self._tier.lease_call(self._identity, "acquire", holder, floor, ttl_ms)
            if reply is None:  # no Redis: the journal's record arbitrates alone
                record = await run_blocking(self._files.grant_lease, holder, ttl_ms)
                return (record.token, 0) if record is not None else (0, ttl_ms)
            token, remaining = int(reply[0]), int(reply[1])
            if not token:
                return 0, remaining
            record = LeaseRecord(token, holder, now_ms() + ttl_ms)
            outcome = await run_blocking(self._files.commit_lease, record)
            if outcome == "ok":
                return token, 0
            await self._tier.lease_call(self._identity, "release", holder, token, ttl_ms)
            if outcome == "busy":  # granted without Redis by another holder, still valid
                return 0, ttl_ms
            # "behind": Redis lost grants the journal recorded; the next try starts above them
        raise LeaseUnavailableError(self._identity.session_key, ttl_ms / 1000)

    async def _keep(self, lease: Lease) -> None:
        """Renew every third of the TTL until released or lost (a background task/thread)."""
        try:
            while not lease._released.is_set():
                pause = min(lease.ttl / 3, max(lease._deadline - time.monotonic(), 0.0))
                if await wait_event(lease._released, pause):
                    return
                if time.monotonic() >= lease._deadline:
                    lease._lose("not renewed before its deadline")
                    return
                started = time.monotonic()
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
        """True renewed, False lost, None not known yet (try again before the deadline)."""
        args = (self._identity, "renew", lease.holder, lease.token, lease.ttl_ms)
        reply = await self._tier.lease_call(*args)
        if reply is not None and int(reply) != 0:
            return int(reply) == 1
        if reply is not None:  # Redis lost the lease (restarted empty): restore it from ours
            if await run_blocking(self._files.lease_floor) > lease.token:
                return False
            restore = (self._identity, "restore", lease.holder, lease.token, lease.ttl_ms)
            restored = await self._tier.lease_call(*restore)
            if restored is not None:
                return int(restored) == 1
        # Redis cannot answer: keep the lease in the journal's record.
        record = LeaseRecord(lease.token, lease.holder, now_ms() + lease.ttl_ms)
        return await run_blocking(self._files.renew_lease, record)

    async def release(self, lease: Lease) -> None:
        """Stop renewing and give the lease up (Redis and the journal's record)."""
        lease._released.set()
        if lease._keeper is not None:
            await stop(lease._keeper)
            lease._keeper = None
        if lease._lost_reason is None:
            lease._lose("released")
        args = (self._identity, "release", lease.holder, lease.token, lease.ttl_ms)
        await self._tier.lease_call(*args)
        await run_blocking(self._files.release_lease, lease.token)
