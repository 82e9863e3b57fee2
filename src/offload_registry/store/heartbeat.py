"""When to ping a quiet subscription connection, and when to give it up (pure; clock injected).

A subscriber only reads, so a connection whose peer vanished without closing it (a half-open
TCP connection: a host or NAT entry gone, a black-holed route) looks exactly like a quiet
channel, for ever: every invalidation sent meanwhile is lost and no cached copy is ever
revalidated. The invalidation listeners therefore send a ``PING`` on a connection that has
been quiet for ``interval`` seconds and treat it as broken when nothing at all (the pong or
any message) has arrived ``timeout`` seconds later; they then subscribe again on a new
connection and mark every cached copy stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HEARTBEAT_SECONDS = 1.0
"""A subscription connection that has been quiet this long is pinged."""


class Heartbeat:
    """Liveness of one connection: call :meth:`heard` whenever anything arrives on it,
    :meth:`sent` after sending the ping :meth:`due` asked for; :meth:`dead` says when the
    ping has gone unanswered for ``timeout`` seconds."""

    def __init__(
        self,
        timeout: float,
        interval: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.interval = interval
        self._clock = clock
        self._last_heard = clock()
        self._ping_sent: float | None = None

    def heard(self) -> None:
        """Something arrived: the connection is alive."""
        self._last_heard = self._clock()
        self._ping_sent = None

    def due(self) -> bool:
        """Quiet for ``interval`` with no ping out: send one now (then call :meth:`sent`)."""
        return self._ping_sent is None and self._clock() - self._last_heard >= self.interval

    def sent(self) -> None:
        self._ping_sent = self._clock()

    def dead(self) -> bool:
        """A ping has been out for ``timeout`` seconds without anything arriving."""
        return self._ping_sent is not None and self._clock() - self._ping_sent >= self.timeout

    def silence(self) -> float:
        """Seconds since anything arrived (for the error message)."""
        return self._clock() - self._last_heard
