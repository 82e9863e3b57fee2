"""Values in Redis: a session snapshot, the deltas written after it, and journal positions,
as msgpack, with a schema version and decode limits.

Pure: bytes in, Python objects out; no I/O. :func:`decode_snapshot` never raises anything but
:class:`CodecError` for bad bytes (garbage, truncated, wrong shape or type, an unknown or
future schema version, over a size limit), so the tier can treat every bad value as a miss.

Format (schema 2)
=================

A snapshot is a msgpack array of nine items::

    [2,            schema version (any other is refused, a newer one never guessed at)
     version,      int >= 0: the snapshot's own version, for compare-and-set by the tier
     entry_count,  int >= 0
     watermark,    nil | [device, inode, offset, tail (bin, <= 4096 bytes), partial,
                   generation, mtime_ns] (six items, without mtime_ns, are read too)
     groups,       [[mask, count], ...]: consecutive runs of ``strings`` (see below)
     strings,      bin: UTF-8 of the strings joined by NUL | [bin, ...] when one holds a NUL
     index,        bin: every processed id, UTF-8, sorted bytewise and concatenated
     offsets,      bin: uint32 little-endian start of each id in ``index``, plus its end
     crc]          CRC-32 of ``index`` then ``offsets`` (damage is a miss, not a wrong answer)

The processed set is the sorted index: a decode wraps it (``SortedIds``, membership by
binary search) without building a Python string per id. ``strings`` holds every member of
the confirmed, deleted and claimed sets (mask bits 2, 4, 8) exactly once, normalized forms
included, exactly as ``SessionState`` holds them, cut into runs; a run's mask names the sets
that hold its strings (bit 1 marks more processed members: read, never written by this
build). Decoding those is one ``bytes.decode`` and one ``str.split``, then ``set()`` of list
slices. Any sets round-trip exactly, closed under normalization or not. Strings go through
UTF-8 with ``surrogatepass`` inside a ``bin`` (msgpack's own ``str`` refuses a lone
surrogate, which a JSON journal can hold), so every Python ``str`` round-trips.

A delta is ``[2, kind, [id (bin), ...], [[id (bin), deleted], ...], watermark]``
(:func:`encode_delta`); a position alone is the packed watermark (:func:`encode_watermark`).

Why this representation (measured)
==================================

(Measured for schema 1, whose runs held the processed ids too; schema 2 moved those into
the sorted index above, so a cold read no longer builds that set at all.)

A 20,000-entry session (ids ``toolu_01ABCDEFGH<n>``, ~10 % confirmed, ~3 % deleted: 40,000
processed, 4,010 confirmed and 1,196 deleted strings), decode of the value into an equal
``SessionState``, 150 interleaved runs after ``gc.collect()``, on the development VM (2
vCPUs, CPython 3.11, msgpack 1.1; slow and noisy: an empty 10^6-iteration loop takes ~60 ms
there against ~15 ms on a laptop)::

    layout                                            value    median   p10
    full sets, three msgpack arrays of str            925 KiB  8.40 ms  6.41 ms
    ids once, three arrays, forms per id in Python    473 KiB  12.06 ms 8.04 ms
    ids once + confirmed/deleted as index lists       426 KiB  11.17 ms 7.40 ms
    ids once, one ordered array, forms per id         419 KiB  10.45 ms 7.50 ms
    all strings, one ordered array of msgpack str     818 KiB  7.86 ms  5.78 ms
    ids once joined by NUL, replace + second split    419 KiB  9.52 ms  6.93 ms
    all strings joined by NUL (this codec)            818 KiB  7.90 ms  6.12 ms

Creating 40,000 ``str`` objects and hashing them into a set is the floor every layout
pays (``set(text.split(NUL))`` of 40,000 ids alone: ~7.3 ms median, ~6.7 ms p10 on that
VM); this codec stays within ~0.3 ms of it and ties with the plain array of ``str``, while
also round-tripping lone surrogates and arbitrary sets. Storing each id once and
recomputing the normalized forms halves the value but costs ~1.5 ms more to decode (one
``replace``, a second ``split`` into a second list) and still creates and hashes the same
40,000 strings; fetching the extra 400 KiB costs ~0.3-0.5 ms with ``HGET`` on loopback
(``scripts/bench_representation.py``), so storing the forms wins end to end by ~1 ms. The
price is Redis memory and bandwidth: each string plus one NUL, ~820 KiB for this session
instead of ~420 KiB; over a 1 Gbit/s link the extra 400 KiB would cost ~3 ms and the other
layout would win, which a new schema version could switch to. Decoding per id in Python
(index lists, per-id ``replace``) costs 25-50 % more: the decode stays in C.

Encoding (~20 ms for this session on the VM: set algebra over the four sets) is paid once
per full snapshot write, not per read.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Sequence, Set
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]

from offload_registry.changes import APPEND, CLAIMS
from offload_registry.disk.journal import FileIdentity, Watermark
from offload_registry.errors import CodecError
from offload_registry.jsjson import js_truthy
from offload_registry.session_state import DELETED, IdSet, SessionState, SortedIds

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_TAIL_BYTES",
    "SCHEMA_VERSION",
    "CodecError",
    "DecodedSnapshot",
    "Delta",
    "decode_delta",
    "decode_snapshot",
    "decode_watermark",
    "encode_delta",
    "encode_snapshot",
    "encode_watermark",
    "watermark_id",
]

SCHEMA_VERSION: Final = 2
"""The value schema this build writes and the only one it reads."""
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
"""Largest encoded snapshot :func:`decode_snapshot` accepts by default (64 MiB)."""
MAX_TAIL_BYTES: Final = 4096
"""Largest watermark ``tail`` accepted (the journal keeps 64 bytes)."""

_SEP: Final = "\x00"
_UTF8: Final = "utf-8"
_SURROGATES: Final = "surrogatepass"
_N_SETS: Final = 4  # processed, confirmed, deleted, claimed: mask bits 1, 2, 4, 8
_ALL_MASKS: Final = (1 << _N_SETS) - 1
_FIELDS: Final = 9
_WATERMARK_FIELDS: Final = 7


@dataclass(slots=True)
class DecodedSnapshot:
    """What :func:`decode_snapshot` returns: the state, claims and position of a snapshot."""

    state: SessionState
    claimed: set[str]
    watermark: Watermark | None
    version: int


# --- encoding -----------------------------------------------------------------------------


def _partition(sets: Sequence[Set[str]]) -> list[tuple[int, Set[str]]]:
    """Split the union of ``sets`` into runs of strings held by exactly the same sets.

    Runs holding processed strings come first, so the processed set is one prefix of the
    string list (the whole list unless some claimed id is not processed).
    """
    parts: list[tuple[int, Set[str]]] = [(0, set().union(*sets))]
    for bit, members in enumerate(sets):
        refined: list[tuple[int, Set[str]]] = []
        for mask, part in parts:
            inside = part & members
            if inside:
                refined.append((mask | 1 << bit, inside))
            if len(inside) < len(part):
                refined.append((mask, part - members if inside else part))
        parts = refined
    parts.sort(key=lambda item: (not item[0] & 1, -item[0]))
    return parts


def _to_bins(strings: Sequence[str]) -> list[bytes]:
    return [s.encode(_UTF8, _SURROGATES) for s in strings]


def _pack_watermark(watermark: Watermark | None) -> list[Any] | None:
    if watermark is None:
        return None
    identity = watermark.identity
    return [
        identity.device,
        identity.inode,
        watermark.offset,
        bytes(watermark.tail),
        watermark.partial,
        watermark.generation,
        watermark.mtime_ns,
    ]


def encode_snapshot(
    state: SessionState,
    claimed: Set[str],
    watermark: Watermark | None,
    version: int,
) -> bytes:
    """Encode a session snapshot (schema :data:`SCHEMA_VERSION`) for a Redis hash field.

    ``version`` is the snapshot's own counter (an ``int >= 0`` the tier compares and sets),
    not the schema version. The result decodes to an equal state, claims set, watermark and
    version, whatever the sets hold. Raises :class:`CodecError` for a negative or non-int
    ``version`` or ``entry_count``, a member that is not a ``str``, or a number msgpack
    cannot hold.
    """
    for name, number in (("version", version), ("entry_count", state.entry_count)):
        if type(number) is not int or number < 0:
            raise CodecError(f"cannot encode snapshot: {name} must be an int >= 0, not {number!r}")
    try:
        # The processed ids go into a sorted index (membership without building a set on
        # decode); the runs below then only carry the smaller sets.
        index_blob, index_offsets = _sorted_index(state.processed)
        parts = _partition((set(), set(state.confirmed), set(state.deleted), set(claimed)))
        strings: list[str] = []
        for _, part in parts:
            strings.extend(part)
        joined = _SEP.join(strings)
        packed_strings: bytes | list[bytes]
        if not strings or joined.count(_SEP) == len(strings) - 1:
            packed_strings = joined.encode(_UTF8, _SURROGATES)
        else:  # a string holds a NUL: one bin each
            packed_strings = _to_bins(strings)
        value = [
            SCHEMA_VERSION,
            version,
            state.entry_count,
            _pack_watermark(watermark),
            [[mask, len(part)] for mask, part in parts],
            packed_strings,
            index_blob,
            index_offsets,
            zlib.crc32(index_offsets, zlib.crc32(index_blob)),
        ]
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CodecError(f"cannot encode snapshot: {exc}") from exc
    return packed


# --- decoding -----------------------------------------------------------------------------


def _fail(reason: str) -> CodecError:
    return CodecError(f"not a session snapshot: {reason}")


def _uint(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise _fail(f"{name} must be an int >= 0, not {type(value).__name__}")
    return value


def _decode_watermark(value: Any) -> Watermark | None:
    if value is None:
        return None
    if type(value) is not list or len(value) not in {_WATERMARK_FIELDS - 1, _WATERMARK_FIELDS}:
        raise _fail(f"watermark must be nil or an array of {_WATERMARK_FIELDS}")
    if len(value) == _WATERMARK_FIELDS - 1:  # written before mtime_ns existed: not checked
        value = [*value, 0]
    device, inode, offset, tail, partial, generation, mtime_ns = value
    if type(tail) is not bytes or len(tail) > MAX_TAIL_BYTES:
        raise _fail(f"watermark tail must be at most {MAX_TAIL_BYTES} bytes of bin")
    return Watermark(
        FileIdentity(_uint(device, "device"), _uint(inode, "inode")),
        _uint(offset, "offset"),
        tail,
        _uint(partial, "partial"),
        _uint(generation, "generation"),
        _uint(mtime_ns, "mtime_ns"),
    )


def _decode_groups(value: Any) -> list[tuple[int, int]]:
    if type(value) is not list:
        raise _fail("groups must be an array")
    groups: list[tuple[int, int]] = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise _fail("each group must be [mask, count]")
        mask, count = item
        if type(mask) is not int or not 1 <= mask <= _ALL_MASKS:
            raise _fail(f"group mask must be an int in 1..{_ALL_MASKS}")
        if type(count) is not int or count < 1:
            raise _fail("group count must be an int >= 1")
        groups.append((mask, count))
    return groups


def _decode_strings(value: Any, total: int) -> list[str]:
    if type(value) is bytes:
        if total == 0:
            if value:
                raise _fail("strings given but no group counts them")
            return []
        strings = value.decode(_UTF8, _SURROGATES).split(_SEP)
    elif type(value) is list and all(type(item) is bytes for item in value):
        strings = [item.decode(_UTF8, _SURROGATES) for item in value]
    else:
        raise _fail("strings must be a bin or an array of bin")
    if len(strings) != total:
        raise _fail(f"groups count {total} strings but {len(strings)} are stored")
    return strings


def _build_set(groups: list[tuple[int, int]], strings: list[str], flag: int) -> set[str]:
    """The strings of the runs whose mask has ``flag``: whole list slices, in C."""
    ranges: list[list[int]] = []
    start = 0
    for mask, count in groups:
        if mask & flag:
            if ranges and ranges[-1][1] == start:
                ranges[-1][1] += count  # adjacent runs: one slice
            else:
                ranges.append([start, start + count])
        start += count
    if len(ranges) == 1 and ranges[0] == [0, len(strings)]:
        return set(strings)
    members: set[str] = set()
    for begin, end in ranges:
        members.update(strings[begin:end])
    return members


def decode_snapshot(
    data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> DecodedSnapshot:
    """Decode what :func:`encode_snapshot` wrote.

    Raises :class:`CodecError` (and nothing else) when ``data`` is not ``bytes``, is longer
    than ``max_bytes``, is not exactly one msgpack value (garbage, truncated, trailing
    bytes), has another schema version (a future one included), has the wrong shape or
    types, or breaks a limit: no string, bin, array or map may claim more elements than the
    input has bytes (so a forged length cannot make the decoder allocate), extension types
    are refused outright, and a watermark tail is at most :data:`MAX_TAIL_BYTES`. The schema
    version is checked before the shape, so a future version is reported as such whatever
    its layout.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        raise CodecError(f"snapshot of {size} bytes is over the {max_bytes}-byte limit")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=0,
        )
    except Exception as exc:  # anything msgpack raises on hostile bytes is a bad value
        raise _fail(f"invalid msgpack ({type(exc).__name__}: {exc})") from exc
    if type(value) is not list or not value:
        raise _fail("expected a msgpack array")
    schema = value[0]
    if type(schema) is not int:
        raise _fail("schema version must be an int")
    if schema != SCHEMA_VERSION:
        relation = "newer than" if schema > SCHEMA_VERSION else "not"
        raise CodecError(
            f"snapshot schema version {schema} is {relation} the one this build reads "
            f"({SCHEMA_VERSION})"
        )
    if len(value) != _FIELDS:
        raise _fail(f"expected {_FIELDS} fields, got {len(value)}")
    (_, version, entry_count, watermark, groups, packed_strings, blob, offsets, crc) = value
    decoded_groups = _decode_groups(groups)
    total = sum(count for _, count in decoded_groups)
    try:
        strings = _decode_strings(packed_strings, total)
    except UnicodeDecodeError as exc:
        raise _fail(f"a string is not UTF-8 ({exc})") from exc
    listed, confirmed, deleted, claimed = (
        _build_set(decoded_groups, strings, 1 << bit) for bit in range(_N_SETS)
    )
    processed = IdSet(listed, index=_decode_index(blob, offsets, crc))
    state = SessionState(confirmed, deleted, processed, _uint(entry_count, "entry_count"))
    return DecodedSnapshot(state, claimed, _decode_watermark(watermark), _uint(version, "version"))


def _sorted_index(ids: Set[str]) -> tuple[bytes, bytes]:
    """``(blob, offsets)``: the ids' UTF-8 sorted bytewise and concatenated, and the uint32
    little-endian offsets of each (one more than there are ids)."""
    # UTF-8 (surrogatepass too) keeps code point order, so sorting the str objects sorts
    # their encodings; one encode of the joined strings then serves every ASCII index.
    strings = sorted(ids)
    text = "".join(strings)
    blob = text.encode(_UTF8, _SURROGATES)
    if len(blob) == len(text):  # ASCII: one byte per character
        offsets = array("I", accumulate(map(len, strings), initial=0))
    else:
        sizes = (len(i.encode(_UTF8, _SURROGATES)) for i in strings)
        offsets = array("I", accumulate(sizes, initial=0))
    if sys.byteorder == "big":
        offsets.byteswap()
    return blob, offsets.tobytes()


def _decode_index(blob: Any, offsets: Any, crc: Any) -> SortedIds:
    """Check and wrap a sorted index: a CRC over it (so damage is a miss, not a wrong
    answer), offsets that start at 0 and end at the blob's length, and valid UTF-8."""
    if type(blob) is not bytes or type(offsets) is not bytes or type(crc) is not int:
        raise _fail("the processed index must be two bins and a CRC")
    if len(offsets) % 4 or not offsets:
        raise _fail("the processed index offsets must be uint32s, at least one")
    if zlib.crc32(offsets, zlib.crc32(blob)) != crc:
        raise _fail("the processed index does not match its CRC")
    positions = array("I")
    positions.frombytes(offsets)
    if sys.byteorder == "big":
        positions.byteswap()
    if positions[0] != 0 or positions[-1] != len(blob):
        raise _fail("the processed index offsets do not span its blob")
    try:
        blob.decode(_UTF8, _SURROGATES)
    except UnicodeDecodeError as exc:
        raise _fail(f"a processed id is not UTF-8 ({exc})") from exc
    return SortedIds(blob, positions)


# --- deltas and watermark ids ---------------------------------------------------------------


@dataclass(slots=True)
class Delta:
    """One change appended after a snapshot: journal lines written, or ids claimed."""

    kind: str
    ids: list[str]
    statuses: list[tuple[str, Any]]
    watermark: Watermark | None


def watermark_id(watermark: Watermark | None) -> str:
    """A short string naming a journal position, compared for equality inside Lua scripts
    (file identity, offset, and a CRC of the bytes before the offset), and parsed by
    ``lua/_order.lua`` to order two positions: keep its seven fields and their order."""
    if watermark is None:
        return ""
    identity = watermark.identity
    return (
        f"{identity.device}:{identity.inode}:{watermark.generation}:{watermark.offset}:"
        f"{watermark.partial}:{zlib.crc32(watermark.tail)}:{watermark.mtime_ns}"
    )


def encode_watermark(watermark: Watermark | None) -> bytes:
    packed: bytes = msgpack.packb(_pack_watermark(watermark), use_bin_type=True)
    return packed


def decode_watermark(data: bytes) -> Watermark | None:
    """Decode :func:`encode_watermark` output (``b""`` means none); :class:`CodecError` else."""
    if not data:
        return None
    try:
        value = msgpack.unpackb(data, raw=False, max_ext_len=0)
    except Exception as exc:
        raise _fail(f"invalid watermark ({type(exc).__name__}: {exc})") from exc
    return _decode_watermark(value)


def encode_delta(delta: Delta) -> bytes:
    """Pack a delta; statuses keep only what a rebuild reads (``True`` or ``"deleted"``)."""
    statuses = [
        [tool_call_id.encode(_UTF8, _SURROGATES), value == DELETED]
        for tool_call_id, value in delta.statuses
        if js_truthy(value)
    ]
    value = [
        SCHEMA_VERSION,
        delta.kind,
        _to_bins(delta.ids),
        statuses,
        _pack_watermark(delta.watermark),
    ]
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def decode_delta(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Delta:
    """Decode :func:`encode_delta` output; :class:`CodecError` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) > max_bytes:
        raise _fail("a delta must be bytes within the size limit")
    size = len(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=0,
            max_ext_len=0,
        )
        schema, kind, ids, statuses, watermark = value
        if schema != SCHEMA_VERSION or kind not in (APPEND, CLAIMS):
            raise _fail(f"unknown delta schema {schema!r} or kind {kind!r}")
        decoded_ids = [i.decode(_UTF8, _SURROGATES) for i in ids]
        decoded_statuses: list[tuple[str, Any]] = [
            (i.decode(_UTF8, _SURROGATES), DELETED if deleted is True else True)
            for i, deleted in statuses
        ]
    except CodecError:
        raise
    except Exception as exc:  # wrong shapes, types or bytes all mean: not our delta
        raise _fail(f"invalid delta ({type(exc).__name__}: {exc})") from exc
    return Delta(kind, decoded_ids, decoded_statuses, _decode_watermark(watermark))
