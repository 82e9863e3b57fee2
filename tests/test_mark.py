"""A mark changes only what it names: the ``offloaded`` value of the named entries.

Every other line of the journal keeps its bytes (ids made only of characters the seed strips
on write, invalid UTF-8, odd spacing), a changed line keeps everything but that value, and no
nesting depth of a valid line breaks a mark. The marking worker, Redis and a fresh worker
then agree on the session.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.errors import JournalError
from offload_registry.testing.server import RedisServerProcess
from session_helpers import described, truth

KEY = "agent:main:s1"

PLAIN = b'{"tool_call_id":"call_1","summary":"a"}'
ESCAPED_STRIPPED = b'{"tool_call_id":"\\u200b","summary":"only a zero-width space"}'
RAW_STRIPPED = b'{"tool_call_id":"\xe2\x80\x8c"}'  # a raw U+200C
INVALID_UTF8 = b'{"tool_call_id":"\xff\xfe"}'
SPACED = b'  { "tool_call_id" : "call_5" , "offloaded" : false }\r'
DEEP = b'{"tool_call_id":"deep","x":' + b"[" * 5000 + b"]" * 5000 + b"}"


def journal_of(root: Path, *lines: bytes) -> Path:
    path = root / "main" / "offload-s1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


async def test_mark_keeps_every_line_it_does_not_change_byte_for_byte(tmp_path: Path) -> None:
    lines = [PLAIN, ESCAPED_STRIPPED, RAW_STRIPPED, INVALID_UTF8, SPACED]
    path = journal_of(tmp_path, *lines)
    before = await truth(tmp_path, KEY)
    assert before["entry_count"] == 5
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.mark_offload_status({"call_1": True}) == 1
        marked = described(manager)
    expected = [b'{"tool_call_id":"call_1","summary":"a","offloaded":true}', *lines[1:]]
    assert path.read_bytes() == b"".join(line + b"\n" for line in expected)
    fresh = await truth(tmp_path, KEY)
    assert fresh == marked
    assert fresh == {**before, "confirmed": ["call1", "call_1"]}


async def test_a_marked_line_keeps_everything_but_its_status(tmp_path: Path) -> None:
    # The id holds a character the seed strips on write: re-encoding the line would change
    # the id on disk, so a fresh reader would no longer find the id the caller marked.
    line = b'{"tool_call_id":"call\\u200b_9","note":"\\u2028","offloaded":null,"n":1.0}'
    path = journal_of(tmp_path, line, SPACED)
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        changed = await manager.mark_offload_status({"call\u200b_9": True, "call_5": "deleted"})
        assert changed == 2
        marked = described(manager)
    assert path.read_bytes().split(b"\n") == [
        line.replace(b'"offloaded":null', b'"offloaded":true'),
        b'{ "tool_call_id" : "call_5" , "offloaded" : "deleted" }',
        b"",
    ]
    assert await truth(tmp_path, KEY) == marked
    assert "call\u200b_9" in marked["confirmed"] and "call_5" in marked["deleted"]


async def test_mark_works_beside_and_on_a_line_nested_5000_deep(tmp_path: Path) -> None:
    path = journal_of(tmp_path, DEEP, PLAIN)
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.entry_count == 2
        assert await manager.mark_offload_status({"call_1": True}) == 1
        assert path.read_bytes().split(b"\n")[0] == DEEP
        assert await manager.mark_offload_status({"deep": "deleted"}) == 1
        marked = described(manager)
    assert path.read_bytes().split(b"\n")[0] == DEEP[:-1] + b',"offloaded":"deleted"}'
    assert await truth(tmp_path, KEY) == marked
    assert "deep" in marked["deleted"] and "call_1" in marked["confirmed"]


async def test_a_mark_that_changes_nothing_leaves_the_journal_untouched(tmp_path: Path) -> None:
    path = journal_of(tmp_path, PLAIN, SPACED)
    before = path.read_bytes(), path.stat().st_ino
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.mark_offload_status({"call_5": False, "unknown": True}) == 0
    assert (path.read_bytes(), path.stat().st_ino) == before


async def test_after_a_mark_the_worker_redis_and_a_fresh_worker_agree(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    journal_of(tmp_path, PLAIN, ESCAPED_STRIPPED, RAW_STRIPPED, INVALID_UTF8, SPACED, DEEP)
    prefix = f"t{uuid4().hex[:12]}"
    async with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.mark_offload_status({"call_1": True, "deep": True})
        marked = described(manager)
    async with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as other:
        from_redis = (await other.resolve(KEY)).manager
        assert from_redis.source == "redis"
        assert described(from_redis) == marked
    assert await truth(tmp_path, KEY) == marked
    assert marked["entry_count"] == 6
    assert json.loads(b'"\\u200b"') in marked["processed"]


async def test_a_mark_that_fails_changes_neither_the_journal_nor_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = journal_of(tmp_path, PLAIN, SPACED)
    before = path.read_bytes()
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        unmarked = described(manager)

        def no_space(fd: int, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", no_space)
        with pytest.raises(JournalError):
            await manager.mark_offload_status({"call_1": True})
        monkeypatch.undo()
        assert described(manager) == unmarked
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []
    assert await truth(tmp_path, KEY) == unmarked
