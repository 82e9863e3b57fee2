"""Near caches stay coherent: a write in one registry is seen by another's next resolve."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry
from offload_registry import sync as blocking
from offload_registry.disk.session_files import SessionFiles
from offload_registry.testing.server import RedisServerProcess
from session_helpers import PATIENCE, entry, listening, messages_delivered, until, wait_until

KEY = "agent:main:shared"


@pytest.fixture(params=["memory", "real"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    prefix = f"coh{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        yield "memory://", prefix
    else:
        server: RedisServerProcess = request.getfixturevalue("redis_server")
        yield server.url, prefix


async def seen_within(
    reg: SessionRegistry, tool_call_id: str, seconds: float = PATIENCE, key: str = KEY
) -> float:
    """Seconds until ``reg.resolve(key)`` shows the id (fails after ``seconds``)."""

    async def seen() -> bool:
        return tool_call_id in (await reg.resolve(key)).manager.processed_tool_call_ids

    return await until(f"{tool_call_id} visible in {key}", seen, seconds)


async def test_a_write_in_one_registry_reaches_the_others_cached_copy(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with (
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as writer,
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reader,
    ):
        cached = await listening(reader, KEY)  # a write before that could only be found
        writing = (await writer.resolve(KEY)).manager  # by the subscription's revalidation
        before = reader.tier.invalidations  # type: ignore[attr-defined]
        await writing.append_entries([entry("call_1")])
        await until(
            "the write's invalidation reached the reader",
            lambda: reader.tier.invalidations > before,  # type: ignore[attr-defined]
        )
        await seen_within(reader, "call_1")
        assert (await reader.resolve(KEY)).manager is cached  # revalidated, not reloaded


async def test_a_registry_is_not_invalidated_by_its_own_writes(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reg:
        manager = await listening(reg, KEY)
        before = reg.tier.invalidations  # type: ignore[attr-defined]
        await manager.append_entries([entry("call_1")])
        await messages_delivered(reg)  # our own write's message too
        assert manager.stale is False
        assert reg.tier.invalidations == before + 1  # type: ignore[attr-defined]  # the marker


async def test_copies_are_revalidated_after_the_invalidation_stream_broke(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    url = private_redis_server.url
    async with SessionRegistry(tmp_path, redis_url=url) as reader:
        manager = await listening(reader, KEY)  # the first subscription's revalidation
        private_redis_server.kill()
        # Written while Redis is down, by a process without Redis: no message can announce it.
        async with SessionRegistry(tmp_path) as offline:
            await (await offline.resolve(KEY)).manager.append_entries([entry("call_9")])
        private_redis_server.start()
        await until("a broken subscription makes cached copies untrusted", lambda: manager.stale)
        assert "call_9" in (await reader.resolve(KEY)).manager.processed_tool_call_ids


async def test_closing_a_registry_stops_its_listener(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    reg = SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix)
    async with reg:
        await reg.resolve(KEY)
        assert reg.tier._listener is not None  # type: ignore[attr-defined]
    assert reg.tier._listener is None  # type: ignore[attr-defined]


def test_the_sync_twin_listens_on_a_thread(tmp_path: Path, backend: tuple[str, str]) -> None:
    url, prefix = backend
    with (
        blocking.SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as writer,
        blocking.SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reader,
    ):
        reader.resolve(KEY)
        writer.resolve(KEY).manager.append_entries([entry("call_1")])
        wait_until(
            "call_1 visible to the reader",
            lambda: "call_1" in reader.resolve(KEY).manager.processed_tool_call_ids,
        )


async def test_a_write_made_while_a_session_loads_is_not_missed(
    tmp_path: Path, backend: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, prefix = backend
    async with (
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as peer,
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as loader,
    ):
        peer_manager = (await peer.resolve(KEY)).manager
        other = await listening(loader, "agent:main:other")
        await other.append_entries([entry("x")])
        original = SessionFiles.record_session
        written = asyncio.Event()

        def record_then_let_the_peer_write(self: SessionFiles, *args: Any) -> None:
            original(self, *args)
            written.set()

        monkeypatch.setattr(SessionFiles, "record_session", record_then_let_the_peer_write)
        load = asyncio.ensure_future(loader.resolve(KEY))
        await written.wait()
        await peer_manager.append_entries([entry("during_load")])
        await load
        await seen_within(loader, "during_load")


async def test_two_keys_sharing_one_journal_in_one_registry_see_each_others_writes(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reg:
        first = (await reg.resolve("agent:main:s1", "shared")).manager
        await until(  # the confirmed subscription marks copies once
            "the listener subscribed", lambda: reg.tier.hears(first.identity) and first.stale
        )
        await reg.resolve("agent:main:s1", "shared")
        second = (await reg.resolve("agent:main:s2", "shared")).manager
        assert first.journal_path == second.journal_path and first is not second
        await first.append_entries([entry("via_s1")])
        await seen_within(reg, "via_s1", key="agent:main:s2")


async def test_concurrent_resolvers_of_a_stale_copy_both_see_the_write(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with (
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as writer,
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reader,
    ):
        manager = (await reader.resolve(KEY)).manager
        await (await writer.resolve(KEY)).manager.append_entries([entry("call_1")])
        await until("the reader's copy marked stale", lambda: manager.stale)
        first, second = await asyncio.gather(reader.resolve(KEY), reader.resolve(KEY))
        assert "call_1" in first.manager.processed_tool_call_ids
        assert "call_1" in second.manager.processed_tool_call_ids


async def test_a_listener_that_died_is_restarted_and_copies_revalidated(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reg:
        manager = await listening(reg, KEY)
        listener = reg.tier._listener  # type: ignore[attr-defined]
        listener.cancel()
        await until("a listener that ends leaves no copy trusted", lambda: manager.stale)
        await reg.resolve("agent:main:another")  # the next watch starts a new listener
        assert reg.tier._listener is not listener  # type: ignore[attr-defined]


async def test_a_malformed_invalidation_is_ignored(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"coh{uuid.uuid4().hex[:10]}"
    async with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = await listening(reg, KEY)
        client = redis_server.client()
        try:
            client.publish(reg.tier.keyspace.channel(), b"garbage")  # type: ignore[attr-defined]
        finally:
            client.close()
        await messages_delivered(reg)  # the garbage's too
        assert not manager.stale


async def test_a_failing_invalidation_handler_drops_the_whole_near_cache(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    url, prefix = backend
    async with (
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as writer,
        SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as reader,
    ):
        await reader.resolve(KEY)
        await reader.resolve("agent:main:another")
        tier: Any = reader.tier

        def broken_handler(data: Any) -> None:
            raise RuntimeError("a bug in the invalidation handler")

        tier._on_message = broken_handler
        for attempt in range(300):  # the subscription starts in the background
            await (await writer.resolve(KEY)).manager.append_entries([entry(f"call_{attempt}")])
            if len(reader) == 0:
                break
            await asyncio.sleep(0.01)
        assert len(reader) == 0, "the near cache must be dropped, not trusted"
        assert (await reader.resolve(KEY)).manager.entry_count >= 1  # reloaded on demand
