"""The Redis tier's behaviour, one suite run against ``memory://`` (fakeredis) and a real server.

Every test gets a ``(url, prefix)`` pair from the ``redis_url`` fixture: ``memory://`` (the
process's fakeredis store) or the shared real ``redis_server``, with a key prefix unique to the
test. The truth every answer is compared with is a journal-only, read-only registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.asyncio as redis_asyncio

from offload_registry import SessionRegistry
from offload_registry import sync as sync_api
from offload_registry._async import open_redis, redis_tier
from offload_registry.cli.main import main as cli_main
from offload_registry.config import TierOptions
from offload_registry.disk import layout
from offload_registry.disk.session_files import SessionFiles
from offload_registry.errors import ConfigurationError
from offload_registry.keys import resolve_identity
from session_helpers import described, entry

KEY = "agent:main:s1"

# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "real"])
def redis_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(url, key_prefix)`` of the backend under test: ``memory://`` (one fakeredis store per
    process and flavour) or the shared real server; the prefix is unique to the test either
    way, and the keys also carry the deployment id of the test's own data root."""
    prefix = f"t{uuid4().hex[:12]}"
    if request.param == "memory":
        return "memory://", prefix
    server_process = request.getfixturevalue("redis_server")
    return server_process.url, prefix


async def truth(root: Path, key: str = KEY) -> dict[str, Any]:
    """The session as a fresh journal-only registry reads it (writes nothing)."""
    async with SessionRegistry(root, read_only=True) as journal_only:
        return described((await journal_only.resolve(key)).manager)


def registry(root: Path, backend: tuple[str, str], **options: Any) -> SessionRegistry:
    url, prefix = backend
    if options:
        return SessionRegistry(
            root, redis_url=url, redis_options=TierOptions(key_prefix=prefix, **options)
        )
    return SessionRegistry(root, redis_url=url, key_prefix=prefix)


async def fresh_resolve(root: Path, backend: tuple[str, str], key: str = KEY) -> tuple[Any, Any]:
    """Resolve ``key`` in a new registry: ``(manager, tier stats)``."""
    async with registry(root, backend) as reg:
        manager = (await reg.resolve(key)).manager
        return manager, reg.tier.stats  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def raw_redis(url: str, reg: SessionRegistry) -> AsyncIterator[Any]:
    """A plain client on the registry's store (its own fakeredis client for memory://)."""
    if url.startswith("memory://"):
        yield reg.tier._client  # type: ignore[attr-defined]
        return
    client = redis_asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def seed_session(root: Path, backend: tuple[str, str], key: str = KEY) -> Any:
    """Write a small session through a Redis-backed registry; returns its Redis key names."""
    async with registry(root, backend) as reg:
        manager = (await reg.resolve(key)).manager
        await manager.append_entries([entry(f"toolu_{i:02d}") for i in range(12)])
        await manager.mark_offload_status({"toolu_01": True, "toolu_02": "deleted"})
        await manager.claim(["call_x", "call_y"])
        await manager.append_entries([entry("toolu_20", offloaded=True)])
        return reg.tier.keyspace.session_for(manager.identity)  # type: ignore[attr-defined]


def tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and directory under ``root`` with its content and modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for p in [root, *root.rglob("*")]
    }


# --------------------------------------------------------------------------------------------
# reads agree with the journal
# --------------------------------------------------------------------------------------------


async def test_a_second_registry_resolves_from_redis_exactly_the_journals_state(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    await seed_session(tmp_path, redis_url)
    want = await truth(tmp_path)
    async with registry(tmp_path, redis_url) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.source == "redis"
        assert described(manager) == want
        # Redis itself holds that state (not only the journal catch-up after it).
        stored = await reg.tier.load(manager.identity)
    assert stored is not None
    assert sorted(stored.state.confirmed) == want["confirmed"]
    assert sorted(stored.state.deleted) == want["deleted"]
    assert sorted(stored.state.processed | stored.claimed) == want["processed"]
    assert stored.state.entry_count == want["entry_count"]


async def test_appends_marks_and_claims_of_one_registry_are_seen_by_a_new_one_from_redis(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url) as writer:
        manager = (await writer.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_a"), entry("toolu_b")])
        assert (await fresh_resolve(tmp_path, redis_url))[0].source == "redis"
        await manager.mark_offload_status({"toolu_a": "deleted", "toolu_b": True})
        won = await manager.claim(["call_1", "toolu_a", "call_2"])
        await manager.append_entries([entry("toolu_c", offloaded=True)])
        reader, stats = await fresh_resolve(tmp_path, redis_url)
    assert won == ["call_1", "call_2"]
    assert reader.source == "redis" and stats.hits == 1 and stats.rebuilds == 0
    assert described(reader) == await truth(tmp_path)
    assert reader.is_processed("call1") and reader.is_processed("toolu_c")
    assert "toolu_a" in reader.deleted_offload_ids


async def test_a_journal_appended_without_redis_is_caught_up_from_its_tail(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    await seed_session(tmp_path, redis_url)
    async with SessionRegistry(tmp_path) as seed:  # a process without Redis, like the seed
        manager = (await seed.resolve(KEY)).manager
        size_in_redis = manager.journal_path.stat().st_size
        await manager.append_entries([entry("late_1", offloaded=True), entry("late_2")])
    starts: list[int | None] = []
    original_catch_up = SessionFiles.catch_up

    def spy_catch_up(self: SessionFiles, since: Any, **kwargs: Any) -> Any:
        starts.append(None if since is None else since.offset)
        return original_catch_up(self, since, **kwargs)

    def no_rebuild(self: SessionFiles) -> Any:
        raise AssertionError("a full journal rebuild instead of a tail catch-up")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SessionFiles, "rebuild", no_rebuild)
        patch.setattr(SessionFiles, "catch_up", spy_catch_up)
        reader, _ = await fresh_resolve(tmp_path, redis_url)
    assert reader.source == "redis"
    assert starts == [size_in_redis]  # only the new tail was read
    assert described(reader) == await truth(tmp_path)
    assert {"late_1", "late2"} <= set(reader.processed_tool_call_ids)


async def test_a_copy_standing_at_the_files_positions_is_served_without_reading_them(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    await seed_session(tmp_path, redis_url)

    def no_read(self: SessionFiles, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the files were read although Redis stands at their positions")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SessionFiles, "rebuild", no_read)
        patch.setattr(SessionFiles, "catch_up_all", no_read)
        reader, _ = await fresh_resolve(tmp_path, redis_url)
    assert reader.source == "redis"
    assert described(reader) == await truth(tmp_path)


async def test_a_journal_replaced_by_a_mark_without_redis_is_detected_and_read_again(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    await seed_session(tmp_path, redis_url)
    async with SessionRegistry(tmp_path) as seed:
        manager = (await seed.resolve(KEY)).manager
        await manager.mark_offload_status({"toolu_05": "deleted", "toolu_01": False})
    reader, _ = await fresh_resolve(tmp_path, redis_url)
    assert described(reader) == await truth(tmp_path)
    assert "toolu_05" in reader.deleted_offload_ids
    assert "toolu_01" not in reader.confirmed_offload_ids


# --------------------------------------------------------------------------------------------
# corrupt values
# --------------------------------------------------------------------------------------------


async def _garbage_snap(client: Any, keys: Any) -> None:
    await client.hset(keys.state, "snap", b"\xc1\xc1 not msgpack \xff")


async def _truncated_snap(client: Any, keys: Any) -> None:
    snap = await client.hget(keys.state, "snap")
    await client.hset(keys.state, "snap", snap[: len(snap) // 2])


async def _future_schema_snap(client: Any, keys: Any) -> None:
    await client.hset(keys.state, "snap", msgpack.packb([99, 0, 0, None, [], b""]))


async def _state_is_a_list(client: Any, keys: Any) -> None:
    await client.delete(keys.state)
    await client.rpush(keys.state, b"planted")


async def _state_is_a_string(client: Any, keys: Any) -> None:
    await client.delete(keys.state)
    await client.set(keys.state, b"planted")


async def _garbage_delta(client: Any, keys: Any) -> None:
    assert await client.llen(keys.deltas) > 0  # the seeded session ends with deltas
    await client.lset(keys.deltas, 0, b"\x93\xc1garbage")  # the recorded count still holds


async def _deltas_is_a_string(client: Any, keys: Any) -> None:
    await client.delete(keys.deltas)
    await client.set(keys.deltas, b"planted")


CORRUPTIONS = {
    "garbage-snap": _garbage_snap,
    "truncated-snap": _truncated_snap,
    "future-schema-snap": _future_schema_snap,
    "state-is-a-list": _state_is_a_list,
    "state-is-a-string": _state_is_a_string,
    "garbage-delta": _garbage_delta,
    "deltas-is-a-string": _deltas_is_a_string,
}


async def plant(tmp_path: Path, backend: tuple[str, str], corruption: str) -> None:
    keys = await seed_session(tmp_path, backend)
    async with registry(tmp_path, backend) as reg, raw_redis(backend[0], reg) as client:
        await CORRUPTIONS[corruption](client, keys)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_a_corrupt_value_in_redis_is_a_miss_answered_from_the_journal(
    tmp_path: Path, redis_url: tuple[str, str], corruption: str
) -> None:
    await plant(tmp_path, redis_url, corruption)
    reader, stats = await fresh_resolve(tmp_path, redis_url)
    assert reader.source == "journal"
    assert described(reader) == await truth(tmp_path)
    assert stats.bad_values == 1 and stats.rebuilds == 1


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_a_corrupt_value_is_replaced_so_the_next_registry_resolves_from_redis(
    tmp_path: Path, redis_url: tuple[str, str], corruption: str
) -> None:
    await plant(tmp_path, redis_url, corruption)
    await fresh_resolve(tmp_path, redis_url)  # meets the bad value, rebuilds
    reader, stats = await fresh_resolve(tmp_path, redis_url)
    assert described(reader) == await truth(tmp_path)
    assert (reader.source, stats.bad_values) == ("redis", 0)


# --------------------------------------------------------------------------------------------
# single flight across processes
# --------------------------------------------------------------------------------------------


async def test_fifty_concurrent_cold_resolves_in_fifty_registries_rebuild_once(
    tmp_path: Path, redis_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SessionRegistry(tmp_path) as seed:
        manager = (await seed.resolve(KEY)).manager
        await manager.append_entries([entry(f"toolu_{i:04d}") for i in range(2000)])
        await manager.mark_offload_status({"toolu_0007": True, "toolu_0008": "deleted"})
    want = await truth(tmp_path)
    calls = 0
    original = SessionFiles.rebuild

    def counting(self: SessionFiles) -> Any:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(SessionFiles, "rebuild", counting)
    registries = [registry(tmp_path, redis_url) for _ in range(50)]
    try:
        contexts = await asyncio.gather(*(reg.resolve(KEY) for reg in registries))
        assert calls == 1
        assert all(described(ctx.manager) == want for ctx in contexts)
        assert sorted(ctx.manager.source for ctx in contexts) == ["journal"] + ["redis"] * 49
    finally:
        for reg in registries:
            await reg.close()


async def test_a_resolver_that_missed_just_before_another_published_does_not_rebuild_again(
    tmp_path: Path, redis_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SessionRegistry(tmp_path) as seed:
        await (await seed.resolve(KEY)).manager.append_entries([entry("toolu_1")])
    calls = 0
    original = SessionFiles.rebuild

    def counting(self: SessionFiles) -> Any:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(SessionFiles, "rebuild", counting)
    async with registry(tmp_path, redis_url) as first, registry(tmp_path, redis_url) as second:
        client: Any = second.tier._client  # type: ignore[attr-defined]
        lock = second.tier.keyspace.session_for(resolve_identity(KEY)).lock  # type: ignore[attr-defined]
        real_set = client.set
        interleaved = False

        async def let_the_other_worker_finish_first(name: Any, *args: Any, **kwargs: Any) -> Any:
            # Called for the rebuild lock right after `second` missed: `first` now rebuilds,
            # publishes and releases the lock before `second` asks for it.
            nonlocal interleaved
            if name == lock and not interleaved:
                interleaved = True
                await first.resolve(KEY)
            return await real_set(name, *args, **kwargs)

        monkeypatch.setattr(client, "set", let_the_other_worker_finish_first)
        manager = (await second.resolve(KEY)).manager
    rebuilds = calls
    assert interleaved and described(manager) == await truth(tmp_path)
    assert rebuilds == 1


async def test_a_rebuild_lock_left_by_a_crashed_worker_delays_but_never_hangs_a_resolve(
    tmp_path: Path, redis_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_tier, "REBUILD_WAIT_SECONDS", 1.0)  # keep the suite fast
    async with SessionRegistry(tmp_path) as seed:
        await (await seed.resolve(KEY)).manager.append_entries([entry("toolu_1")])
    async with registry(tmp_path, redis_url) as reg:
        keys = reg.tier.keyspace.session_for(resolve_identity(KEY))  # type: ignore[attr-defined]
        async with raw_redis(redis_url[0], reg) as client:
            await client.set(keys.lock, b"token-of-a-crashed-worker", px=300)
        started = time.monotonic()
        manager = (await asyncio.wait_for(reg.resolve(KEY), timeout=10)).manager
        elapsed = time.monotonic() - started
        stats = reg.tier.stats  # type: ignore[attr-defined]
    assert elapsed < redis_tier.REBUILD_WAIT_SECONDS + 1.5
    assert (stats.rebuild_waits, stats.rebuilds) == (1, 1)
    assert described(manager) == await truth(tmp_path)
    assert (await fresh_resolve(tmp_path, redis_url))[0].source == "redis"


# --------------------------------------------------------------------------------------------
# idle TTL
# --------------------------------------------------------------------------------------------


async def test_the_idle_ttl_is_set_on_every_key_of_a_session(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url, idle_ttl_seconds=1000) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        await manager.claim(["call_1"])
        keys = reg.tier.keyspace.session_for(manager.identity)  # type: ignore[attr-defined]
        async with raw_redis(redis_url[0], reg) as client:
            assert await client.llen(keys.deltas) == 2
            for key in (keys.state, keys.deltas):
                assert 0 < await client.pttl(key) <= 1_000_000, key


async def test_a_resolve_leaves_the_ttl_alone_while_plenty_of_it_remains(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url, idle_ttl_seconds=1000) as writer:
        manager = (await writer.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        keys = writer.tier.keyspace.session_for(manager.identity)  # type: ignore[attr-defined]
        async with raw_redis(redis_url[0], writer) as client:
            for key in (keys.state, keys.deltas):
                await client.pexpire(key, 950_000)  # 95 % of the idle TTL remains
            async with registry(tmp_path, redis_url, idle_ttl_seconds=1000) as reader:
                assert (await reader.resolve(KEY)).manager.source == "redis"
            for key in (keys.state, keys.deltas):
                assert 0 < await client.pttl(key) <= 950_000, key


async def test_a_resolve_refreshes_the_ttl_of_every_key_together_when_little_remains(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url, idle_ttl_seconds=1000) as writer:
        manager = (await writer.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        keys = writer.tier.keyspace.session_for(manager.identity)  # type: ignore[attr-defined]
        async with raw_redis(redis_url[0], writer) as client:
            await client.pexpire(keys.state, 100_000)
            await client.pexpire(keys.deltas, 120_000)
            async with registry(tmp_path, redis_url, idle_ttl_seconds=1000) as reader:
                assert (await reader.resolve(KEY)).manager.source == "redis"
            for key in (keys.state, keys.deltas):
                assert 900_000 < await client.pttl(key) <= 1_000_000, key


# --------------------------------------------------------------------------------------------
# deployments
# --------------------------------------------------------------------------------------------


async def test_two_data_roots_on_one_redis_never_see_each_others_sessions(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    roots = {"a": tmp_path / "a", "b": tmp_path / "b"}
    for name, root in roots.items():
        async with registry(root, redis_url) as reg:
            await (await reg.resolve(KEY)).manager.append_entries([entry(f"only_{name}")])
    for name, root in roots.items():
        reader, _ = await fresh_resolve(root, redis_url)
        assert reader.source == "redis"
        assert set(reader.processed_tool_call_ids) == {f"only_{name}", f"only{name}"}


async def test_one_data_root_mounted_at_two_paths_is_one_deployment(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    # Two hosts (or containers) mount the same files at different paths: the data root's own
    # id file names the deployment, so both use one keyspace (the path would give two).
    first = tmp_path / "host-a" / "offload"
    async with registry(first, redis_url) as reg:
        await (await reg.resolve(KEY)).manager.append_entries([entry("c_1")])
        keyspace = reg.tier.keyspace  # type: ignore[attr-defined]
    second = tmp_path / "host-b" / "mnt" / "context"
    shutil.copytree(first, second)  # the same files, seen at another path
    async with registry(second, redis_url) as reg:  # not refused: the same data-root id
        assert reg.tier.keyspace == keyspace  # type: ignore[attr-defined]
        manager = (await reg.resolve(KEY)).manager
        assert "c_1" in manager.processed_tool_call_ids


async def test_another_data_root_at_the_same_path_gets_its_own_keyspace(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url) as reg:
        await (await reg.resolve(KEY)).manager.append_entries([entry("c_1")])
        old = reg.tier.keyspace  # type: ignore[attr-defined]
    # Another disk mounted at the same path: another data-root id, another deployment.
    shutil.rmtree(tmp_path / "main")
    (tmp_path / layout.DATA_ROOT_ID_FILE).write_text(uuid4().hex + "\n")
    async with registry(tmp_path, redis_url) as reg:
        assert reg.tier.keyspace != old  # type: ignore[attr-defined]
        manager = (await reg.resolve(KEY)).manager
        assert (manager.entry_count, manager.source) == (0, "journal")


async def test_a_deployment_id_collision_is_refused_with_a_clear_error(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    async with registry(tmp_path, redis_url) as reg:
        await reg.resolve(KEY)
        async with raw_redis(redis_url[0], reg) as client:
            # What a 48-bit collision with another data root would leave there.
            await client.set(reg.tier.keyspace.deployment_key(), "another-root")  # type: ignore[attr-defined]
    refused = registry(tmp_path, redis_url)
    with pytest.raises(ConfigurationError, match="belong to another data root"):
        async with refused:
            pass
    await refused.close()  # idempotent: never leave a connection open


def ids_made_at_once(root: Path, callers: int) -> list[str | None]:
    """``data_root_id(root, create=True)`` from ``callers`` threads released together."""
    start = threading.Barrier(callers)
    ids: list[str | None] = []

    def make_id() -> None:
        start.wait()
        ids.append(layout.data_root_id(root, create=True))

    threads = [threading.Thread(target=make_id) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


def test_processes_starting_together_on_a_new_data_root_all_read_one_id(tmp_path: Path) -> None:
    # Found by the history suite (seed 13): four workers started at once on a fresh data root;
    # one read the id file its creator had made but not yet written, took "" for the data
    # root's id and was refused with "Redis keys ... belong to another data root (id , ...)".
    for trial in range(20):
        root = tmp_path / f"root{trial}"
        ids = ids_made_at_once(root, callers=8)
        assert len(set(ids)) == 1 and ids[0], f"trial {trial}: {ids}"
        assert sorted(p.name for p in root.iterdir()) == [layout.DATA_ROOT_ID_FILE]


# --------------------------------------------------------------------------------------------
# the CLI and the sync twin
# --------------------------------------------------------------------------------------------


def inspect_json(
    root: Path, backend: tuple[str, str], key: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    url, prefix = backend
    argv = ["--data-root", str(root), "--redis-url", url, "--key-prefix", prefix]
    capsys.readouterr()
    assert cli_main([*argv, "inspect", "--json", key]) == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


def sync_seed(root: Path, backend: tuple[str, str], key: str, *, redis: bool) -> None:
    url, prefix = backend
    tier: dict[str, Any] = {"redis_url": url, "key_prefix": prefix} if redis else {}
    with sync_api.SessionRegistry(root, **tier) as reg:
        manager = reg.resolve(key).manager
        manager.append_entries([entry("toolu_1"), entry("toolu_2", offloaded=True)])
        manager.mark_offload_status({"toolu_1": "deleted"})
        manager.claim(["call_1"])


async def test_inspect_answers_from_redis_when_it_can_and_never_writes_to_the_data_root(
    tmp_path: Path, redis_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Seeded by the sync twin, like the CLI (memory:// is one store per flavour: see below).
    sync_seed(tmp_path, redis_url, "agent:main:s1", redis=True)  # in Redis
    sync_seed(tmp_path, redis_url, "agent:main:cold", redis=False)  # journal only
    want = {key: await truth(tmp_path, key) for key in ("agent:main:s1", "agent:main:cold")}
    before = tree(tmp_path)
    sources = []
    for key in ("agent:main:s1", "agent:main:cold", "agent:main:cold"):
        got = inspect_json(tmp_path, redis_url, key, capsys)
        assert {k: got[k] for k in want[key]} == want[key]
        sources.append(got["source"])
    # the cold session is rebuilt from its journal and fills Redis for the next inspect
    assert sources == ["redis", "journal", "redis"]
    assert tree(tmp_path) == before


def test_the_sync_registry_shares_the_session_through_redis(
    tmp_path: Path, redis_url: tuple[str, str]
) -> None:
    url, prefix = redis_url
    with sync_api.SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as writer:
        manager = writer.resolve(KEY).manager
        assert manager.source == "journal"
        manager.append_entries([entry("toolu_1"), entry("toolu_2")])
        manager.mark_offload_status({"toolu_1": "deleted"})
        assert manager.claim(["call_1", "toolu_2"]) == ["call_1"]
        manager.append_entries([entry("toolu_3", offloaded=True)])
    with sync_api.SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reader:
        again = reader.resolve(KEY).manager
        assert again.source == "redis" and reader.tier.stats.rebuilds == 0  # type: ignore[attr-defined]
    with sync_api.SessionRegistry(tmp_path, read_only=True) as journal_only:
        assert described(again) == described(journal_only.resolve(KEY).manager)


# --------------------------------------------------------------------------------------------
# memory:// itself
# --------------------------------------------------------------------------------------------


async def test_memory_registries_of_one_process_share_one_store(tmp_path: Path) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with SessionRegistry(tmp_path, redis_url="memory://", key_prefix=prefix) as writer:
        await (await writer.resolve(KEY)).manager.append_entries([entry("toolu_1")])
    async with SessionRegistry(tmp_path, redis_url="memory://", key_prefix=prefix) as reader:
        assert (await reader.resolve(KEY)).manager.source == "redis"


async def test_memory_is_one_store_for_the_asyncio_and_the_sync_registries(
    tmp_path: Path,
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with SessionRegistry(tmp_path, redis_url="memory://", key_prefix=prefix) as writer:
        await (await writer.resolve(KEY)).manager.append_entries([entry("toolu_1")])
    with sync_api.SessionRegistry(tmp_path, redis_url="memory://", key_prefix=prefix) as reader:
        assert reader.resolve(KEY).manager.source == "redis"


def test_the_tier_times_its_breaker_by_the_injected_clock(tmp_path: Path) -> None:
    """An open breaker lets a probe through once the tier's clock says ``reset_after``
    passed: with an injected clock, without sleeping."""
    now = [100.0]
    tier = open_redis.open_redis_tier(
        tmp_path,
        url="memory://",
        client=None,
        options=TierOptions(key_prefix=f"t{uuid4().hex[:12]}"),
        read_only=False,
        clock=lambda: now[0],
    )
    breaker = tier.breaker
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(ConnectionError("down"), "test")
    assert not breaker.allow()
    now[0] += breaker.reset_after - 0.001
    assert not breaker.allow()
    now[0] += 0.001
    assert breaker.allow()  # the half-open probe
