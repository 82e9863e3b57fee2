"""A circuit breaker and a rate-limited outage log (pure; the clock is injected).

While Redis is down every call would otherwise wait out its timeout; an open breaker makes
calls fall back to the journals at once, and a half-open probe brings Redis back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

log = logging.getLogger("offload_registry.redis")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_after`` seconds
    lets calls through again as probes (half-open); one success closes it, a failure of a
    probe opens it again."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = 30.0,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._log_every = log_every
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0
        self._last_logged = float("-inf")
        self._outage_logged = False  # a failure was logged that no recovery message closed
        self.suppressed = 0
        self.outages = 0

    def allow(self) -> bool:
        """May a call go to Redis now? While half-open, only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.reset_after:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_started = self._clock()
            return True
        # Half-open: a probe is out; let another through only if it has been lost for long.
        if self._clock() - self._probe_started >= self.reset_after:
            self._probe_started = self._clock()
            return True
        return False

    def record_success(self) -> bool:
        """Note a successful call; ``True`` when this ends an outage."""
        recovered = self.state is not BreakerState.CLOSED
        self.state = BreakerState.CLOSED
        self._failures = 0
        # Only after a logged failure: a Redis that flaps (say, over maxmemory: reads close
        # the breaker, writes open it again) logs one failure and one recovery per interval.
        if recovered and self._outage_logged:
            self._outage_logged = False
            log.warning("Redis is reachable again; resuming the shared tier")
        return recovered

    def record_failure(self, error: BaseException, where: str) -> None:
        """Note a failed call, open the breaker when due, and log at a bounded rate."""
        self._failures += 1
        now = self._clock()
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            if self.state is BreakerState.CLOSED:
                self.outages += 1
            self.state = BreakerState.OPEN
            self._opened_at = now
        if now - self._last_logged >= self._log_every:
            log.warning(
                "Redis call failed (%s: %s: %s); answering from the journals%s",
                where,
                type(error).__name__,
                error,
                f" ({self.suppressed} similar messages suppressed)" if self.suppressed else "",
                extra={"breaker": self.state.value},
            )
            self._last_logged = now
            self._outage_logged = True
            self.suppressed = 0
        else:
            self.suppressed += 1
