"""Adversarial review of "One canonical tool call id" (issue 12, finding 1).

Ids that a foreign writer put in the journal with unsafe characters are "kept as read".
These tests check that every id-taking call still agrees with the journal about them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from offload_registry import SessionRegistry
from offload_registry.journal import read_journal
from session_helpers import entry

KEY = "agent:main:s1"


def _foreign_journal(root: Path, raw_line: str) -> Path:
    journal = root / "main" / "offload-s1.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text(raw_line + "\n", encoding="utf-8")
    return journal


def _ids(journal: Path) -> list[str]:
    return [e["tool_call_id"] for e in read_journal(journal).entries]


@pytest.mark.xfail(
    strict=True,
    reason="is_processed canonicalizes the query but not the foreign id read from the journal:"
    " the exact id a reader gets back answers False",
)
async def test_is_processed_answers_true_for_the_exact_id_a_journal_reader_gets_back(
    tmp_path: Path,
) -> None:
    journal = _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    assert _ids(journal) == ["call_7\u200b"]  # what a reader gets back
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert "call_7\u200b" in manager.processed_tool_call_ids
        assert manager.is_processed("call_7\u200b")


@pytest.mark.xfail(
    strict=True,
    reason="append dedups only against canonical forms: an id a foreign writer put in the"
    " journal with an unsafe character is appended again (the seed's raw compare drops it)",
)
async def test_appending_the_exact_id_already_in_the_journal_writes_nothing(
    tmp_path: Path,
) -> None:
    journal = _foreign_journal(tmp_path, '{"tool_call_id":"call_7\\u200b","summary":"s"}')
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        written = await manager.append_entries([entry("call_7\u200b")])
    assert _ids(journal) == ["call_7\u200b"], f"written={written}"


@pytest.mark.xfail(
    strict=True,
    reason="claim wins an id whose exact spelling (as read) is already in the journal",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="the pending buffer is keyed by the canonical id only, not its normalized form:"
    " call_7 and call7 (one tool call to every id set) are both buffered",
)
async def test_pending_pairs_differing_only_by_underscore_are_one_id(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.add_pending_tool_pair("call_7", "p1")
        taken = manager.add_pending_tool_pair("call7", "p2")
        assert not taken, "call7 is call_7's normalized form: the same tool call"
