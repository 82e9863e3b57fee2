"""SessionRegistry and OffloadStateManager (asyncio), on the journals alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry
from offload_registry._async.tier import NoSharedTier
from offload_registry.disk.agent_files import read_agent_state, read_session_registry
from offload_registry.disk.journal import read_journal
from offload_registry.disk.session_files import SessionFiles
from offload_registry.errors import (
    ConfigurationError,
    InvalidSessionKeyError,
    JournalError,
    RegistryClosedError,
)
from offload_registry.keys import resolve_identity
from offload_registry.ops.discover import iter_sessions
from session_helpers import entry


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def described(manager: Any) -> dict[str, Any]:
    return {
        "agent_name": manager.agent_name,
        "session_id": manager.session_id,
        "confirmed": sorted(manager.confirmed_offload_ids),
        "deleted": sorted(manager.deleted_offload_ids),
        "processed": sorted(manager.processed_tool_call_ids),
        "entry_count": manager.entry_count,
    }


async def test_resolve_agrees_with_the_seed_on_every_sample_session(
    sample_root: Path, sample_expected: list[dict[str, Any]]
) -> None:
    async with SessionRegistry(sample_root) as reg:
        for want in sample_expected:
            ctx = await reg.resolve(want["session_key"], want["real_session_id"])
            expected = {k: want[k] for k in described(ctx.manager)}
            assert described(ctx.manager) == expected, want["session_key"]
            assert ctx.manager.source == "journal"


async def test_resolve_records_the_key_as_the_agents_last_session(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        await reg.resolve("agent:main:s1")
        await reg.resolve("agent:main:s2")
    assert read_agent_state(tmp_path / "main").last_session_key == "agent:main:s2"


async def test_resolve_with_a_real_session_id_maps_the_key_to_it(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        ctx = await reg.resolve("agent:review:pr-42", "real-abc")
        await ctx.manager.append_entries([entry("r_0")])
    assert (tmp_path / "review" / "offload-real-abc.jsonl").exists()
    record = read_session_registry(tmp_path / "review")["agent:review:pr-42"]
    assert (record.session_id, record.offload_file) == ("real-abc", "offload-real-abc.jsonl")


async def test_a_cached_resolve_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with SessionRegistry(tmp_path) as reg:
        first = await reg.resolve("agent:main:s1")

        def no_io(*_: Any, **__: Any) -> Any:
            raise AssertionError("a cache hit touched the disk")

        monkeypatch.setattr(SessionFiles, "rebuild", no_io)
        monkeypatch.setattr(SessionFiles, "record_session", no_io)
        assert await reg.resolve("agent:main:s1") is first


async def test_the_lru_evicts_the_least_recently_used_session(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path, max_cached=2) as reg:
        await reg.resolve("agent:main:a")
        await reg.resolve("agent:main:b")
        await reg.resolve("agent:main:a")
        await reg.resolve("agent:main:c")
        assert list(reg.keys()) == ["agent:main:a", "agent:main:c"]
        assert reg.size == len(reg) == 2
        assert reg.get("agent:main:b") is None


async def test_get_refreshes_last_access_without_loading(tmp_path: Path) -> None:
    now = [1_000]
    async with SessionRegistry(tmp_path, clock_ms=lambda: now[0]) as reg:
        assert reg.get("agent:main:s1") is None
        ctx = await reg.resolve("agent:main:s1")
        now[0] = 5_000
        got = reg.get("agent:main:s1")
        assert got is ctx and ctx.last_access_ms == 5_000
        assert [c.session_key for c in reg.values()] == ["agent:main:s1"]


async def test_concurrent_resolves_of_one_key_rebuild_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = SessionFiles.rebuild

    def counting(self: SessionFiles) -> Any:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(SessionFiles, "rebuild", counting)
    async with SessionRegistry(tmp_path) as reg:
        ctxs = await asyncio.gather(*(reg.resolve("agent:main:s1") for _ in range(50)))
    assert calls == 1
    assert all(c is ctxs[0] for c in ctxs)


async def test_a_failed_rebuild_does_not_poison_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SessionFiles.rebuild
    monkeypatch.setattr(SessionFiles, "rebuild", lambda self: (_ for _ in ()).throw(OSError("io")))
    async with SessionRegistry(tmp_path) as reg:
        with pytest.raises(OSError):
            await reg.resolve("agent:main:s1")
        monkeypatch.setattr(SessionFiles, "rebuild", original)
        ctx = await reg.resolve("agent:main:s1")
        assert ctx.manager.entry_count == 0


async def test_internal_memory_sessions_are_refused_and_create_nothing(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        assert await reg.resolve_if_allowed("agent:main:memory-t1-session-17") is None
        assert len(reg) == 0
    assert list(tmp_path.iterdir()) == []


async def test_a_malformed_key_maps_to_the_same_session_in_two_registries(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as one:
        m1 = (await one.resolve("not a session key")).manager
        await m1.append_entries([entry("x_1")])
    async with SessionRegistry(tmp_path) as two:
        m2 = (await two.resolve("not a session key")).manager
    assert (m1.agent_name, m1.session_id) == (m2.agent_name, m2.session_id)
    assert "x_1" in m2.processed_tool_call_ids


@pytest.mark.parametrize(
    "key",
    [
        "..",
        ".",
        "",
        "/etc/passwd",
        "agent:..:x",
        "agent:.:x",
        "agent:main:.",
        "agent:main:..",
        "agent:x:\0",
        "../../escape",
        "a" * 5000,
        "agent:main:" + "é" * 300,
    ],
)
async def test_no_key_writes_outside_the_data_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    async with SessionRegistry(root) as reg:
        try:
            ctx = await reg.resolve(key)
        except InvalidSessionKeyError:
            return
        await ctx.manager.append_entries([entry("c_1")])
        await ctx.manager.claim(["c_2"])
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(root)]
    assert outside == []
    assert ctx.manager.journal_path.resolve().is_relative_to(root.resolve())


@pytest.mark.parametrize(
    ("key", "real_session_id", "seed_file"),
    [
        ("agent:main:.s", None, "main/offload-.s.jsonl"),
        ("agent:main:.", None, "main/offload-..jsonl"),
        ("agent:.hidden:s", None, ".hidden/offload-s.jsonl"),
        ("agent:main:x", "r:1", "main/offload-r:1.jsonl"),
        ("agent:main:" + "s" * 241, None, "main/offload-" + "s" * 241 + ".jsonl"),
        ("agent:" + "a" * 255 + ":s", None, "a" * 255 + "/offload-s.jsonl"),
    ],
)
async def test_resolve_reads_the_journal_the_seed_wrote_under_its_own_name(
    tmp_path: Path, key: str, real_session_id: str | None, seed_file: str
) -> None:
    # The seed wrote these files with these very names; a registry must find them, and its own
    # writes (lock, temp, claims and lease files beside the journal) must work even when their
    # natural names would exceed the 255-byte limit that the journal's name still fits.
    journal = tmp_path / seed_file
    journal.parent.mkdir(parents=True)
    journal.write_text('{"tool_call_id": "seed_1", "offloaded": true}\n', encoding="utf-8")
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve(key, real_session_id)).manager
        assert manager.journal_path == journal
        assert "seed_1" in manager.confirmed_offload_ids
        assert await manager.append_entries([entry("ours_1")]) == 1
        assert await manager.claim(["ours_2"]) == ["ours_2"]
        assert await manager.mark_offload_status({"ours_1": True}) == 1
    ids = [e["tool_call_id"] for e in read_journal(journal).entries]
    assert ids == ["seed_1", "ours_1"]
    async with SessionRegistry(tmp_path) as again:
        manager = (await again.resolve(key, real_session_id)).manager
        assert {"seed_1", "ours_1"} <= set(manager.confirmed_offload_ids)
        assert await manager.claim(["ours_2"]) == []


def test_the_operator_scans_find_the_sessions_the_seed_names(tmp_path: Path) -> None:
    # warm, verify and stats list sessions with iter_sessions: a hidden agent directory and
    # a real session id with ":" are sessions like any other, named as resolve names them.
    for key, real in [("agent:.hidden:s", None), ("agent:main:x", "r:1"), ("agent:main:.d", None)]:
        identity = resolve_identity(key, real)
        journal = tmp_path / identity.agent_name / f"offload-{identity.session_id}.jsonl"
        journal.parent.mkdir(exist_ok=True)
        journal.write_text('{"tool_call_id": "c"}\n', encoding="utf-8")
    found = {(s.agent_name, s.session_id) for s in iter_sessions(tmp_path)}
    assert found == {(".hidden", "s"), ("main", "r:1"), ("main", ".d")}


async def test_a_key_that_does_not_parse_reads_the_journal_of_its_real_session_id(
    tmp_path: Path,
) -> None:
    # Decided (README, deliberate differences): the seed names this journal but never reads
    # it; we read it, so a restart or another worker sees what was appended.
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve("not a key", "real:7")).manager
        await manager.append_entries([entry("c_1")])
    assert (tmp_path / "not a key" / "offload-real:7.jsonl").is_file()
    async with SessionRegistry(tmp_path) as again:
        manager = (await again.resolve("not a key", "real:7")).manager
        assert "c_1" in manager.processed_tool_call_ids
        assert await manager.append_entries([entry("c_1")]) == 0


async def test_a_directory_where_the_journal_should_be_reads_as_an_empty_session(
    tmp_path: Path,
) -> None:
    # The seed's read fails on a directory and it starts the session empty; so do we. Writing
    # to it is still refused with a clear error, never a traceback from deep inside.
    (tmp_path / "main" / "offload-s.jsonl").mkdir(parents=True)
    async with SessionRegistry(tmp_path) as reg:
        manager = (await reg.resolve("agent:main:s")).manager
        assert (manager.entry_count, set(manager.processed_tool_call_ids)) == (0, set())
        with pytest.raises(JournalError, match=r"offload-s\.jsonl"):
            await manager.append_entries([entry("c_1")])


async def test_append_drops_ids_already_in_the_journal_and_their_normalized_forms(
    tmp_path: Path,
) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        assert await m.append_entries([entry("call_1"), entry("call_2")]) == 2
        assert await m.append_entries([entry("call1"), entry("call_2"), entry("c_all3")]) == 1
        assert await m.append_entries([entry("x_1"), entry("x1")]) == 1
    ids = [e["tool_call_id"] for e in read_journal(m.journal_path).entries]
    assert ids == ["call_1", "call_2", "c_all3", "x_1"]
    assert m.entry_count == 4


async def test_append_rejects_an_entry_without_a_tool_call_id(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        with pytest.raises(ValueError, match="tool_call_id"):
            await m.append_entries([{"summary": "no id"}])


async def test_append_catches_up_with_another_registrys_writes(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as a, SessionRegistry(tmp_path) as b:
        ma = (await a.resolve("agent:main:s1")).manager
        mb = (await b.resolve("agent:main:s1")).manager
        await ma.append_entries([entry("call_1")])
        assert await mb.append_entries([entry("call_1"), entry("call_2")]) == 1
        assert mb.entry_count == 2 and "call1" in mb.processed_tool_call_ids


async def test_refresh_reads_what_another_process_appended(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as a, SessionRegistry(tmp_path) as b:
        ma = (await a.resolve("agent:main:s1")).manager
        mb = (await b.resolve("agent:main:s1")).manager
        await ma.append_entries([entry("call_1", offloaded=True)])
        assert "call_1" not in mb.confirmed_offload_ids
        await mb.refresh()
        assert "call_1" in mb.confirmed_offload_ids and mb.entry_count == 1


async def test_mark_sets_status_and_a_fresh_registry_sees_it(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        await m.append_entries([entry("call_1"), entry("call_2"), entry("call_3")])
        assert await m.mark_offload_status({"call_1": True, "call2": "deleted"}) == 2
        assert sorted(m.confirmed_offload_ids) == ["call1", "call2", "call_1", "call_2"]
        assert sorted(m.deleted_offload_ids) == ["call2", "call_2"]
    async with SessionRegistry(tmp_path) as fresh:
        m2 = (await fresh.resolve("agent:main:s1")).manager
        assert described(m2) == described(m)


async def test_mark_after_another_process_appended_keeps_its_lines(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as a, SessionRegistry(tmp_path) as b:
        ma = (await a.resolve("agent:main:s1")).manager
        mb = (await b.resolve("agent:main:s1")).manager
        await ma.append_entries([entry("call_1")])
        await mb.append_entries([entry("call_2")])
        await ma.mark_offload_status({"call_1": True})
        assert ma.entry_count == 2 and "call_2" in ma.processed_tool_call_ids


async def test_claim_hands_each_id_to_one_caller_across_registries(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as a, SessionRegistry(tmp_path) as b:
        ma = (await a.resolve("agent:main:s1")).manager
        mb = (await b.resolve("agent:main:s1")).manager
        assert await ma.claim(["call_1", "call_2"]) == ["call_1", "call_2"]
        assert await mb.claim(["call1", "call_2", "call_3"]) == ["call_3"]
        assert await ma.claim(["call_3"]) == []
        assert "call_3" in ma.processed_tool_call_ids


async def test_claim_never_wins_an_id_already_in_the_journal(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        await m.append_entries([entry("call_1")])
        assert await m.claim(["call_1", "call1", "call_9"]) == ["call_9"]


async def test_claims_survive_a_restart(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        await (await reg.resolve("agent:main:s1")).manager.claim(["call_1"])
    async with SessionRegistry(tmp_path) as again:
        m = (await again.resolve("agent:main:s1")).manager
        assert await m.claim(["call_1"]) == []
        assert "call_1" in m.processed_tool_call_ids


async def test_a_read_only_registry_writes_nothing(sample_root: Path) -> None:
    before = tree(sample_root)
    async with SessionRegistry(sample_root, read_only=True) as reg:
        m = (await reg.resolve("agent:review:pr-42", "real-abc")).manager
        await reg.resolve("agent:brand:new")
        with pytest.raises(JournalError):
            await m.append_entries([entry("z_1")])
        with pytest.raises(JournalError):
            await m.claim(["z_2"])
    assert tree(sample_root) == before
    assert not (sample_root / "brand").exists()


async def test_pending_tool_pairs_are_buffered_once_and_taken_as_processed(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        await m.append_entries([entry("call_0")])
        assert m.add_pending_tool_pair("call_0", "pair0") is False
        assert m.add_pending_tool_pair("call_1", "pair1") is True
        assert m.add_pending_tool_pair("call_1", "again") is False
        assert m.pending_tool_pairs == ["pair1"]
        assert m.take_pending_tool_pairs() == ["pair1"]
        assert m.pending_tool_pairs == []
        assert "call1" in m.processed_tool_call_ids
        assert m.add_pending_tool_pair("call_1", "pair1") is False


async def test_the_l1_lock_has_one_holder(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        assert m.try_acquire_l1_lock() and m.is_l1_locked
        assert not m.try_acquire_l1_lock()
        m.release_l1_lock()
        assert not m.is_l1_locked and m.try_acquire_l1_lock()


async def test_agent_state_fields_and_mmd_numbers(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path) as reg:
        m = (await reg.resolve("agent:main:s1")).manager
        await m.set_active_mmd("3-plan.mmd", "3")
        await m.update_agent_state(last_offloaded_tool_call_id="call_9")
        state = await m.get_agent_state()
        assert (state.active_mmd_file, state.active_mmd_id) == ("3-plan.mmd", "3")
        assert state.last_offloaded_tool_call_id == "call_9"
        assert state.last_session_key == "agent:main:s1"
        (tmp_path / "main" / "mmds").mkdir()
        (tmp_path / "main" / "mmds" / "7-x.mmd").write_text("graph")
        assert await m.next_mmd_number() == 8
        assert [await m.allocate_mmd_number() for _ in range(2)] == [8, 9]
        with pytest.raises(TypeError):
            await m.update_agent_state(no_such_field=1)


async def test_using_a_closed_registry_is_an_error(tmp_path: Path) -> None:
    reg = SessionRegistry(tmp_path)
    await reg.close()
    with pytest.raises(RegistryClosedError):
        await reg.resolve("agent:main:s1")


async def test_only_one_shared_tier_source_may_be_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SessionRegistry(tmp_path, redis_url="memory://", tier=NoSharedTier())


async def test_an_unsupported_redis_url_scheme_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SessionRegistry(tmp_path, redis_url="mongodb://127.0.0.1/0")


def test_default_data_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_REGISTRY_DATA_ROOT", str(tmp_path))
    assert SessionRegistry().data_root == tmp_path
    monkeypatch.delenv("OFFLOAD_REGISTRY_DATA_ROOT")
    assert SessionRegistry().data_root == Path(os.path.expanduser("~/.openclaw/context-offload"))
