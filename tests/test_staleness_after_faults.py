"""Every acknowledged write reaches every live near cache within a bound once Redis answers.

Whatever path a write's announcement took (refused because another worker republished the
session under a new epoch, timed out, lost with a frozen or restarted server), a live second
registry's next resolve must show it within ``STALENESS_BOUND_SECONDS`` of the fault healing
(the README's *Consistency model* states the bound). Each test starts its own redis-server,
measures from the heal, and allows ``SLACK`` on top for a busy two-core machine.

The fault tests turn the trust expiry off (``TRUST_SECONDS``, the backstop that revalidates
any copy unchecked for a second): they prove that the announcement itself arrives. The last
test proves the backstop alone.
"""

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
TIMEOUT = 1.0  # the client's socket timeout, as in the issue
STALENESS_BOUND_SECONDS = 1.0  # the README's bound
SLACK = 2.0  # scheduling on a busy machine; the figure itself is printed
PAUSE_MS = 1500

pytestmark = pytest.mark.redis


@pytest.fixture
def announcements_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached copies are revalidated only when an invalidation (or a listener gap) says so."""
    monkeypatch.setattr(freshness, "TRUST_NS", 10**18)


def opened(root: Path, url: str) -> SessionRegistry:
    options = TierOptions(key_prefix="live", socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    return SessionRegistry(root, redis_url=url, redis_options=options)


async def seen_after(reg: SessionRegistry, tool_call_id: str, since: float) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``) until ``reg``'s resolve shows the id;
    fails once the bound plus slack has passed without it."""
    deadline = since + STALENESS_BOUND_SECONDS + SLACK
    while True:
        if tool_call_id in (await reg.resolve(KEY)).manager.processed_tool_call_ids:
            return time.monotonic() - since
        if time.monotonic() > deadline:
            pytest.fail(
                f"{tool_call_id} acknowledged, yet a live registry's resolve still missed it "
                f"{time.monotonic() - since:.1f} s after the fault healed"
            )
        await asyncio.sleep(0.01)


async def settled(reader: SessionRegistry, writer: SessionRegistry) -> None:
    """Both hold the session, both listeners are subscribed (the subscription's own
    revalidation done), and the reader has seen one write by the writer."""
    copy = (await reader.resolve(KEY)).manager
    manager = (await writer.resolve(KEY)).manager
    deadline = time.monotonic() + 10
    while not (reader.tier.hears(copy.identity) and writer.tier.hears(manager.identity)):
        assert time.monotonic() < deadline, "the listeners never subscribed"
        await asyncio.sleep(0.01)
    await reader.resolve(KEY)
    await manager.append_entries([entry("before_1")])
    await seen_after(reader, "before_1", time.monotonic())
    await reader.resolve(KEY)
    assert not copy.stale


async def republished_and_heard(root: Path, url: str, reader: SessionRegistry) -> None:
    """A third, fresh worker republishes the session under the server's new epoch and writes
    to it until the reader's listener hears it (the reader is subscribed again and has
    revalidated its copy since)."""
    heard = reader.tier.invalidations  # type: ignore[attr-defined]
    async with opened(root, url) as other:
        manager = (await other.resolve(KEY)).manager
        deadline = time.monotonic() + 10
        n = 0
        while reader.tier.invalidations == heard:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the reader never subscribed again"
            n += 1
            await manager.append_entries([entry(f"probe_{n}")])
            await asyncio.sleep(0.05)
    await reader.resolve(KEY)  # revalidates the copy once after the probe's message


@pytest.mark.parametrize("fault", ["restart-empty", "flushall"])
async def test_a_write_refused_under_a_new_epoch_still_reaches_a_live_cache(
    tmp_path: Path, private_redis_server: RedisServerProcess, fault: str, announcements_only: None
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as writer, opened(tmp_path, server.url) as reader:
        await settled(reader, writer)
        if fault == "restart-empty":
            server.restart()
        else:
            with server.client() as admin:
                admin.flushall()
        healed = time.monotonic()
        await republished_and_heard(tmp_path, server.url, reader)
        # The writer still holds the old epoch: its delta finds no snapshot of that epoch,
        # and its if-absent publish is refused (the session is already there).
        await (await writer.resolve(KEY)).manager.append_entries([entry("after_1")])
        acknowledged = time.monotonic()
        took = await seen_after(reader, "after_1", acknowledged)
        since_heal = acknowledged - healed
        print(f"{fault}: seen {took:.3f} s after the write ({since_heal:.2f} s after the heal)")


async def test_a_write_whose_announcement_timed_out_reaches_a_live_cache_after_the_pause(
    tmp_path: Path, private_redis_server: RedisServerProcess, announcements_only: None
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as writer, opened(tmp_path, server.url) as reader:
        await settled(reader, writer)
        manager = (await writer.resolve(KEY)).manager
        with server.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
            paused = time.monotonic()
        await manager.append_entries([entry("during_1")])  # its delta times out (one failure)
        assert writer.tier.breaker.state == "closed"  # type: ignore[attr-defined]
        healed = paused + PAUSE_MS / 1000
        took = await seen_after(reader, "during_1", healed)
        print(f"CLIENT PAUSE: seen {took:.3f} s after the pause ended")


async def test_a_write_made_while_redis_was_frozen_reaches_a_live_cache_after_sigcont(
    tmp_path: Path, private_redis_server: RedisServerProcess, announcements_only: None
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as writer, opened(tmp_path, server.url) as reader:
        await settled(reader, writer)
        manager = (await writer.resolve(KEY)).manager
        server.pause()
        try:
            await manager.append_entries([entry("frozen_1")])
        finally:
            server.resume()
        healed = time.monotonic()
        took = await seen_after(reader, "frozen_1", healed)
        print(f"SIGSTOP: seen {took:.3f} s after SIGCONT")


async def test_copies_are_not_trusted_while_the_listener_cannot_hear(
    tmp_path: Path, private_redis_server: RedisServerProcess, announcements_only: None
) -> None:
    """While a registry cannot hear invalidations (Redis down, the listener retrying), every
    resolve revalidates: each write by a process without Redis is seen at once, throughout
    the outage, not only when the listener's next retry happens to mark copies stale."""
    server = private_redis_server
    async with opened(tmp_path, server.url) as reader, SessionRegistry(tmp_path) as offline:
        await reader.resolve(KEY)
        server.kill()
        reader.evict(KEY)
        await reader.resolve(KEY)  # loaded from the journal with the listener down
        writer = (await offline.resolve(KEY)).manager
        ends = time.monotonic() + 4.0  # past several of the listener's retries (backoff to 2 s)
        n = 0
        while time.monotonic() < ends:
            n += 1
            await writer.append_entries([entry(f"offline_{n}")])
            got: Any = (await reader.resolve(KEY)).manager.processed_tool_call_ids
            assert f"offline_{n}" in got, (
                f"write {n} unseen {4.0 - (ends - time.monotonic()):.1f} s into the outage"
            )
            await asyncio.sleep(0.05)


async def test_a_write_no_invalidation_announces_is_seen_within_the_bound(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    """A writer without Redis (the seed, or a worker killed before it could announce a write)
    sends no invalidation at all: a live cached copy still shows its write within the bound,
    with the subscription up and nothing marking the copy stale."""
    server = private_redis_server
    async with opened(tmp_path, server.url) as reader, SessionRegistry(tmp_path) as offline:
        manager = (await reader.resolve(KEY)).manager
        tier: Any = reader.tier
        deadline = time.monotonic() + 10
        while not tier.hears(manager.identity):  # the subscription is confirmed
            assert time.monotonic() < deadline, "the listener never subscribed"
            await asyncio.sleep(0.01)
        await reader.resolve(KEY)  # the subscription's own revalidation
        await (await offline.resolve(KEY)).manager.append_entries([entry("unannounced_1")])
        took = await seen_after(reader, "unannounced_1", time.monotonic())
        assert tier.hears(manager.identity)
        print(f"no announcement: seen {took:.3f} s after the write")
