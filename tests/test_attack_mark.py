"""Adversarial review of "A mark changes only what it names" (issue 12, finding 6): hostile
but valid journal lines (duplicate and escaped keys, nested ``offloaded``, odd whitespace,
lines only the seed's strip-retry parses, deep nesting, long escape runs). All held: kept as
regression tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import parse_journal_bytes, scan_journal_bytes
from offload_registry.disk.journal_mark import mark_journal

DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = {
    "duplicate offloaded": '{"tool_call_id":"a","offloaded":null,"offloaded":false}',
    "escaped key": r'{"tool_call_id":"a","offl\u006faded":false}',
    "escaped duplicate first": r'{"offl\u006faded":1,"tool_call_id":"a","offloaded":null}',
    "nested offloaded": '{"tool_call_id":"a","meta":{"offloaded":true},"l":[{"offloaded":1}]}',
    "duplicate id": '{"tool_call_id":"b","tool_call_id":"a"}',
    "escaped id key": r'{"tool\u005fcall_id":"a"}',
    "js whitespace around": '\u00a0{"tool_call_id":"a"}\u3000',
    "strip-retry only": '{"tool_call_id":"a"}\u200b',
    "unsafe in another member": '{"tool_call_id":"a","x":"\u200b\u2028"}',
    "deep nesting": '{"tool_call_id":"a","d":' + DEEP + "}",
    "long escape run": '{"tool_call_id":"a","s":"' + "\\\\" * 50_000 + '\\""}',
    "lone surrogate escapes": r'{"tool_call_id":"a","\ud800":"\udc00x"}',
    "spaces everywhere": '{ "tool_call_id" : "a" , "offloaded" : [ 1 , { "offloaded" : 2 } ] }',
    "carriage returns": '{"tool_call_id":"a","offloaded":"x"\r}\r',
    "huge numbers": '{"tool_call_id":"a","n":123456789012345678901234567890,"f":1e999}',
    "underscore form": '{"tool_call_id":"_a_"}',
}
BEFORE = b'{"tool_call_id":"z", "k" : 1 }\r\n\n  \n'
AFTER = b' {"tool_call_id":"y","offloaded":true}\t\n not json\n{"torn":'


def _without_status(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "offloaded"} for e in entries]


@pytest.mark.parametrize("line", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_mark_on_a_hostile_line_changes_only_its_status(tmp_path: Path, line: str) -> None:
    journal = tmp_path / "main" / "offload-s.jsonl"
    journal.parent.mkdir()
    journal.write_bytes(BEFORE + line.encode("utf-8", "surrogatepass") + b"\n" + AFTER)
    entries, corrupt, invalid = parse_journal_bytes(journal.read_bytes())

    result = mark_journal(journal, {"a": "deleted"}, FsyncPolicy.NEVER)

    data = journal.read_bytes()
    assert result.changed == 1
    assert data.startswith(BEFORE)  # every other line keeps its bytes
    assert data.endswith(AFTER + b"\n")  # the torn last line gains only its \n
    after, corrupt_after, invalid_after = parse_journal_bytes(data)
    assert (corrupt_after, invalid_after) == (corrupt, invalid)
    if line is HOSTILE["deep nesting"]:  # too deep for ==: compare the members' names
        assert [sorted(e) for e in _without_status(after)] == [
            sorted(e) for e in _without_status(entries)
        ]
    else:
        assert _without_status(after) == _without_status(entries)
    marked = [e for e in after if e["tool_call_id"].replace("_", "").strip("\u200b") == "a"]
    assert [e["offloaded"] for e in marked] == ["deleted"]
    ids, statuses, _, _ = scan_journal_bytes(data)
    assert ids == [e["tool_call_id"] for e in after]
    assert statuses == [(e["tool_call_id"], e["offloaded"]) for e in after if "offloaded" in e]
