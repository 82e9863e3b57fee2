"""One canonical tool call id: the id a reader of the journal gets back.

The journal writer strips SEED-SPEC's unsafe characters from every string it writes, so the
id on disk is ``strip_unsafe(raw)``. Every call that takes or tests an id (append, claim,
mark, is_processed, the pending buffer) works on that same canonical form, in memory, in
Redis and in the claims record alike; an id that strips to nothing is refused with
:class:`InvalidToolCallIdError` (a ``ValueError``) and nothing is written.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload_registry import SessionRegistry
from offload_registry import sync as blocking
from offload_registry.disk.journal import parse_journal_bytes, read_journal, scan_journal
from offload_registry.errors import InvalidToolCallIdError
from offload_registry.jsjson import UNSAFE_CHARS, encode_entry, strip_unsafe
from offload_registry.session_state import (
    canonical_entry,
    canonical_tool_call_id,
    id_forms,
    normalize_id,
)
from offload_registry.testing.server import RedisServerProcess
from session_helpers import described, entry, truth

KEY = "agent:main:s1"

#: Characters that make ids collide or vanish: every unsafe kind, ``_`` (normalization),
#: and a few that JSON escapes or encodes specially.
TRICKY = [
    "\u200b",
    "\u200f",
    "\ufeff",
    "\ufffd",
    "\x00",
    "\x1f",
    "\x85",
    "\ud800",
    "\udfff",
    "\u2028",
    "\u2029",
    "_",
    "\t",
    "\n",
    "\r",
    '"',
    "\\",
    " ",
    "a",
    "b",
    "\u00e9",
    "\U0001f600",
]
id_text = st.text(st.one_of(st.sampled_from(TRICKY), st.characters()), max_size=4)


def opened(root: Path, server: RedisServerProcess, prefix: str = "ids") -> SessionRegistry:
    return SessionRegistry(root, redis_url=server.url, key_prefix=prefix)


def journal_ids(root: Path) -> list[str]:
    return [e["tool_call_id"] for e in read_journal(root / "main" / "offload-s1.jsonl").entries]


def claimed_on_disk(root: Path) -> list[str]:
    return scan_journal(root / "main" / "offload-s1.claims").ids


# --- the pure function --------------------------------------------------------------------


@given(id_text)
@settings(max_examples=500)
def test_the_canonical_id_is_what_a_journal_reader_gets_back(raw: str) -> None:
    line = encode_entry({"tool_call_id": raw, "summary": "s"})
    entries, corrupt, invalid = parse_journal_bytes(line)
    if strip_unsafe(raw) == "":
        with pytest.raises(InvalidToolCallIdError):
            canonical_tool_call_id(raw)
        assert (entries, corrupt, invalid) == ([], 0, 1)  # a reader would drop it too
        return
    canonical = canonical_tool_call_id(raw)
    assert [e["tool_call_id"] for e in entries] == [canonical]
    assert canonical_tool_call_id(canonical) == canonical
    assert not set(canonical) & UNSAFE_CHARS


@pytest.mark.parametrize("raw", [None, 7, b"call_1", ["call_1"]])
def test_a_tool_call_id_that_is_not_a_string_is_refused(raw: Any) -> None:
    with pytest.raises(InvalidToolCallIdError, match="tool_call_id"):
        canonical_tool_call_id(raw)


def test_the_error_is_a_value_error_that_names_the_id() -> None:
    with pytest.raises(ValueError) as caught:
        canonical_tool_call_id("\u200b\ufeff")
    assert isinstance(caught.value, InvalidToolCallIdError)
    assert caught.value.tool_call_id == "\u200b\ufeff"


def test_an_entry_is_canonical_as_a_reader_gets_it_back_and_a_bad_one_names_its_id() -> None:
    raw = {"tool_call_id\u200b": "a\ufeff", "offloaded": "deleted\u2028", "n": (1, 2)}
    assert canonical_entry(raw) == {"tool_call_id": "a", "offloaded": "deleted", "n": [1, 2]}
    assert parse_journal_bytes(encode_entry(raw))[0] == [canonical_entry(raw)]
    with pytest.raises(InvalidToolCallIdError, match="unsafe characters") as caught:
        canonical_entry({"tool_call_id": "\u200b", "summary": "s"})
    assert caught.value.tool_call_id == "\u200b"
    with pytest.raises(InvalidToolCallIdError, match="non-empty string"):
        canonical_entry({"summary": "no id"})


entry_keys = st.sampled_from(
    ["tool_call_id", "tool_call_id\u200b", "\ufefftool_call_id", "offloaded", "offloaded\x00", "s"]
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    id_text,
)


@given(st.dictionaries(entry_keys, st.one_of(json_scalars, st.lists(json_scalars, max_size=3))))
@settings(max_examples=500)
def test_a_canonical_entry_is_exactly_what_a_journal_reader_gets_back(raw: dict[str, Any]) -> None:
    entries, corrupt, invalid = parse_journal_bytes(encode_entry(raw))
    try:
        canonical = canonical_entry(raw)
    except InvalidToolCallIdError:
        assert (entries, corrupt, invalid) == ([], 0, 1)
        return
    assert entries == [canonical]
    assert canonical["tool_call_id"] == canonical_tool_call_id(canonical["tool_call_id"])


# --- two workers on real Redis ------------------------------------------------------------


@pytest.mark.parametrize("second_spelling", ["call_7\u200b", "call_7", "call7\ufeff"])
async def test_two_fresh_workers_win_an_id_with_unsafe_characters_once_even_after_redis_lost_it(
    tmp_path: Path, private_redis_server: RedisServerProcess, second_spelling: str
) -> None:
    async with opened(tmp_path, private_redis_server) as a:
        assert await (await a.resolve(KEY)).manager.claim(["call_7\u200b"]) == ["call_7"]
    private_redis_server.restart()  # the claim filter's hash is gone
    async with opened(tmp_path, private_redis_server) as b:
        assert await (await b.resolve(KEY)).manager.claim([second_spelling]) == []
    assert claimed_on_disk(tmp_path) == ["call_7"]


async def test_workers_racing_on_spellings_of_the_same_ids_win_each_once(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    bases = [f"call_{i}" for i in range(20)]
    spellings = [
        bases,
        [f"{i}\u200b" for i in bases],
        [f"\ufeff{i}" for i in reversed(bases)],
        [f"{normalize_id(i)}\u200f" for i in bases],
    ]
    prefix = f"t{uuid4().hex[:12]}"
    async with (
        opened(tmp_path, redis_server, prefix) as a,
        opened(tmp_path, redis_server, prefix) as b,
    ):
        managers = [(await reg.resolve(KEY)).manager for reg in (a, b)]
        results = await asyncio.gather(*(m.claim(ids) for ids in spellings for m in managers))
    won = [tool_call_id for result in results for tool_call_id in result]
    assert sorted(normalize_id(i) for i in won) == sorted(normalize_id(i) for i in bases)
    assert not set(won) - set(bases) - {normalize_id(i) for i in bases}  # canonical only
    assert sorted(claimed_on_disk(tmp_path)) == sorted(won)


async def test_pending_pairs_are_buffered_and_taken_under_the_canonical_id(
    tmp_path: Path,
) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.add_pending_tool_pair("x\u200b", "pair")
        assert not manager.add_pending_tool_pair("x", "again")
        assert manager.take_pending_tool_pairs() == ["pair"]
        assert manager.is_processed("\ufeffx")
        assert not manager.add_pending_tool_pair("x\u2029", "later")


async def test_a_worker_loaded_from_redis_refuses_what_a_journal_rebuild_refuses(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with opened(tmp_path, redis_server, prefix) as a:
        assert await (await a.resolve(KEY)).manager.claim(["x\u200b"]) == ["x"]
    async with opened(tmp_path, redis_server, prefix) as b:
        manager = (await b.resolve(KEY)).manager
        assert manager.source == "redis"
        assert described(manager) == await truth(tmp_path, KEY)
        assert await manager.claim(["x"]) == []
    assert claimed_on_disk(tmp_path) == ["x"]


async def test_two_workers_appending_one_id_in_two_spellings_write_it_once(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with (
        opened(tmp_path, redis_server, prefix) as a,
        opened(tmp_path, redis_server, prefix) as b,
    ):
        first = (await a.resolve(KEY)).manager
        second = (await b.resolve(KEY)).manager  # resolved before the first append
        assert await first.append_entries([entry("x\u200b")]) == 1
        assert await second.append_entries([entry("x\u200b")]) == 0
        assert await second.append_entries([entry("\ufeffx")]) == 0
        assert described(first) == described(second) == await truth(tmp_path, KEY)
        assert first.is_processed("x\u2028") and second.is_processed("x")
    assert journal_ids(tmp_path) == ["x"]


async def test_one_worker_appending_one_id_in_two_spellings_in_one_batch_writes_it_once(
    tmp_path: Path,
) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.append_entries([entry("x\u200b"), entry("x")]) == 1
        assert described(manager) == await truth(tmp_path, KEY)
    assert journal_ids(tmp_path) == ["x"]


# --- ids with no canonical form -----------------------------------------------------------


@pytest.mark.parametrize("empty", ["\u200b", "\ufeff\u2028", "\ud800"])
async def test_an_id_that_strips_to_nothing_is_refused_by_every_call_and_nothing_is_written(
    tmp_path: Path, redis_server: RedisServerProcess, empty: str
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with opened(tmp_path, redis_server, prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.append_entries([entry("ok")]) == 1
        with pytest.raises(InvalidToolCallIdError):
            await manager.append_entries([entry("fine"), entry(empty)])
        with pytest.raises(InvalidToolCallIdError):
            await manager.claim(["other", empty])
        with pytest.raises(InvalidToolCallIdError):
            await manager.mark_offload_status({"ok": True, empty: True})
        with pytest.raises(InvalidToolCallIdError):
            manager.is_processed(empty)
        with pytest.raises(InvalidToolCallIdError):
            manager.add_pending_tool_pair(empty, {"pair": 1})
        assert described(manager) == await truth(tmp_path, KEY)
    # The whole call was refused: no entry, claim or status of it reached the disk.
    assert journal_ids(tmp_path) == ["ok"]
    assert claimed_on_disk(tmp_path) == []
    assert read_journal(tmp_path / "main" / "offload-s1.jsonl").entries[0].get("offloaded") is None


async def test_an_entry_whose_id_field_only_differs_by_unsafe_characters_is_read_as_written(
    tmp_path: Path,
) -> None:
    # The writer strips keys too: "tool_call_id\u200b" is the id field a reader sees, and
    # "offloaded\u200b" its status; the writer's own copy must agree.
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        raw = {"tool_call_id\u200b": "y", "offloaded\u200b": "deleted\u200b"}
        assert await manager.append_entries([raw]) == 1
        assert described(manager) == await truth(tmp_path, KEY)
        assert "y" in manager.deleted_offload_ids
    assert journal_ids(tmp_path) == ["y"]


async def test_mark_matches_the_canonical_id_and_keeps_the_status_a_reader_gets_back(
    tmp_path: Path,
) -> None:
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("call_1"), entry("call_2")])
        changed = await manager.mark_offload_status(
            {"call_1\u200b": True, "\ufeffcall_2": "deleted\u2029"}
        )
        assert changed == 2
        assert described(manager) == await truth(tmp_path, KEY)
        assert {"call_1", "call_2"} <= set(manager.confirmed_offload_ids)
        assert "call_2" in manager.deleted_offload_ids


# --- the property: every worker sees the same ids, each won once ---------------------------


def _expected_wins(appended: list[str], claimed: list[str]) -> list[str]:
    """The oracle: canonical ids in call order, each lost when any form is already taken."""
    taken = {form for i in appended for form in id_forms(canonical_tool_call_id(i))}
    won = []
    for raw in claimed:
        forms = id_forms(canonical_tool_call_id(raw))
        if not any(f in taken for f in forms):
            taken.update(forms)
            won.append(forms[0])
    return won


@given(ids=st.lists(id_text, min_size=1, max_size=8))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_every_worker_sees_the_same_canonical_ids_each_won_once(
    redis_server: RedisServerProcess, ids: list[str]
) -> None:
    valid = [i for i in ids if strip_unsafe(i)]
    refused = [i for i in ids if not strip_unsafe(i)]
    appended, claimed = valid[::2], valid[1::2]
    marked = {i: ("deleted" if n % 2 else True) for n, i in enumerate(appended)}
    prefix = f"t{uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def worker(redis: bool) -> blocking.SessionRegistry:
            if redis:
                return blocking.SessionRegistry(root, redis_url=redis_server.url, key_prefix=prefix)
            return blocking.SessionRegistry(root)

        with worker(redis=True) as reg:
            manager = reg.resolve(KEY).manager
            for bad in refused:
                with pytest.raises(InvalidToolCallIdError):
                    manager.append_entries([entry(bad)])
                with pytest.raises(InvalidToolCallIdError):
                    manager.claim([bad])
                with pytest.raises(InvalidToolCallIdError):
                    manager.mark_offload_status({bad: True})
            manager.append_entries([entry(i) for i in appended])
            won = manager.claim(claimed)
            manager.mark_offload_status(marked)
            seen = described(manager)
        assert won == _expected_wins(appended, claimed)
        assert claimed_on_disk(root) == won  # the record holds each win once

        for redis in (True, False):
            with worker(redis) as reg:
                fresh = reg.resolve(KEY).manager
                assert fresh.source == ("redis" if redis else "journal")
                assert described(fresh) == seen
                assert all(fresh.is_processed(i) for i in valid)
                assert fresh.claim(valid) == []  # nothing is won a second time
                assert fresh.append_entries([entry(i) for i in appended]) == 0
        with blocking.SessionRegistry(root, read_only=True) as journal_only:
            assert described(journal_only.resolve(KEY).manager) == seen
        assert claimed_on_disk(root) == won


async def test_mark_keeps_the_state_equal_to_a_rebuild_when_the_journal_holds_foreign_ids(
    tmp_path: Path,
) -> None:
    # Another tool wrote ids with escaped unsafe characters (neither the seed nor we do);
    # they are read as written, and after a rewrite the state is still what a rebuild reads.
    journal = tmp_path / "main" / "offload-s1.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text(
        '{"tool_call_id":"a\\u200b","summary":"s"}\n'
        '{"tool_call_id":"\\u200b","summary":"gone once stripped"}\n'
        '{"tool_call_id":"b","summary":"s"}\n',
        encoding="utf-8",
    )
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert described(manager) == await truth(tmp_path, KEY)
        assert await manager.mark_offload_status({"b": True}) == 1
        assert described(manager) == await truth(tmp_path, KEY)
        assert "b" in manager.confirmed_offload_ids
