"""Session snapshots in msgpack: exact round trips, and every bad value is a CodecError."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_registry.codec import (
    SCHEMA_VERSION,
    CodecError,
    DecodedSnapshot,
    decode_snapshot,
    decode_watermark,
    encode_snapshot,
    encode_watermark,
)
from offload_registry.disk.journal import FileIdentity, Watermark
from offload_registry.errors import OffloadRegistryError
from offload_registry.session_state import SessionState, id_forms

WATERMARK = Watermark(FileIdentity(2049, 131_077), 9_437_184, b'"score":5}\n')


def state_of(entries: Iterable[tuple[str, Any]]) -> SessionState:
    """The state a journal of ``(tool_call_id, offloaded)`` entries rebuilds to."""
    return SessionState.from_entries(
        {"tool_call_id": i} if offloaded is None else {"tool_call_id": i, "offloaded": offloaded}
        for i, offloaded in entries
    )


def claims_of(ids: Iterable[str]) -> set[str]:
    return {form for i in ids for form in id_forms(i)}


def round_trip(
    state: SessionState,
    claimed: set[str] | None = None,
    watermark: Watermark | None = WATERMARK,
    version: int = 7,
) -> DecodedSnapshot:
    return decode_snapshot(encode_snapshot(state, claimed or set(), watermark, version))


def raw(value: list[Any]) -> bytes:
    """Hand-made snapshot bytes, for shapes ``encode_snapshot`` never writes."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


EMPTY_INDEX_OFFSETS = b"\x00\x00\x00\x00"


def empty_index() -> list[Any]:
    """The three trailing fields of a snapshot whose processed ids all sit in the runs."""
    return [b"", EMPTY_INDEX_OFFSETS, zlib.crc32(EMPTY_INDEX_OFFSETS, zlib.crc32(b""))]


def valid_fields() -> list[Any]:
    return [SCHEMA_VERSION, 1, 2, None, [[3, 2]], b"a_b\x00c", *empty_index()]


def large_state(n: int = 20_000) -> SessionState:
    def status(k: int) -> Any:
        return "deleted" if k % 33 == 0 else True if k % 10 == 0 else None

    return state_of((f"toolu_01ABCDEFGH{k}", status(k)) for k in range(n))


SMALL = state_of([("call_1", True), ("call_2", "deleted"), ("c3", None), ("call_4", None)])


# --- round trips --------------------------------------------------------------------------


def test_round_trip_of_a_journal_state_is_exact() -> None:
    decoded = round_trip(SMALL, claims_of(["call_9", "x"]))
    assert decoded.state == SMALL
    assert decoded.claimed == claims_of(["call_9", "x"])
    assert decoded.watermark == WATERMARK
    assert decoded.version == 7


def test_round_trip_of_a_20000_entry_session_is_exact() -> None:
    state = large_state()
    claimed = claims_of(f"toolu_01ABCDEFGH{k}" for k in range(19_900, 20_100))
    decoded = round_trip(state, claimed)
    assert decoded.state == state
    assert decoded.claimed == claimed


def test_round_trip_of_an_empty_state() -> None:
    decoded = round_trip(SessionState(), watermark=None, version=0)
    assert decoded == DecodedSnapshot(SessionState(), set(), None, 0)


def test_round_trip_keeps_entry_count_with_duplicate_entries() -> None:
    state = state_of([("a_1", None), ("a_1", None), ("a1", True)])
    assert round_trip(state).state == state


def test_ids_that_are_each_others_normalized_forms_round_trip() -> None:
    state = state_of([("a_b", None), ("ab", True), ("_x_", "deleted"), ("x", None)])
    assert round_trip(state, claims_of(["ab"])).state == state


def test_a_snapshot_stores_each_processed_id_once_in_its_index_and_once_per_other_run() -> None:
    state = state_of([(f"toolu_{k:04}", "deleted") for k in range(100)])
    encoded = encode_snapshot(state, claims_of(["toolu_0042"]), None, 1)
    # Once in the sorted processed index, once in the run of the confirmed, deleted and
    # claimed sets (which all hold it): never once per set.
    assert encoded.count(b"toolu_0042") == 2
    assert encoded.count(b"toolu0042") == 2


def test_a_damaged_processed_index_is_a_codec_error() -> None:
    encoded = bytearray(encode_snapshot(SMALL, set(), None, 1))
    blob = msgpack.unpackb(bytes(encoded))[6]
    encoded[encoded.index(blob) + 1] ^= 0x01  # one flipped bit inside the processed index
    with pytest.raises(CodecError):
        decode_snapshot(bytes(encoded))


def test_ids_holding_nul_and_separators_round_trip() -> None:
    state = state_of([("a\x00b", True), ("c_\x00_d", "deleted"), ("", None)])
    assert round_trip(state, {"k\x00"}).state == state


def test_lone_surrogates_round_trip() -> None:
    state = state_of([("\ud800_x", True), ("\udfff", None)])
    decoded = round_trip(state, claims_of(["\udc80_y"]))
    assert decoded.state == state
    assert decoded.claimed == claims_of(["\udc80_y"])


def test_sets_not_closed_under_normalization_round_trip_exactly() -> None:
    state = SessionState(confirmed={"a_b"}, deleted={"x_y", "q"}, processed={"a_b", "c"})
    decoded = round_trip(state, {"only_raw"})
    assert decoded.state == state
    assert decoded.claimed == {"only_raw"}


def test_frozensets_and_other_set_types_encode() -> None:
    assert round_trip(SMALL, frozenset({"z"})).claimed == {"z"}  # type: ignore[arg-type]


ids = st.text(st.characters(exclude_categories=()), max_size=12)
statuses = st.sampled_from([None, True, "deleted", False, 0, "", "false", 1])


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(st.tuples(ids, statuses), max_size=40),
    claimed=st.lists(ids, max_size=10),
    version=st.integers(0, 2**64 - 1),
    watermark=st.none()
    | st.builds(
        Watermark,
        st.builds(FileIdentity, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
        st.integers(0, 2**63),
        st.binary(max_size=64),
    ),
)
def test_any_journal_state_round_trips(
    entries: list[tuple[str, Any]], claimed: list[str], version: int, watermark: Watermark | None
) -> None:
    state = state_of(entries)
    decoded = round_trip(state, claims_of(claimed), watermark, version)
    assert decoded == DecodedSnapshot(state, claims_of(claimed), watermark, version)


@settings(max_examples=200, deadline=None)
@given(sets=st.lists(st.sets(ids, max_size=8), min_size=4, max_size=4), count=st.integers(0, 99))
def test_any_sets_round_trip(sets: list[set[str]], count: int) -> None:
    state = SessionState(sets[1], sets[2], sets[0], count)
    decoded = round_trip(state, sets[3])
    assert (decoded.state, decoded.claimed) == (state, sets[3])


# --- encoding refusals --------------------------------------------------------------------


@pytest.mark.parametrize("version", [-1, True, 1.5])
def test_encoding_refuses_a_bad_version(version: Any) -> None:
    with pytest.raises(CodecError, match="version"):
        encode_snapshot(SMALL, set(), None, version)


def test_encoding_refuses_a_non_str_id() -> None:
    with pytest.raises(CodecError):
        encode_snapshot(SessionState(processed={1}), set(), None, 0)  # type: ignore[arg-type]


def test_encoding_refuses_a_version_msgpack_cannot_hold() -> None:
    with pytest.raises(CodecError):
        encode_snapshot(SMALL, set(), None, 2**64)


# --- decoding refusals: all CodecError ----------------------------------------------------


def test_codec_error_is_an_offload_registry_error() -> None:
    assert issubclass(CodecError, OffloadRegistryError)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"garbage bytes", b"\xff" * 64, b"\x00", b"\x92\x01", b"\xdd\xff\xff\xff\xff"],
)
def test_garbage_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_snapshot(data)


def test_every_truncation_of_a_snapshot_is_a_codec_error() -> None:
    data = encode_snapshot(SMALL, claims_of(["call_9"]), WATERMARK, 3)
    for length in range(len(data)):
        with pytest.raises(CodecError):
            decode_snapshot(data[:length])


def test_trailing_bytes_are_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_snapshot(encode_snapshot(SMALL, set(), None, 0) + b"\x00")


def test_a_future_schema_version_is_a_codec_error() -> None:
    fields = valid_fields()
    fields[0] = SCHEMA_VERSION + 1
    with pytest.raises(CodecError, match="newer"):
        decode_snapshot(raw(fields))


def test_a_future_schema_with_another_shape_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="newer"):
        decode_snapshot(raw([SCHEMA_VERSION + 1, {"entirely": "different"}]))


@pytest.mark.parametrize("schema", [0, -1, "1", None, True])
def test_an_unknown_schema_version_is_a_codec_error(schema: Any) -> None:
    fields = valid_fields()
    fields[0] = schema
    with pytest.raises(CodecError):
        decode_snapshot(raw(fields))


def test_the_hand_made_valid_fields_decode() -> None:
    decoded = decode_snapshot(raw(valid_fields()))
    assert decoded.state == SessionState({"a_b", "c"}, set(), {"a_b", "c"}, 2)


def test_one_bin_per_string_decodes_like_the_joined_form() -> None:
    fields = valid_fields()
    fields[5] = [b"a_b", b"c"]
    assert decode_snapshot(raw(fields)) == decode_snapshot(raw(valid_fields()))


def test_a_run_can_belong_to_the_claimed_set_only() -> None:
    fields = [SCHEMA_VERSION, 0, 0, None, [[1, 1], [8, 1]], b"p\x00k", *empty_index()]
    decoded = decode_snapshot(raw(fields))
    assert (decoded.state.processed, decoded.claimed) == ({"p"}, {"k"})


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, -1),
        (1, "1"),
        (1, False),
        (2, None),
        (2, 1.0),
        (3, [1, 2, 3]),
        (3, [1, 2, 3, "tail"]),
        (3, [-1, 2, 3, b""]),
        (3, [1, 2, 3, b"x" * 4097]),
        (3, {}),
        (4, None),
        (4, [[3]]),
        (4, [[0, 2]]),
        (4, [[16, 2]]),
        (4, [[3, 0], [1, 2]]),
        (4, [[3, "2"]]),
        (4, [[3, 1]]),
        (4, [[3, 3]]),
        (5, "a_b\x00c"),
        (5, None),
        (5, [b"a_b"]),
        (5, [b"a_b", "c"]),
        (5, b"\xff\xfe\x00c"),
        (5, [b"\xff", b"c"]),
        (5, [b"a", 1]),
    ],
)
def test_wrong_field_types_and_shapes_are_codec_errors(index: int, value: Any) -> None:
    fields = valid_fields()
    fields[index] = value
    with pytest.raises(CodecError):
        decode_snapshot(raw(fields))


@pytest.mark.parametrize(
    "value", [None, 1, "str", {"a": 1}, [], valid_fields()[:5], [*valid_fields(), None]]
)
def test_wrong_top_level_shapes_are_codec_errors(value: Any) -> None:
    with pytest.raises(CodecError):
        decode_snapshot(raw(value) if not isinstance(value, bytes) else value)


def test_ids_without_groups_are_a_codec_error() -> None:
    fields = valid_fields()
    fields[4] = []
    with pytest.raises(CodecError):
        decode_snapshot(raw(fields))


def test_extension_types_are_codec_errors() -> None:
    fields = valid_fields()
    fields[1] = msgpack.ExtType(5, b"x")
    with pytest.raises(CodecError):
        decode_snapshot(raw(fields))


def test_deep_nesting_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_snapshot(b"\x91" * 100_000)


def test_a_value_over_max_bytes_is_a_codec_error() -> None:
    data = encode_snapshot(SMALL, set(), None, 0)
    with pytest.raises(CodecError, match="limit"):
        decode_snapshot(data, max_bytes=len(data) - 1)
    assert decode_snapshot(data, max_bytes=len(data)).state == SMALL


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd\x7f\xff\xff\xff",  # array32 claiming 2**31 - 1 items
        b"\xdf\x7f\xff\xff\xff",  # map32 claiming 2**31 - 1 pairs
        b"\xdb\x7f\xff\xff\xff",  # str32 claiming 2 GiB
        b"\xc6\x7f\xff\xff\xff",  # bin32 claiming 2 GiB
    ],
)
def test_forged_lengths_over_the_input_size_are_codec_errors(header: bytes) -> None:
    with pytest.raises(CodecError):
        decode_snapshot(header + b"\x00" * 16)


def test_a_map_is_refused_even_when_small() -> None:
    with pytest.raises(CodecError):
        decode_snapshot(raw([SCHEMA_VERSION, {"a": 1}, 0, None, [], b""]))


@pytest.mark.parametrize("data", ["text", None, 42])
def test_non_bytes_input_is_a_codec_error(data: Any) -> None:
    with pytest.raises(CodecError, match="bytes"):
        decode_snapshot(data)


def test_bytearray_and_memoryview_inputs_decode() -> None:
    data = encode_snapshot(SMALL, set(), None, 0)
    assert decode_snapshot(bytearray(data)).state == SMALL
    assert decode_snapshot(memoryview(data)).state == SMALL


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_snapshot(data)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_any_single_byte_corruption_decodes_or_raises_codec_error(position: int, byte: int) -> None:
    data = bytearray(encode_snapshot(SMALL, claims_of(["call_9"]), WATERMARK, 3))
    data[position % len(data)] = byte
    with contextlib.suppress(CodecError):
        decode_snapshot(bytes(data))


def test_a_watermark_written_before_mtime_existed_decodes_with_the_check_off() -> None:
    old = msgpack.packb([1, 2, 30, b"tail", 0, 4], use_bin_type=True)
    assert decode_watermark(old) == Watermark(FileIdentity(1, 2), 30, b"tail", 0, 4, 0)


def test_a_watermark_round_trips_with_its_mtime() -> None:
    watermark = Watermark(FileIdentity(1, 2), 30, b"tail", 3, 4, 1_700_000_000_123_456_789)
    assert decode_watermark(encode_watermark(watermark)) == watermark


def test_the_module_docstring_describes_the_format_this_build_writes() -> None:
    from offload_registry import codec  # noqa: PLC0415

    doc = codec.__doc__ or ""
    written = msgpack.unpackb(encode_snapshot(state_of([("toolu_1", True)]), set(), None, 1))
    words = {9: "nine", 6: "six"}
    assert written[0] == SCHEMA_VERSION
    assert f"Format (schema {SCHEMA_VERSION})" in doc
    assert f"A snapshot is a msgpack array of {words[len(written)]} items" in doc
