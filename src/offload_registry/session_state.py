"""The per-session offload state rebuilt from a journal: pure data and pure functions.

The rules are the seed's (SEED-SPEC "The state rebuilt when a session is resolved"): every
id set holds each id and, where different, its normalized form (the id with ``_`` removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from offload_registry.jsjson import js_truthy

DELETED = "deleted"


def normalize_id(tool_call_id: str) -> str:
    """The seed's normalized form of a tool call id: the id with every ``_`` removed."""
    return tool_call_id.replace("_", "")


def id_forms(tool_call_id: str) -> tuple[str, ...]:
    """The id and, when it differs, its normalized form."""
    normalized = tool_call_id.replace("_", "")
    return (tool_call_id,) if normalized == tool_call_id else (tool_call_id, normalized)


@dataclass(slots=True)
class SessionState:
    """Confirmed, deleted and processed ids plus the entry counter of one session's journal.

    Built only from valid journal entries; runtime-only state lives on the manager.
    """

    confirmed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    processed: set[str] = field(default_factory=set)
    entry_count: int = 0

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> SessionState:
        state = cls()
        state.apply_entries(entries)
        return state

    def apply_entries(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Fold valid journal entries into the state, exactly as the seed's rebuild does."""
        processed, confirmed, deleted = self.processed, self.confirmed, self.deleted
        count = 0
        for entry in entries:
            tool_call_id: str = entry["tool_call_id"]
            forms = id_forms(tool_call_id)
            processed.update(forms)
            offloaded = entry.get("offloaded")
            if offloaded is not None and js_truthy(offloaded):
                confirmed.update(forms)
                if offloaded == DELETED:
                    deleted.update(forms)
            count += 1
        self.entry_count += count

    @classmethod
    def from_scan(cls, ids: Sequence[str], statuses: Iterable[tuple[str, Any]]) -> SessionState:
        state = cls()
        state.apply_scan(ids, statuses)
        return state

    def apply_scan(self, ids: Sequence[str], statuses: Iterable[tuple[str, Any]]) -> None:
        """Fold a status scan (every valid entry's id, and the non-null statuses) into the
        state: the same result as :meth:`apply_entries`, with the per-id work done in bulk."""
        processed = self.processed
        processed.update(ids)
        processed.update([i.replace("_", "") for i in ids])
        confirmed, deleted = self.confirmed, self.deleted
        for tool_call_id, offloaded in statuses:
            if js_truthy(offloaded):
                forms = id_forms(tool_call_id)
                confirmed.update(forms)
                if offloaded == DELETED:
                    deleted.update(forms)
        self.entry_count += len(ids)

    def merge(self, newer: SessionState) -> None:
        """Add the ids and entries of ``newer`` (the state of lines appended after ours)."""
        self.processed |= newer.processed
        self.confirmed |= newer.confirmed
        self.deleted |= newer.deleted
        self.entry_count += newer.entry_count

    def contains_id(self, tool_call_id: str) -> bool:
        """True when the journal already holds this id or one with the same normalized form."""
        return tool_call_id in self.processed or normalize_id(tool_call_id) in self.processed

    def copy(self) -> SessionState:
        return SessionState(
            set(self.confirmed), set(self.deleted), set(self.processed), self.entry_count
        )


class SetView(AbstractSet[str]):
    """A read-only live view of one or more sets (their union), without copying them.

    Iterating while another thread writes the session can fail like any set iteration; take
    ``frozenset(view)`` first when that can happen.
    """

    __slots__ = ("_sets",)

    def __init__(self, *sets: AbstractSet[str]) -> None:
        self._sets = sets

    def __contains__(self, item: object) -> bool:
        return any(item in s for s in self._sets)

    def __iter__(self) -> Iterator[str]:
        if len(self._sets) == 1:
            return iter(self._sets[0])
        seen: set[str] = set()
        for s in self._sets:
            seen.update(s)
        return iter(seen)

    def __len__(self) -> int:
        if len(self._sets) == 1:
            return len(self._sets[0])
        return len(set().union(*self._sets))

    def __repr__(self) -> str:
        return f"SetView({sorted(self)!r})"
