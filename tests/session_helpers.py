"""Small builders and views shared by the test modules (a plain module, imported by name)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry

PATIENCE = 15.0
"""Seconds a test waits for a condition it asserts: generous, since the machine may be busy
(a condition that holds returns at once; only a broken guarantee waits this long)."""


def entry(tool_call_id: str, **extra: Any) -> dict[str, Any]:
    """A journal entry as the seed writes one, with any extra fields (``offloaded=True``...)."""
    return {"tool_call_id": tool_call_id, "summary": f"result of {tool_call_id}", **extra}


def described(manager: Any) -> dict[str, Any]:
    """What must agree between two copies of a session: its id sets and entry count."""
    return {
        "confirmed": sorted(manager.confirmed_offload_ids),
        "deleted": sorted(manager.deleted_offload_ids),
        "processed": sorted(manager.processed_tool_call_ids),
        "entry_count": manager.entry_count,
    }


async def truth(root: Path, key: str) -> dict[str, Any]:
    """The session as a fresh journal-only, read-only registry reads it (writes nothing)."""
    async with SessionRegistry(root, read_only=True) as journal_only:
        return described((await journal_only.resolve(key)).manager)


async def until(what: str, check: Callable[[], Any], seconds: float = PATIENCE) -> float:
    """Poll ``check()`` (plain or async) until it is truthy; the seconds it took. Fails the
    test naming ``what`` past ``seconds``: tests wait for what they assert, never for a time."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.005)


async def listening(reg: SessionRegistry, key: str) -> Any:
    """Resolve ``key`` (the registry's first watched session) and return its manager once the
    registry's invalidation listener is subscribed, every message published so far has been
    handled, and the copy is revalidated (not stale).

    The subscription announces itself by marking every watched copy stale once (messages sent
    before it were missed); the registry's own announcement of the session it just loaded may
    still be on its way, so a marker message is sent and awaited after it."""
    manager = (await reg.resolve(key)).manager
    # Not ``stale`` alone: a copy loaded before the subscription is confirmed is marked stale
    # at once (nobody could tell it of a write), and a marker sent then would be missed.
    await until(
        f"{key}: the invalidation listener subscribed",
        lambda: reg.tier.hears(manager.identity) and manager.stale,
    )
    await messages_delivered(reg)
    assert (await reg.resolve(key)).manager is manager
    assert not manager.stale
    return manager


async def messages_delivered(reg: SessionRegistry) -> None:
    """Wait until every invalidation published so far on the deployment's channel has reached
    ``reg``'s listener (not for Redis Cluster's shard channels).

    We publish one well-formed message of our own (another origin, a session nobody watches)
    and wait until it is counted: messages on one channel arrive in order, so any sent before
    it have been handled too. (How a test asserts that something did *not* happen, without a
    sleep.) It adds exactly one to ``reg.tier.invalidations``."""
    tier: Any = reg.tier
    before = tier.invalidations
    await tier._client.publish(tier.keyspace.channel(), f"marker{uuid.uuid4().hex} test w 1")
    await until("the marker's invalidation delivered", lambda: tier.invalidations > before)


def wait_until(what: str, check: Callable[[], Any], seconds: float = PATIENCE) -> float:
    """The blocking twin of ``until``, for tests of the sync API."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.005)
    return time.monotonic() - started
