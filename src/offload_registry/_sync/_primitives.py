"""Blocking flavours of the primitives in ``offload_registry._async._primitives``.

Hand-written, same names, thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeAlias, TypeVar

K = TypeVar("K")
V = TypeVar("V")
P = ParamSpec("P")

Lock = threading.Lock
Event = threading.Event
Thunk: TypeAlias = Callable[[], V]


def run_blocking(fn: Callable[P, V], *args: P.args, **kwargs: P.kwargs) -> V:
    """Run blocking I/O on the calling thread (the sync API blocks by design)."""
    return fn(*args, **kwargs)


def run_to_completion(work: Thunk[V]) -> V:
    """Run ``work`` (the blocking API cannot be cancelled halfway)."""
    return work()


class Pending(Generic[V]):
    """Blocking work, run now on the calling thread (the blocking API has no worker threads
    to overlap it with); :meth:`result` gives its value or raises its error."""

    __slots__ = ("_error", "_value")

    def __init__(self, fn: Callable[[], V]) -> None:
        self._value: V | None = None
        self._error: BaseException | None = None
        try:
            self._value = fn()
        except BaseException as exc:  # raised by result(), as the async twin does
            self._error = exc

    def result(self) -> V:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def settle(self) -> None:
        """Drop the outcome, error included."""


Ready = Pending
"""The async twin's work-run-now-on-the-event-loop; here every Pending already runs now."""


def spawn(work: Thunk[None], name: str = "offload-registry-listener") -> threading.Thread:
    """Run ``work`` on a daemon thread."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


def stop(thread: threading.Thread) -> None:
    """Wait for a background thread that was told to finish (it polls a closing flag)."""
    thread.join(timeout=5.0)


def running(thread: threading.Thread) -> bool:
    return thread.is_alive()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def wait_event(event: threading.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; ``True`` when it was set."""
    return event.wait(max(timeout, 0.0))


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key, from any threads, share a single execution of the work.

    A failure reaches the threads waiting on that flight but is not remembered.
    """

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self._lock = threading.Lock()

    def run(self, key: K, work: Thunk[V]) -> V:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            flight.result = work()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def __len__(self) -> int:
        return len(self._flights)
