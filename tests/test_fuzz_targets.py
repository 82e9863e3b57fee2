"""Fuzz targets for the three parsers that read what others wrote: the journal line reader,
the snapshot (and delta, watermark) decoder, and the session key parser.

Each target is a property over hostile input with an oracle, not only "does not crash":

- the journal reader classifies every non-blank piece exactly once (entry, corrupt or
  invalid), and its fast status scan agrees with the full parse;
- the decoders raise :class:`CodecError` and nothing else on any bytes, mutated valid
  encodings included, and round-trip what the encoder wrote;
- the key parser follows the seed's split rule, and every key maps to safe, deterministic
  path components: an agent directory that is never ``.`` or ``..``, and a session id that
  stays inside its file name (``offload-<id>.jsonl``: ``.`` and ``..`` are fine there, as the
  seed names them).

The default suite runs each target briefly on hypothesis's fixed (derandomized) examples, so
it fails the same way on every run; the slow suite runs each for a fixed time budget
(``OFFLOAD_REGISTRY_FUZZ_SECONDS``, 20 s by default) with fresh random seeds. A failure
prints the minimal example; it becomes a regression test of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload_registry.codec import (
    CodecError,
    decode_delta,
    decode_snapshot,
    decode_watermark,
    encode_snapshot,
)
from offload_registry.disk.journal import parse_journal_bytes, scan_journal_bytes
from offload_registry.disk.layout import journal_name
from offload_registry.errors import InvalidSessionKeyError
from offload_registry.jsjson import js_trim, js_truthy
from offload_registry.keys import (
    is_safe_agent_name,
    is_safe_session_id,
    parse_session_key,
    resolve_identity,
)
from offload_registry.session_state import SessionState

FUZZ_SECONDS = float(os.environ.get("OFFLOAD_REGISTRY_FUZZ_SECONDS", "20"))
QUICK = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- inputs ---------------------------------------------------------------------------------

# Characters the seed treats specially, mixed with ordinary ones.
_SPECIAL = (
    "\u200b\u200c\u200f\ufeff\ufffd\u2028\u2029\x00\x01\x0b\x1f\x7f\x80\x9f\ud800\udfff"
    ":/\\.._<>|?*\"' \t\r"
)
tricky_text = st.text(
    alphabet=st.one_of(st.sampled_from(_SPECIAL), st.characters(codec=None)), max_size=40
)
ids = st.one_of(tricky_text, st.sampled_from(["call_1", "call1", "", "_", "\u200b", "x\u200b"]))
statuses = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["deleted", "false", "", 0, 1, 2.5, [], {}]),
)


@st.composite
def journal_line(draw: st.DrawFn) -> bytes:
    """One line as our writer, the seed, a crash or an attacker could have left it."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:  # an entry, written as JSON text by hand (keeps odd escapes and nesting)
        tool_call_id = draw(ids)
        status = draw(statuses)
        escaped = tool_call_id.encode("utf-8", "surrogatepass").decode("latin-1")
        quoted = escaped.replace("\\", "\\\\").replace('"', '\\"')
        body = '{"tool_call_id": "' + quoted + '"'
        if status is not None or draw(st.booleans()):
            body += ', "offloaded": ' + _json_literal(status)
        return (body + "}").encode("latin-1", "replace")
    if kind == 2:  # deep nesting
        depth = draw(st.integers(1, 3000))
        return ('{"tool_call_id": "deep", "x": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == 3:  # a valid line damaged: truncated, or with a byte flipped
        line = b'{"tool_call_id":"call_9","offloaded":true,"summary":"s"}'
        cut = draw(st.integers(0, len(line)))
        flip = draw(st.integers(0, 255))
        return line[:cut] + bytes([flip]) + line[cut + 1 :]
    if kind == 4:  # whitespace, byte-order marks and line separators around an entry
        pad = draw(st.sampled_from(["", " ", "\t", "\r", "\ufeff", "\u2028", "\xa0"]))
        return f'{pad}{{"tool_call_id":"p"}}{pad}'.encode()
    return draw(st.sampled_from([b"", b" ", b"\r", b"null", b"[]", b'"x"', b"{}", b"\xff\xfe"]))


def _json_literal(value: object) -> str:
    return json.dumps(value)


journal_bytes = st.lists(journal_line(), max_size=12).map(b"\n".join)


# -- targets ----------------------------------------------------------------------------------


def journal_reader_target(data: bytes) -> None:
    entries, corrupt, invalid = parse_journal_bytes(data)
    pieces = [p for p in data.split(b"\n") if js_trim(p.decode("utf-8", "replace"))]
    assert len(entries) + corrupt + invalid == len(pieces)
    for entry in entries:
        assert type(entry["tool_call_id"]) is str and entry["tool_call_id"]
    scanned_ids, scanned_statuses, scan_corrupt, scan_invalid = scan_journal_bytes(data)
    assert (scan_corrupt, scan_invalid) == (corrupt, invalid)
    assert scanned_ids == [e["tool_call_id"] for e in entries]
    full = [
        (e["tool_call_id"], js_truthy(e["offloaded"]), e["offloaded"] == "deleted")
        for e in entries
        if e.get("offloaded") is not None
    ]
    fast = [(i, js_truthy(s), s == "deleted") for i, s in scanned_statuses]
    assert fast == full


def decoders_on_any_bytes_target(data: bytes) -> None:
    for decode in (decode_snapshot, decode_delta, decode_watermark):
        with contextlib.suppress(CodecError):
            decode(data)


id_sets = st.sets(tricky_text.filter(bool), max_size=12)


def snapshot_round_trip_and_mutation_target(
    processed: set[str], claimed: set[str], version: int, data: st.DataObject
) -> None:
    processed = {i.encode("utf-8", "replace").decode() for i in processed}
    claimed = {i.encode("utf-8", "replace").decode() for i in claimed}
    confirmed = {i for i in processed if len(i) % 2 == 0}
    deleted = {i for i in confirmed if len(i) % 4 == 0}
    state = SessionState(set(confirmed), set(deleted), set(processed), len(processed))
    blob = encode_snapshot(state, claimed, None, version)
    decoded = decode_snapshot(blob)
    assert set(decoded.state.processed) == processed
    assert set(decoded.state.confirmed) == confirmed
    assert set(decoded.state.deleted) == deleted
    assert set(decoded.claimed) == claimed and decoded.version == version
    at = data.draw(st.integers(0, max(0, len(blob) - 1)))
    mutated = blob[:at] + bytes([data.draw(st.integers(0, 255))]) + blob[at + 1 :]
    for candidate in (mutated, blob[:at], blob + b"\x00"):
        with contextlib.suppress(CodecError):
            decode_snapshot(candidate)


def key_parser_target(key: str, real_session_id: str | None) -> None:
    parts = key.split(":")
    seed_parses = len(parts) >= 3 and parts[0] == "agent" and parts[1] != ""
    seed_parses = seed_parses and ":".join(parts[2:]) != ""
    assert (parse_session_key(key) is not None) == seed_parses
    try:
        identity = resolve_identity(key, real_session_id)
    except InvalidSessionKeyError:
        return
    assert is_safe_agent_name(identity.agent_name)  # a directory of its own
    assert identity.agent_name not in (".", "..")
    assert is_safe_session_id(identity.session_id)  # a part of a file name only
    for component in (identity.agent_name, identity.session_id):
        assert "/" not in component and "\x00" not in component
    journal = Path("data-root") / identity.agent_name / journal_name(identity.session_id)
    assert journal.parent.parent == Path("data-root")  # the id never leaves its file name
    assert resolve_identity(key, real_session_id) == identity  # deterministic


def test_a_session_id_of_dots_stays_inside_its_journal_name() -> None:
    # Found by the key_parser fuzz target (a fresh seed): "." as the real session id.
    identity = resolve_identity("", ".")
    assert identity.session_id == "."
    key_parser_target("", ".")
    key_parser_target("agent:a:b", "..")


TARGETS: dict[str, tuple[Callable[..., None], tuple[st.SearchStrategy[Any], ...]]] = {
    "journal_reader": (journal_reader_target, (journal_bytes,)),
    "decoders_on_any_bytes": (decoders_on_any_bytes_target, (st.binary(max_size=300),)),
    "snapshot_round_trip_and_mutation": (
        snapshot_round_trip_and_mutation_target,
        (id_sets, id_sets, st.integers(0, 10**6), st.data()),
    ),
    "key_parser": (key_parser_target, (tricky_text, st.one_of(st.none(), tricky_text))),
}


def fuzzer(name: str, examples: int, *, fixed: bool = False) -> Callable[[], None]:
    """A fresh hypothesis test of the target: a random seed of its own on every call, or
    hypothesis's derandomized examples when ``fixed``."""
    body, strategies = TARGETS[name]
    chosen = settings(QUICK, max_examples=examples, derandomize=fixed)
    test: Callable[[], None] = chosen(given(*strategies)(body))
    return test


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_fuzz_target_holds_on_a_short_run(name: str) -> None:
    fuzzer(name, examples=150, fixed=True)()


@pytest.mark.slow
@pytest.mark.timeout(int(FUZZ_SECONDS * 3) + 60)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_fuzz_target_holds_for_its_time_budget(name: str) -> None:
    budget = fuzzer(name, examples=500)
    deadline = time.monotonic() + FUZZ_SECONDS
    runs = 0
    while time.monotonic() < deadline:
        budget()  # each call draws from a fresh random seed
        runs += 1
    print(f"fuzz {name}: {runs} x 500 examples in {FUZZ_SECONDS:.0f} s")
    assert runs >= 1
