"""Adversarial review of "After a fault: 1 s" (issue 12, finding 2) with faults the suite
does not already inject: the subscriber's connection killed server-side (the write lands
while it reconnects), and Redis rolled back to an older copy of the session (a failover that
missed writes). The trust expiry (the 1 s backstop) is off, so only announcements count."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry, freshness
from offload_registry.config import TierOptions
from offload_registry.testing.server import RedisServerProcess
from session_helpers import entry

KEY = "agent:main:live"
BOUND = 1.0
SLACK = 2.0

pytestmark = pytest.mark.redis


@pytest.fixture
def announcements_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness, "TRUST_NS", 10**18)


def opened(root: Path, url: str) -> SessionRegistry:
    options = TierOptions(key_prefix="live", socket_timeout=1.0, connect_timeout=1.0)
    return SessionRegistry(root, redis_url=url, redis_options=options)


async def seen_within(reg: SessionRegistry, tool_call_id: str, since: float) -> float:
    deadline = since + BOUND + SLACK
    while True:
        if tool_call_id in (await reg.resolve(KEY)).manager.processed_tool_call_ids:
            return time.monotonic() - since
        if time.monotonic() > deadline:
            pytest.fail(f"{tool_call_id} unseen {time.monotonic() - since:.1f} s after the heal")
        await asyncio.sleep(0.01)


async def subscribed(*regs: SessionRegistry) -> None:
    deadline = time.monotonic() + 10
    for reg in regs:
        manager = (await reg.resolve(KEY)).manager
        while not reg.tier.hears(manager.identity):
            assert time.monotonic() < deadline, "the listener never subscribed"
            await asyncio.sleep(0.01)
        await reg.resolve(KEY)


async def test_a_write_made_while_the_subscriber_was_killed_reaches_the_live_cache(
    tmp_path: Path, private_redis_server: RedisServerProcess, announcements_only: None
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as writer, opened(tmp_path, server.url) as reader:
        manager = (await writer.resolve(KEY)).manager
        await manager.append_entries([entry("before")])
        await subscribed(writer, reader)
        await seen_within(reader, "before", time.monotonic())
        for n in range(3):  # the kill, then a write at once, while the listener reconnects
            await subscribed(writer, reader)
            with server.client() as admin:
                killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 1
            healed = time.monotonic()
            await manager.append_entries([entry(f"during_{n}")])
            took = await seen_within(reader, f"during_{n}", healed)
            print(f"subscriber killed: seen {took:.3f} s after the kill")


async def test_redis_rolled_back_to_an_older_copy_never_serves_a_write_it_missed(
    tmp_path: Path, private_redis_server: RedisServerProcess, announcements_only: None
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as writer, opened(tmp_path, server.url) as reader:
        manager = (await writer.resolve(KEY)).manager
        await manager.append_entries([entry("old")])
        await subscribed(writer, reader)
        with server.client() as admin:
            keys = [k for k in admin.scan_iter("live*") if admin.type(k) != b"none"]
            dumps: dict[Any, Any] = {k: (admin.dump(k), admin.pttl(k)) for k in keys}
        await manager.append_entries([entry("missed")])
        await manager.mark_offload_status({"old": True})
        await seen_within(reader, "missed", time.monotonic())
        with server.client() as admin:  # the failover's new master never got those writes
            for k, (dumped, ttl) in dumps.items():
                if dumped is not None:
                    admin.restore(k, max(ttl, 0), dumped, replace=True)
        healed = time.monotonic()
        async with opened(tmp_path, server.url) as fresh:
            copy = (await fresh.resolve(KEY)).manager
            assert copy.source == "redis"
            assert "missed" in copy.processed_tool_call_ids
            assert "old" in copy.confirmed_offload_ids
        await manager.append_entries([entry("after")])
        await seen_within(reader, "after", healed)
        live = (await reader.resolve(KEY)).manager
        assert {"old", "missed", "after"} <= set(live.processed_tool_call_ids)
        assert "old" in live.confirmed_offload_ids
