"""The rebuild's fast status scan gives exactly what the full, seed-exact parse gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from offload_registry.disk.journal import (
    parse_journal_bytes,
    read_journal,
    scan_journal,
    scan_journal_bytes,
)
from offload_registry.jsjson import js_truthy
from offload_registry.session_state import SessionState

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)

DAMAGE = [
    b"",
    b"\xef\xbb\xbf",
    b"\r",
    b" \t",
    b"\xc2\xa0",
    b"\xe2\x80\xa8",
    b"\xc2\x85",
    b"\x01",
    b"\xff",
    b"\xed\xa0\x80",
    b"NaN",
    b'"\\ud800"',
    b",",
    b"}",
    b'"offloaded":"deleted",',
    b'"tool_call_id":"dup",',
]


@st.composite
def journal_lines(draw: st.DrawFn) -> bytes:
    entry: dict[str, Any] = {"tool_call_id": draw(st.text(max_size=6))}
    if draw(st.booleans()):
        entry["offloaded"] = draw(json_values)
    if draw(st.booleans()):
        entry["summary"] = draw(st.text(max_size=10))
    line = json.dumps(entry, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(DAMAGE)) + line[at:]
    return line


def projection(data: bytes) -> tuple[list[str], list[tuple[str, Any]], int, int]:
    entries, corrupt, invalid = parse_journal_bytes(data)
    ids = [e["tool_call_id"] for e in entries]
    statuses = [
        (e["tool_call_id"], e["offloaded"]) for e in entries if e.get("offloaded") is not None
    ]
    return ids, statuses, corrupt, invalid


@settings(max_examples=400, deadline=None)
@given(st.lists(journal_lines(), max_size=12), st.booleans())
def test_the_scan_agrees_with_the_full_parse_on_any_damaged_journal(
    lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    ids, statuses, corrupt, invalid = scan_journal_bytes(data)
    want_ids, want_statuses, want_corrupt, want_invalid = projection(data)
    assert (ids, corrupt, invalid) == (want_ids, want_corrupt, want_invalid)
    # Only what a rebuild reads of a status must agree: its truthiness and "deleted"-ness
    # (msgspec keeps integers beyond 64 bits exact where JSON.parse rounds them to floats).
    assert [(i, js_truthy(v), v == "deleted") for i, v in statuses] == [
        (i, js_truthy(v), v == "deleted") for i, v in want_statuses
    ]
    entries = parse_journal_bytes(data)[0]
    assert SessionState.from_scan(ids, statuses) == SessionState.from_entries(entries)


def test_the_scan_agrees_with_the_full_parse_on_the_seed_sample(sample_dir: Path) -> None:
    journals = sorted((sample_dir / "root").rglob("offload-*.jsonl"))
    assert len(journals) >= 8
    for path in journals:
        scan, read = scan_journal(path, lock=False), read_journal(path, lock=False)
        assert scan.ids == [e["tool_call_id"] for e in read.entries], path
        assert (scan.corrupt, scan.invalid, scan.watermark) == (
            read.corrupt,
            read.invalid,
            read.watermark,
        )
        state = SessionState.from_scan(scan.ids, scan.statuses)
        assert state == SessionState.from_entries(read.entries), path


def test_a_scan_since_a_watermark_reads_only_the_new_tail(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(b'{"tool_call_id":"a_1","offloaded":true}\n')
    first = scan_journal(path)
    with path.open("ab") as f:
        f.write(b'{"tool_call_id":"b_2","offloaded":"deleted"}\n')
    tail = scan_journal(path, first.watermark)
    assert (tail.ids, tail.statuses, tail.replaced) == (["b_2"], [("b_2", "deleted")], False)
