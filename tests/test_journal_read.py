"""Reading journals: line for line what the seed sees, and incremental catch-up."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from offload_registry.disk import journal as journal_module
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import (
    TAIL_BYTES,
    JournalRead,
    Watermark,
    parse_journal_bytes,
    read_journal,
)
from offload_registry.disk.journal_write import append_entries_to_file, rewrite_journal
from offload_registry.disk.layout import journal_path, lock_path
from offload_registry.disk.locks import file_lock
from offload_registry.errors import JournalError
from offload_registry.jsjson import js_truthy

NODE = shutil.which("node")

# The seed's read loop, as SEED-SPEC.md describes it, run under Node on the same bytes.
NODE_SEED_READ = r"""
const fs = require("fs");
const UNSAFE = new RegExp(
  "[\\uFFFD\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u0080-\\u009F\\u200B-\\u200F" +
  "\\u2028\\u2029\\uFEFF]|[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])" +
  "[\\uDC00-\\uDFFF]", "g");
const results = process.argv.slice(1).map(path => {
  const entries = []; let corrupt = 0, invalid = 0;
  for (const piece of fs.readFileSync(path, "utf-8").split("\n")) {
    const line = piece.trim();
    if (!line) continue;
    let v;
    try { v = JSON.parse(line); } catch {
      try { v = JSON.parse(line.replace(UNSAFE, "")); } catch { corrupt++; continue; }
    }
    if (v && typeof v === "object" && !Array.isArray(v) && typeof v.tool_call_id === "string"
        && v.tool_call_id) entries.push(v); else invalid++;
  }
  return {entries: JSON.stringify(entries), corrupt, invalid};
});
console.log(JSON.stringify(results));
"""


def entry(tool_call_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": "2026-02-03T04:05:06.000Z",
        "node_id": None,
        "tool_call": f"bash -lc 'cat {tool_call_id}'",
        "summary": f"result of {tool_call_id}",
        "result_ref": f"refs/{tool_call_id}.md",
        "tool_call_id": tool_call_id,
        "score": 5,
        **extra,
    }


def line(tool_call_id: str, **extra: Any) -> bytes:
    return json.dumps(entry(tool_call_id, **extra), separators=(",", ":")).encode()


def ids(read: JournalRead) -> list[str]:
    return [e["tool_call_id"] for e in read.entries]


def write(tmp_path: Path, data: bytes, name: str = "offload-s.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def with_forms(tool_call_ids: list[str]) -> set[str]:
    return {form for i in tool_call_ids for form in (i, i.replace("_", ""))}


# --- the seed's sample data root ----------------------------------------------------------


def sample_journal(sample_dir: Path, session: dict[str, Any]) -> Path:
    return journal_path(sample_dir / "root" / session["agent_name"], session["session_id"])


def test_sample_journals_hold_the_seeds_entry_counts(
    sample_dir: Path, sample_expected: list[dict[str, Any]]
) -> None:
    counts = {
        s["session_key"]: len(read_journal(sample_journal(sample_dir, s)).entries)
        for s in sample_expected
    }
    assert counts == {s["session_key"]: s["entry_count"] for s in sample_expected}


def test_sample_journals_hold_the_seeds_processed_ids(
    sample_dir: Path, sample_expected: list[dict[str, Any]]
) -> None:
    for session in sample_expected:
        read = read_journal(sample_journal(sample_dir, session))
        assert with_forms(ids(read)) == set(session["processed"]), session["session_key"]


def test_sample_journals_confirm_the_seeds_ids_by_javascript_truthiness(
    sample_dir: Path, sample_expected: list[dict[str, Any]]
) -> None:
    for session in sample_expected:
        read = read_journal(sample_journal(sample_dir, session))
        confirmed = [e["tool_call_id"] for e in read.entries if js_truthy(e.get("offloaded"))]
        deleted = [e["tool_call_id"] for e in read.entries if e.get("offloaded") == "deleted"]
        assert with_forms(confirmed) == set(session["confirmed"]), session["session_key"]
        assert with_forms(deleted) == set(session["deleted"]), session["session_key"]


def test_sample_damaged_journal_has_three_entries_two_corrupt_and_three_invalid(
    sample_dir: Path,
) -> None:
    read = read_journal(sample_dir / "root" / "raw" / "offload-damaged.jsonl")
    assert ids(read) == ["bom_1", "crlf_1", "ok_1"]
    # Corrupt: "{not json" and the torn last line. Invalid: an integer tool_call_id, an
    # object without one, and an array.
    assert (read.corrupt, read.invalid) == (2, 3)


def test_sample_journal_never_written_reads_empty_without_a_watermark(sample_dir: Path) -> None:
    read = read_journal(sample_dir / "root" / "main" / "offload-never-written.jsonl")
    assert read == JournalRead([], 0, 0, None, replaced=False)


def test_reading_with_the_lock_creates_no_lock_file(sample_root: Path) -> None:
    path = sample_root / "support" / "offload-ticket-1.jsonl"
    before = sorted(p.name for p in path.parent.iterdir())
    read_journal(path)
    assert sorted(p.name for p in path.parent.iterdir()) == before
    assert not lock_path(path).exists()


# --- damaged lines (each agrees with the seed's rules) -------------------------------------

DAMAGED_LINES: dict[str, tuple[bytes, list[str], int, int]] = {
    # name: (file bytes, valid ids, corrupt, invalid)
    "bom-at-file-start": (b"\xef\xbb\xbf" + line("a") + b"\n", ["a"], 0, 0),
    "bom-mid-file": (line("a") + b"\n\xef\xbb\xbf" + line("b") + b"\n", ["a", "b"], 0, 0),
    "crlf": (line("a") + b"\r\n" + line("b") + b"\r\n", ["a", "b"], 0, 0),
    "lone-cr-joins-two-objects": (line("a") + b"\r" + line("b") + b"\n", [], 1, 0),
    "u2028-inside-a-string": (line("a", summary="x\u2028y") + b"\n", ["a"], 0, 0),
    "u2028-between-objects": (line("a") + "\u2028".encode() + line("b") + b"\n", [], 1, 0),
    "u2028-at-line-end-is-trimmed": (line("a") + "\u2028".encode() + b"\n", ["a"], 0, 0),
    "u0085-between-objects": (line("a") + "\u0085".encode() + line("b") + b"\n", [], 1, 0),
    "u0085-at-line-end-is-stripped-on-retry": (line("a") + "\u0085".encode(), ["a"], 0, 0),
    "u0085-alone-is-corrupt-not-blank": ("\u0085\n".encode() + line("a"), ["a"], 1, 0),
    "zero-width-space-before-object": ("\u200b".encode() + line("a"), ["a"], 0, 0),
    "nan-value": (b'{"tool_call_id":"a","score":NaN}\n' + line("b"), ["b"], 1, 0),
    "duplicate-id-last-wins": (b'{"tool_call_id":"a","tool_call_id":"b"}', ["b"], 0, 0),
    "duplicate-id-last-empty": (b'{"tool_call_id":"a","tool_call_id":""}', [], 0, 1),
    "lone-surrogate-escape-id": (b'{"tool_call_id":"\\udc00"}', ["\udc00"], 0, 0),
    "invalid-utf8-in-string": (b'{"tool_call_id":"a\xff\xfeb"}', ["a\ufffd\ufffdb"], 0, 0),
    "invalid-utf8-between-tokens": (b'{"tool_call_id":"a"}\xc3', ["a"], 0, 0),
    "utf8-encoded-surrogate": (b'{"tool_call_id":"\xed\xa0\x80"}', ["\ufffd" * 3], 0, 0),
    "raw-control-char-stripped-on-retry": (b'{"tool_call_id":"a\x01b"}', ["ab"], 0, 0),
    "raw-tab-in-string-is-corrupt": (b'{"tool_call_id":"a\tb"}\n' + line("c"), ["c"], 1, 0),
    "whitespace-only-lines": (
        b"\n \n\t\r\n\x0b\x0c\n" + "\u00a0\u3000\ufeff\u2029".encode() + b"\n" + line("a"),
        ["a"],
        0,
        0,
    ),
    "non-entries": (
        b'[1,2,3]\n"s"\n1\nnull\ntrue\n{}\n{"tool_call_id":42}\n{"tool_call_id":null}\n'
        b'{"tool_call_id":["x"]}\n{"tool_call_id":""}\n',
        [],
        0,
        10,
    ),
    "torn-last-line": (line("a") + b"\n" + line("b")[:30], ["a"], 1, 0),
    "last-line-without-newline": (line("a") + b"\n" + line("b"), ["a", "b"], 0, 0),
    "empty-file": (b"", [], 0, 0),
}


@pytest.mark.parametrize("name", DAMAGED_LINES)
def test_damaged_lines_read_as_the_seed_reads_them(tmp_path: Path, name: str) -> None:
    data, expected_ids, corrupt, invalid = DAMAGED_LINES[name]
    read = read_journal(write(tmp_path, data))
    assert (ids(read), read.corrupt, read.invalid) == (expected_ids, corrupt, invalid)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_damaged_lines_agree_with_the_seeds_read_loop_under_node(tmp_path: Path) -> None:
    paths = [write(tmp_path, data, f"offload-{n}.jsonl") for n, (data, *_) in DAMAGED_LINES.items()]
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "-e", NODE_SEED_READ, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for path, node in zip(paths, json.loads(proc.stdout), strict=True):
        ours = parse_journal_bytes(path.read_bytes())
        theirs = (json.loads(node["entries"]), node["corrupt"], node["invalid"])
        assert ours == theirs, path.name


def test_a_nan_value_is_corrupt_even_though_python_json_accepts_it(tmp_path: Path) -> None:
    read = read_journal(write(tmp_path, b'{"tool_call_id":"a","x":Infinity}'))
    assert (read.entries, read.corrupt) == ([], 1)


def test_a_lone_surrogate_escape_survives_in_the_entry(tmp_path: Path) -> None:
    read = read_journal(write(tmp_path, line("a", summary="\ud800") + b"\n"))
    assert read.entries[0]["summary"] == "\ud800"


def test_a_deeply_nested_entry_is_valid(tmp_path: Path) -> None:
    deep = b'{"tool_call_id":"deep","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    read = read_journal(write(tmp_path, deep + line("b")))
    assert ids(read) == ["deep", "b"]


def test_a_five_megabyte_line_is_read_whole(tmp_path: Path) -> None:
    summary = "x" * (5 * 1024 * 1024)
    read = read_journal(write(tmp_path, line("big", summary=summary) + b"\n" + line("b")))
    assert ids(read) == ["big", "b"]
    assert read.entries[0]["summary"] == summary


def test_damage_is_logged_with_structured_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, b"{not json\n[1]\n" + line("a"))
    with caplog.at_level(logging.WARNING, logger="offload_registry.disk.journal"):
        read_journal(path)
    (record,) = caplog.records
    assert (record.path, record.corrupt, record.invalid) == (str(path), 1, 1)  # type: ignore[attr-defined]


def test_a_clean_journal_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="offload_registry.disk.journal"):
        read_journal(write(tmp_path, line("a") + b"\n"))
    assert caplog.records == []


def test_an_unreadable_journal_raises_journal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_text('{"tool_call_id": "c"}\n')
    real_open = journal_module.safe_open

    def denied(target: Path, *args: Any, **kwargs: Any) -> int:
        if target == path:  # as for a file of mode 000 (tests run as root, which reads anything)
            raise PermissionError(13, "Permission denied", str(target))
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(journal_module, "safe_open", denied)
    with pytest.raises(JournalError) as info:
        read_journal(path)
    assert info.value.path == str(path)
    assert isinstance(info.value.__cause__, PermissionError)


def test_a_directory_in_place_of_a_journal_reads_as_an_empty_journal(tmp_path: Path) -> None:
    # The seed's read fails on it and starts the session empty; a reader does the same.
    path = tmp_path / "offload-s.jsonl"
    path.mkdir()
    read = read_journal(path)
    assert (read.entries, read.corrupt, read.invalid, read.watermark) == ([], 0, 0, None)


def test_journal_path_names_the_session_file(tmp_path: Path) -> None:
    assert journal_path(tmp_path, "s_1") == tmp_path / "offload-s_1.jsonl"


@pytest.mark.parametrize("session_id", ["", "a/b", "a\x00b"])
def test_journal_path_refuses_an_unsafe_session_id(tmp_path: Path, session_id: str) -> None:
    with pytest.raises(ValueError):
        journal_path(tmp_path, session_id)


# --- watermarks and incremental reads -----------------------------------------------------


def test_full_read_watermark_covers_the_whole_file(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n" + line("b"))
    read = read_journal(path)
    st = path.stat()
    assert read.watermark is not None
    assert (read.watermark.identity.device, read.watermark.identity.inode) == (
        st.st_dev,
        st.st_ino,
    )
    assert read.watermark.offset == st.st_size
    assert read.watermark.tail == path.read_bytes()[-TAIL_BYTES:]
    assert read.replaced is False


def test_read_since_returns_only_entries_appended_after_the_watermark(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n")
    first = read_journal(path)
    append_entries_to_file(path, [entry("b"), entry("c")], FsyncPolicy.NEVER)
    later = read_journal(path, first.watermark)
    assert (ids(later), later.replaced) == (["b", "c"], False)
    assert later.watermark is not None
    assert later.watermark.offset == path.stat().st_size


def test_read_since_with_nothing_new_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n")
    first = read_journal(path)
    again = read_journal(path, first.watermark)
    assert (again.entries, again.replaced, again.watermark) == ([], False, first.watermark)


def test_read_since_after_an_atomic_rewrite_is_a_full_read(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n" + line("b") + b"\n")
    first = read_journal(path)
    rewrite_journal(path, lambda e: {**e, "offloaded": True}, FsyncPolicy.NEVER)
    later = read_journal(path, first.watermark)
    assert (ids(later), later.replaced) == (["a", "b"], True)
    assert all(e["offloaded"] is True for e in later.entries)


def test_read_since_after_truncation_is_a_full_read(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n" + line("b") + b"\n")
    first = read_journal(path)
    with path.open("r+b") as f:
        f.truncate(len(line("a")) + 1)
    later = read_journal(path, first.watermark)
    assert (ids(later), later.replaced) == (["a"], True)


def test_read_since_after_an_in_place_rewrite_of_the_same_inode_is_a_full_read(
    tmp_path: Path,
) -> None:
    # What the seed's own status mark does (truncate and write), and what inode reuse after
    # two atomic replaces looks like: same identity, file no shorter, different bytes.
    path = write(tmp_path, line("a") + b"\n" + line("b") + b"\n")
    first = read_journal(path)
    inode = path.stat().st_ino
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(line("a", offloaded=True) + b"\n" + line("b", offloaded=True) + b"\n")
    assert path.stat().st_ino == inode
    later = read_journal(path, first.watermark)
    assert (ids(later), later.replaced) == (["a", "b"], True)


def test_a_same_length_in_place_rewrite_keeping_the_tail_is_a_full_read(tmp_path: Path) -> None:
    # The seed marks a status by truncating and rewriting the file; "null" -> "true" keeps the
    # length, and a first line changed leaves the last 64 bytes as they were. Only the
    # modification time tells.
    lines = [line(f"call_{i}", offloaded=None) for i in range(6)]
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    first = read_journal(path)
    assert first.watermark is not None and first.watermark.mtime_ns
    lines[0] = line("call_0", offloaded=True)
    rewritten = b"\n".join(lines) + b"\n"
    assert len(rewritten) == path.stat().st_size and rewritten[-64:] == path.read_bytes()[-64:]
    inode = path.stat().st_ino
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(rewritten)
    later_mtime = first.watermark.mtime_ns + 1_000_000  # past any timestamp granularity
    os.utime(path, ns=(later_mtime, later_mtime))
    assert path.stat().st_ino == inode
    later = read_journal(path, first.watermark)
    assert later.replaced and len(later.entries) == 6
    assert later.entries[0]["offloaded"] is True


def test_an_unmodified_journal_continues_without_reading(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n")
    first = read_journal(path)
    again = read_journal(path, first.watermark)
    assert (ids(again), again.replaced, again.watermark) == ([], False, first.watermark)


def test_a_watermark_without_tail_trusts_identity_and_size(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n")
    first = read_journal(path).watermark
    assert first is not None
    append_entries_to_file(path, [entry("b")], FsyncPolicy.NEVER)
    later = read_journal(path, Watermark(first.identity, first.offset))
    assert (ids(later), later.replaced) == (["b"], False)


def test_read_since_a_deleted_journal_is_empty_and_replaced(tmp_path: Path) -> None:
    path = write(tmp_path, line("a") + b"\n")
    first = read_journal(path)
    path.unlink()
    assert read_journal(path, first.watermark) == JournalRead([], 0, 0, None, replaced=True)


def test_a_torn_last_line_is_counted_once_and_the_next_append_reads_cleanly(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, line("a") + b"\n" + line("b")[:25])
    first = read_journal(path)
    assert (ids(first), first.corrupt) == (["a"], 1)
    append_entries_to_file(path, [entry("c")], FsyncPolicy.NEVER)
    later = read_journal(path, first.watermark)
    assert (ids(later), later.corrupt, later.invalid) == (["c"], 0, 0)


def test_incremental_reads_add_up_to_a_full_read(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    watermark = read_journal(path).watermark
    seen: list[str] = []
    for batch in (["a"], ["b", "c"], [], ["d"]):
        append_entries_to_file(path, [entry(i) for i in batch], FsyncPolicy.NEVER)
        read = read_journal(path, watermark)
        assert not read.replaced
        seen += ids(read)
        watermark = read.watermark
    assert seen == ids(read_journal(path)) == ["a", "b", "c", "d"]


def test_read_waits_for_an_exclusive_writer_even_in_the_same_process(tmp_path: Path) -> None:
    # flock locks belong to open file descriptions: a holder of the exclusive lock must read
    # with lock=False, or it waits for itself.
    path = write(tmp_path, line("a") + b"\n")
    done = threading.Event()

    def reader() -> None:
        read_journal(path)
        done.set()

    with file_lock(path):
        thread = threading.Thread(target=reader)
        thread.start()
        assert not done.wait(0.2)
        assert ids(read_journal(path, lock=False)) == ["a"]
    thread.join(10)
    assert done.is_set()


def test_read_does_not_modify_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + line("a") + b"\r\n{bad\n")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    read_journal(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
