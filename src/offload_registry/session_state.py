"""The per-session offload state rebuilt from a journal: pure data and pure functions.

The rules are the seed's (SEED-SPEC "The state rebuilt when a session is resolved"): every
id set holds each id and, where different, its normalized form (the id with ``_`` removed).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, overload

from offload_registry.errors import InvalidToolCallIdError
from offload_registry.jsjson import clean_json, js_truthy, strip_unsafe

DELETED = "deleted"


def canonical_tool_call_id(raw: object) -> str:
    """The one form of a tool call id that every call, set, Redis key and record uses: the
    id a reader of the journal gets back, i.e. ``raw`` without SEED-SPEC's unsafe characters
    (the journal writer strips them from every string it writes). Idempotent.

    Raises :class:`InvalidToolCallIdError` when ``raw`` is not a ``str`` or strips to ``""``
    (a reader would count such an entry invalid and drop it, so it could never be found).
    A ``str`` subclass gives a plain ``str``, as the writer would write it.
    """
    if not isinstance(raw, str):
        raise InvalidToolCallIdError(raw, "a tool_call_id must be a non-empty string")
    canonical = strip_unsafe(str(raw))
    if not canonical:
        if not raw:
            raise InvalidToolCallIdError(raw, "a tool_call_id must be a non-empty string")
        raise InvalidToolCallIdError(raw, "nothing is left once unsafe characters are stripped")
    return canonical


def canonical_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as a reader of the journal gets it back (:func:`~offload_registry.jsjson.
    clean_json`: every string and key without unsafe characters), with its canonical id.

    The id is taken after the keys are cleaned, as the reader takes it: a ``tool_call_id``
    key spelled with unsafe characters is the id field on disk too. Raises
    :class:`InvalidToolCallIdError` when the entry has no valid id.
    """
    cleaned = clean_json(entry)
    if not isinstance(cleaned, dict):
        raise InvalidToolCallIdError(entry, "an entry must be a mapping with a tool_call_id")
    tool_call_id = cleaned.get("tool_call_id")
    if type(tool_call_id) is str and tool_call_id:  # cleaned: already stripped, a plain str
        return cleaned
    # Name the caller's spelling; the keys say which entry (a summary may be long).
    raw = entry.get("tool_call_id", tool_call_id)
    reason = (
        "nothing is left once unsafe characters are stripped"
        if isinstance(raw, str) and raw
        else "a tool_call_id must be a non-empty string"
    )
    raise InvalidToolCallIdError(raw, f"{reason} (in an entry with keys {sorted(map(str, entry))})")


def normalize_id(tool_call_id: str) -> str:
    """The seed's normalized form of a tool call id: the id with every ``_`` removed.

    Like :func:`id_forms`, applied to canonical ids (see :func:`canonical_tool_call_id`)
    everywhere except to ids read from a journal, which are kept as read."""
    return tool_call_id.replace("_", "")


def id_forms(tool_call_id: str) -> tuple[str, ...]:
    """The id and, when it differs, its normalized form."""
    normalized = tool_call_id.replace("_", "")
    return (tool_call_id,) if normalized == tool_call_id else (tool_call_id, normalized)


def is_plain(tool_call_id: str) -> bool:
    """True when the id can hold no character the writer strips (printable ASCII): the
    common case, checked without a regular expression."""
    return tool_call_id.isascii() and tool_call_id.isprintable()


def canonical_forms(tool_call_id: str) -> tuple[str, ...]:
    """For an id read from a journal that holds characters the writer strips (one another
    tool wrote): its canonical form and that form's normalized one, the spellings every API
    call uses for it (empty for a plain id, or one with nothing left once stripped)."""
    if is_plain(tool_call_id):
        return ()
    canonical = strip_unsafe(tool_call_id)
    return tuple(f for f in dict.fromkeys((canonical, canonical.replace("_", ""))) if f)


_PLAIN_BYTES = bytes(range(0x20, 0x7F))
"""The bytes of printable ASCII: deleting them from a blob leaves its non-plain bytes."""


def foreign_forms(ids: Iterable[str]) -> set[str]:
    """:func:`canonical_forms` of every id in ``ids`` (only the rare non-plain ids cost)."""
    if isinstance(ids, list) and all_plain(ids):
        return set()
    return {form for i in ids if type(i) is str and not is_plain(i) for form in canonical_forms(i)}


def all_plain(ids: list[str]) -> bool:
    """True when every id is plain (:func:`is_plain`): two C scans of the ids joined, instead
    of two calls per id (a journal's ids are nearly always all plain)."""
    try:
        joined = "".join(ids)
    except TypeError:  # not all str: let the caller look at each
        return False
    return joined.isascii() and joined.isprintable()


STRING_BYTES = 49 + 32
"""What one id string costs in CPython, approximately: the header of a compact ASCII ``str``
plus a typical tool call id's length (used to weigh cached sessions, not for accounting)."""
SET_SLOT_BYTES = 24
"""Amortized bytes per member of a ``set`` table (hash + pointer, at its usual fill)."""


def approx_set_bytes(members: int) -> int:
    return members * (STRING_BYTES + SET_SLOT_BYTES)


class SortedIds(Sequence[bytes]):
    """Ids as one UTF-8 blob, sorted bytewise, with the offset of each: a frozen index
    that answers membership by binary search without building any Python string."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: bytes, offsets: Sequence[int]) -> None:
        self.blob = blob
        self.offsets = offsets  # len(ids) + 1 entries: id i is blob[offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        offsets = self.offsets
        return self.blob[offsets[index] : offsets[index + 1]]

    def has(self, key: bytes) -> bool:
        at = bisect_left(self, key)
        return at < len(self) and self[at] == key

    def strings(self) -> list[str]:
        text = self.blob.decode("utf-8", "surrogatepass")
        if text.isascii():  # one character per byte: slice the text by the same offsets
            offsets = self.offsets
            return [text[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return [item.decode("utf-8", "surrogatepass") for item in self]


class IdSet(MutableSet[str]):
    """A set of ids: an optional frozen :class:`SortedIds` index (from a Redis snapshot, so a
    cold resolve builds no Python set) plus a plain set of the ids added since.

    Membership costs a binary search (microseconds) for ids in the index; iterating builds
    the strings once. Without an index it is a thin wrapper of a ``set``.
    """

    __slots__ = ("_added", "_index", "_strings")

    def __init__(self, items: Iterable[str] = (), *, index: SortedIds | None = None) -> None:
        self._index = index
        self._strings: list[str] | None = None
        self._added: set[str] = set()
        self.update(items)

    def __contains__(self, item: object) -> bool:
        if item in self._added:
            return True
        index = self._index
        if index is None or type(item) is not str:
            return False
        return index.has(item.encode("utf-8", "surrogatepass"))

    def __iter__(self) -> Iterator[str]:
        if self._index is None:
            return iter(self._added)
        if self._strings is None:
            self._strings = self._index.strings()
        return chain(self._strings, self._added)

    def __len__(self) -> int:
        return len(self._added) + (0 if self._index is None else len(self._index))

    def add(self, value: str) -> None:
        if self._index is None or value not in self:
            self._added.add(value)

    def discard(self, value: str) -> None:
        if self._index is not None and value not in self._added and value in self:
            self._added = set(self)  # rare: give up the index
            self._index = self._strings = None
        self._added.discard(value)

    def update(self, items: Iterable[str]) -> None:
        if self._index is None:
            self._added.update(items)
        else:
            for item in items:
                self.add(item)

    def __ior__(self, other: AbstractSet[Any]) -> IdSet:  # type: ignore[misc]
        self.update(other)
        return self

    def non_plain(self) -> list[str]:
        """The members that are not printable ASCII (see :func:`is_plain`): one bytes scan of
        the index, which builds no string unless such a member exists.

        The scan is ``bytes.translate`` deleting the printable bytes (a table lookup per
        byte, ~0.3 ms for 20,000 ids; the regular expression it replaces took ~2.3 ms on
        every load from Redis): anything left is a byte outside 0x20-0x7e, the same test."""
        found = [i for i in self._added if not is_plain(i)]
        index = self._index
        if index is not None and index.blob.translate(None, _PLAIN_BYTES):
            found += [i for i in index.strings() if not is_plain(i)]
        return found

    def approx_bytes(self) -> int:
        """Approximate memory held: the index (blob and offsets), its decoded strings when
        built, and the added set."""
        total = approx_set_bytes(len(self._added))
        if self._index is not None:
            total += len(self._index.blob) + 8 * len(self._index.offsets)
            if self._strings is not None:
                total += len(self._strings) * (STRING_BYTES + 8)
        return total

    def __repr__(self) -> str:
        return f"IdSet({len(self)} ids)"


@dataclass(slots=True)
class SessionState:
    """Confirmed, deleted and processed ids plus the entry counter of one session's journal.

    Built only from valid journal entries; runtime-only state lives on the manager.
    """

    confirmed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    processed: IdSet = field(default_factory=IdSet)
    entry_count: int = 0
    foreign: set[str] = field(default_factory=set)
    """Canonical forms of the ids in ``processed`` that hold characters the writer strips
    (another tool wrote them): a caller's canonical spelling finds them here, while the
    public sets keep exactly what the seed reads. Derived from ``processed``; never stored."""

    def __post_init__(self) -> None:
        processed = self.processed
        if not self.foreign and processed:
            odd = processed.non_plain() if isinstance(processed, IdSet) else processed
            self.foreign = foreign_forms(odd)

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
            if not is_plain(tool_call_id):
                self.foreign.update(canonical_forms(tool_call_id))
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
        self.foreign |= foreign_forms(ids)
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
        self.foreign |= newer.foreign
        self.confirmed |= newer.confirmed
        self.deleted |= newer.deleted
        self.entry_count += newer.entry_count

    def approx_bytes(self) -> int:
        """Approximate memory held by the sets (an estimate from their sizes: O(1))."""
        sets = approx_set_bytes(len(self.confirmed) + len(self.deleted))
        return sets + self.processed.approx_bytes()

    def contains_id(self, tool_call_id: str) -> bool:
        """True when the journal already holds this id or one with the same normalized form
        (ids another tool wrote with stripped characters count by their canonical form)."""
        processed, foreign = self.processed, self.foreign
        return any(form in processed or form in foreign for form in id_forms(tool_call_id))


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
