"""asyncio flavours of the few primitives whose sync and async forms differ.

Hand-written; ``offload_registry._sync._primitives`` is its blocking twin with the same names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec, TypeAlias, TypeVar

K = TypeVar("K")
V = TypeVar("V")
P = ParamSpec("P")

Lock = asyncio.Lock
Thunk: TypeAlias = Callable[[], Awaitable[V]]


async def run_blocking(fn: Callable[P, V], *args: P.args, **kwargs: P.kwargs) -> V:
    """Run blocking file I/O in a worker thread so the event loop keeps serving."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share a single execution of the work.

    The first caller runs ``work``; callers arriving while it runs await the same result. A
    failure reaches every waiter of that flight but is not remembered, so the next call tries
    again (a failed rebuild never poisons the key).
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Thunk[V]) -> V:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await work()
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # mark retrieved: waiters may be none
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
