"""Adversarial review of "One canonical tool call id" (issue 12, finding 1).

Ids that a foreign writer put in the journal with unsafe characters are "kept as read".
These tests check that every id-taking call still agrees with the journal about them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.disk.journal import read_journal
from session_helpers import described, entry, truth

KEY = "agent:main:s1"


def _foreign_journal(root: Path, raw_line: str) -> Path:
    journal = root / "main" / "offload-s1.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text(raw_line + "\n", encoding="utf-8")
    return journal


def _ids(journal: Path) -> list[str]:
    return [e["tool_call_id"] for e in read_journal(journal).entries]


async def test_is_processed_answers_true_for_the_exact_id_a_journal_reader_gets_back(
    tmp_path: Path,
) -> None:
    journal = _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    assert _ids(journal) == ["call_7\u200b"]  # what a reader gets back
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert "call_7\u200b" in manager.processed_tool_call_ids
        assert manager.is_processed("call_7\u200b")


async def test_appending_the_exact_id_already_in_the_journal_writes_nothing(
    tmp_path: Path,
) -> None:
    journal = _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        written = await manager.append_entries([entry("call_7\u200b")])
    assert _ids(journal) == ["call_7\u200b"], f"written={written}"


async def test_an_id_already_in_the_journal_is_never_won_even_when_foreign(
    tmp_path: Path,
) -> None:
    _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.claim(["call_7\u200b"]) == []


async def test_mark_and_dedup_agree_on_a_foreign_id(tmp_path: Path) -> None:
    """A mark of the canonical spelling reaches the foreign line (it is the same id to mark)."""
    journal = _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.mark_offload_status({"call_7": True}) == 1
    assert read_journal(journal).entries[0]["offloaded"] is True


async def test_pending_pairs_differing_only_by_underscore_are_one_id(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.add_pending_tool_pair("call_7", "p1")
        taken = manager.add_pending_tool_pair("call7", "p2")
        assert not taken, "call7 is call_7's normalized form: the same tool call"


async def test_claim_then_append_in_other_spellings_across_workers_lands_once(
    tmp_path: Path, redis_server: Any
) -> None:
    """Held: a claim in one spelling, the append in another, a rival's append and claim in
    a third, and fresh workers (from Redis and from the journal) all agree on one id."""
    prefix = f"t{uuid4().hex[:12]}"

    def opened(redis: bool) -> SessionRegistry:
        if redis:
            return SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix)
        return SessionRegistry(tmp_path)

    async with opened(True) as a, opened(True) as b, opened(False) as c:
        first, rival, offline = [(await r.resolve(KEY)).manager for r in (a, b, c)]
        assert await first.claim(["call_7\u200b", "call7"]) == ["call_7"]
        assert await rival.claim(["\ufeffcall7"]) == []
        assert await offline.claim(["call_7\u2028"]) == []
        assert await first.append_entries([entry("call_7\u200f"), entry("call7")]) == 1
        assert await rival.append_entries([entry("call7\ufeff")]) == 0
        assert await offline.append_entries([entry("call_7")]) == 0
        assert rival.add_pending_tool_pair("call_7", "p") is False
    for redis in (True, False):
        async with opened(redis) as fresh:
            manager = (await fresh.resolve(KEY)).manager
            assert manager.source == ("redis" if redis else "journal")
            assert await manager.claim(["call7", "call_7"]) == []
            assert await manager.append_entries([entry("\u200bcall_7")]) == 0
    assert _ids(tmp_path / "main" / "offload-s1.jsonl") == ["call_7"]


@pytest.mark.parametrize("junk", ["\ud800", "\udfff\ud800", "\x85", "\ufffd"])
async def test_lone_surrogates_in_an_entrys_keys_and_id_read_back_as_the_writer_keeps_them(
    tmp_path: Path, junk: str
) -> None:
    """Held: keys and ids with lone surrogates (and other unsafe characters) are stored as a
    reader gets them back; the writer's sets equal a journal rebuild."""
    raw = {
        f"tool{junk}_call_id": f"call{junk}_9",
        f"offloaded{junk}": f"deleted{junk}",
        f"meta{junk}": {f"k{junk}": [f"v{junk}"]},
    }
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.append_entries([raw]) == 1
        assert await manager.append_entries([entry(f"{junk}call9")]) == 0
        assert "call_9" in manager.deleted_offload_ids
        assert described(manager) == await truth(tmp_path, KEY)
    (back,) = read_journal(tmp_path / "main" / "offload-s1.jsonl").entries
    assert back == {"tool_call_id": "call_9", "offloaded": "deleted", "meta": {"k": ["v"]}}
