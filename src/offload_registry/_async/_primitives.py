"""asyncio flavours of the few primitives whose sync and async forms differ.

Hand-written; ``offload_registry._sync._primitives`` is its blocking twin with the same names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec, TypeAlias, TypeVar

K = TypeVar("K")
V = TypeVar("V")
P = ParamSpec("P")

Lock = asyncio.Lock
Event = asyncio.Event
Thunk: TypeAlias = Callable[[], Awaitable[V]]


async def run_blocking(fn: Callable[P, V], *args: P.args, **kwargs: P.kwargs) -> V:
    """Run blocking file I/O in a worker thread so the event loop keeps serving."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def run_to_completion(work: Thunk[V]) -> V:
    """Run ``work`` as its own task and wait for it; cancelling the caller does not cancel it.

    Writes use this so that a journal write and the in-memory update that follows it always
    happen together, even when the caller is cancelled halfway.
    """
    return await asyncio.shield(asyncio.ensure_future(work()))


class Pending(Generic[V]):
    """Blocking work started now in a worker thread, collected later: await :meth:`result`
    (or :meth:`settle` on an error path) exactly once, so that the work overlaps whatever
    the caller awaits meanwhile (a Redis round trip, say)."""

    __slots__ = ("_task",)

    def __init__(self, fn: Callable[[], V]) -> None:
        self._task: asyncio.Future[V] = asyncio.ensure_future(asyncio.to_thread(fn))

    async def result(self) -> V:
        # Shielded: a cancelled caller leaves the work running (a thread cannot be stopped)
        # and still observable, so an error path can settle() it for real.
        return await asyncio.shield(self._task)

    async def settle(self) -> None:
        """Wait for the work and drop its outcome, error included."""
        with contextlib.suppress(BaseException):
            await self._task


class Ready(Generic[V]):
    """Blocking work run now, on the event loop, collected like :class:`Pending` (its
    error is raised by :meth:`result`): for a few small local syscalls that cost less than
    a thread hop (``asyncio.to_thread`` costs ~50-100 us, and much more on a busy machine,
    where the worker thread must first be scheduled)."""

    __slots__ = ("_error", "_value")

    def __init__(self, fn: Callable[[], V]) -> None:
        self._value: V | None = None
        self._error: BaseException | None = None
        try:
            self._value = fn()
        except BaseException as exc:  # raised by result(), as Pending's would be
            self._error = exc

    async def result(self) -> V:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    async def settle(self) -> None:
        """Drop the outcome, error included."""


def spawn(work: Thunk[None], name: str = "offload-registry-listener") -> asyncio.Task[None]:
    """Run ``work`` in the background on the running loop."""
    task = asyncio.ensure_future(work())
    task.set_name(name)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has finished."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller itself is being cancelled: do not swallow that


def running(task: asyncio.Task[None]) -> bool:
    return not task.done()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; ``True`` when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(timeout, 0.0))
    return event.is_set()


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share a single execution of the work.

    The first caller starts ``work`` as a task of its own; every caller, the first included,
    awaits it through ``asyncio.shield``, so cancelling one caller never cancels the work
    or the other callers. A failure reaches every waiter of that flight but is not
    remembered, so the next call tries again (a failed rebuild never poisons the key).
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, work: Thunk[V]) -> V:
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(work())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._forget(key, flight))
        return await asyncio.shield(flight)

    def _forget(self, key: K, flight: asyncio.Task[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: a flight whose callers all left logs nothing

    def __len__(self) -> int:
        return len(self._flights)
