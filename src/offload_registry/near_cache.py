"""The in-process LRU of resolved sessions: O(1) hit, O(1) eviction, size chosen by the caller.

An ``OrderedDict`` with ``move_to_end`` on hit and ``popitem(last=False)`` on eviction, as in
``cachetools``. Locking is the caller's job: the asyncio registry runs on one thread, and the
blocking twin holds its own lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from offload_registry.errors import ConfigurationError

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A bounded mapping that evicts the least recently used entry when full."""

    __slots__ = ("_data", "max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_cached must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key``, marked most recently used; ``None`` when absent."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Insert or replace ``key``; returns the entries evicted to make room (oldest first)."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        evicted: list[tuple[K, V]] = []
        while len(data) > self.max_entries:
            evicted.append(data.popitem(last=False))
        return evicted

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[K]:
        """Keys from least to most recently used (a snapshot, safe to mutate the cache after)."""
        return iter(list(self._data))

    def values(self) -> Iterator[V]:
        return iter(list(self._data.values()))
