"""The in-process LRU of resolved sessions: O(1) hit, O(1) eviction, bounded by entries and
by approximate bytes.

An ``OrderedDict`` with ``move_to_end`` on hit and ``popitem(last=False)`` on eviction, as in
``cachetools``. Locking is the caller's job: the registries hold a lock around every call
that adds, removes or re-weighs entries; :meth:`LruCache.get` needs none (see there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from offload_registry.errors import ConfigurationError

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A bounded mapping that evicts the least recently used entries while it holds more than
    ``max_entries`` entries or more than ``max_bytes`` by ``weigh`` (the newest entry always
    stays, however heavy). Weights are taken on :meth:`put` and :meth:`reweigh`, never on a
    hit, so a hit stays one dict lookup and a ``move_to_end``."""

    __slots__ = ("_data", "_weights", "max_bytes", "max_entries", "total_bytes", "weigh")

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_cached must be at least 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ConfigurationError(f"max_cached_bytes must be at least 1, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.weigh = weigh
        self.total_bytes = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}

    def get(self, key: K) -> V | None:
        """The value for ``key``, marked most recently used; ``None`` when absent.

        Safe without the caller's lock, concurrently with the other methods under it: the
        lookup and the recency update are each one atomic ``OrderedDict`` call, and a key
        evicted between the two is still a valid answer (the value was cached when looked up),
        just not moved. So a hit costs no lock."""
        data = self._data
        value = data.get(key)
        if value is not None:
            try:  # noqa: SIM105 - contextlib.suppress would cost more than the hit itself
                data.move_to_end(key)
            except KeyError:  # evicted by another thread in between
                pass
        return value

    def hit_path(self) -> tuple[Mapping[K, V], Callable[[K], None]]:
        """The mapping itself (to read only: a subscript costs less than a call of ``get``)
        and its bound ``move_to_end``, for a caller that inlines :meth:`get` in its hottest
        path (same rules: no lock needed, and ``move_to_end`` raises ``KeyError`` for a key
        evicted meanwhile, which the caller ignores). They stay valid for the cache's whole
        life (:meth:`clear` keeps the mapping)."""
        return self._data, self._data.move_to_end

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Insert or replace ``key``; returns the entries evicted to make room (oldest first)."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        self._set_weight(key, value)
        return self._shrink()

    def reweigh(self, key: K) -> list[tuple[K, V]]:
        """Weigh ``key``'s value again (it grew or shrank); returns the entries evicted."""
        value = self._data.get(key)
        if value is None:
            return []
        self._set_weight(key, value)
        return self._shrink()

    def pop(self, key: K) -> V | None:
        self.total_bytes -= self._weights.pop(key, 0)
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
        self._weights.clear()
        self.total_bytes = 0

    def _set_weight(self, key: K, value: V) -> None:
        if self.weigh is None:
            return
        weight = self.weigh(value)
        self.total_bytes += weight - self._weights.get(key, 0)
        self._weights[key] = weight

    def _shrink(self) -> list[tuple[K, V]]:
        data = self._data
        evicted: list[tuple[K, V]] = []
        limit = self.max_bytes
        while len(data) > self.max_entries or (
            limit is not None and self.total_bytes > limit and len(data) > 1
        ):
            key, value = data.popitem(last=False)
            self.total_bytes -= self._weights.pop(key, 0)
            evicted.append((key, value))
        return evicted

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[K]:
        """Keys from least to most recently used (a snapshot, safe to mutate the cache after)."""
        return iter(list(self._data))

    def values(self) -> Iterator[V]:
        return iter(list(self._data.values()))
