"""Progress of a long job: a bar on a terminal, periodic log lines otherwise (the clock is
injected, so tests see exact output)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30


class Progress:
    """Call :meth:`update` as work is done; :meth:`close` ends the bar (if any)."""

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        logger: logging.Logger,
        stream: TextIO | None = None,
        every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._total = total
        self._log = logger
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._every = every_seconds if not self._tty else 0.2
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._drawn = False

    def update(self, done: int, entries: int) -> None:
        now = self._clock()
        if now - self._last < self._every:
            return
        self._last = now
        rate = entries / max(now - self._started, 1e-9)
        if self._tty:
            self._draw(done, rate)
        else:
            self._log.info(
                "%s: %d%s sessions, %d entries (%.0f entries/s)",
                self._what,
                done,
                f"/{self._total}" if self._total is not None else "",
                entries,
                rate,
                extra={"sessions": done, "entries": entries},
            )

    def _draw(self, done: int, rate: float) -> None:
        if self._total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // self._total)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"\r{self._what} [{bar}] {done}/{self._total} sessions {rate:,.0f} entries/s"
        else:
            text = f"\r{self._what}: {done} sessions {rate:,.0f} entries/s"
        self._stream.write(text)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
