"""Network faults between a worker and Redis, made by a loopback proxy (``tcp_proxy.py``).

The worker under test reaches its own ``private_redis_server`` through a :class:`TcpProxy`
(small timeouts); a *rival* worker on the same data root talks to the server directly, as
the workers a partition does not touch would. The proxy adds latency, black-holes traffic
(half-open connections), or resets connections, on its own or in the middle of one script
call. The truth every answer is compared with is a journal-only, read-only registry.

Figures: run with ``-s`` to print each test's per-call times and recovery times.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from tcp_proxy import TcpProxy
from test_redis_faults import (
    KEY,
    SESSIONS,
    TIMEOUT,
    Workload,
    described,
    entry,
    opened,
    stored_is_exact,
    truth,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

WATCHED = "agent:review:watched"
"""A session the worker only reads and the rival writes: what the worker sees of it comes
from its cached copy, so only invalidations (or their loss) decide how fresh it is."""
LATENCY = 2 * TIMEOUT
SLACK = 0.25
"""Scheduling slack over a computed bound (2 shared cores, a busy CI machine)."""


def report(name: str, **figures: Any) -> None:
    shown = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[network-faults] {name}: {shown}")


def id_counts(path: Path) -> Counter[str]:
    """How often each ``tool_call_id`` occurs in a JSONL file (journal or claims record)."""
    if not path.exists():
        return Counter()
    lines = path.read_text(encoding="utf-8").splitlines()
    return Counter(json.loads(line)["tool_call_id"] for line in lines if line.strip())


async def timed_steps(workload: Workload, reg: SessionRegistry, steps: int) -> list[float]:
    durations = []
    for _ in range(steps):
        started = time.monotonic()
        await workload.step(reg)
        durations.append(time.monotonic() - started)
    return durations


async def until(what: str, check: Any, seconds: float = 8.0, every: float = 0.02) -> float:
    """Await ``check()`` until truthy; returns the seconds it took (fails past ``seconds``)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        await asyncio.sleep(every)
    return time.monotonic() - started


async def sees(reg: SessionRegistry, key: str, tool_call_id: str) -> bool:
    return tool_call_id in (await reg.resolve(key)).manager.processed_tool_call_ids


async def invalidations_flow(worker: SessionRegistry, rival: SessionRegistry, tag: str) -> float:
    """Seconds until one of the rival's writes to WATCHED reaches the worker as an
    invalidation (the rival writes every 50 ms until one does), then the worker sees it."""
    before = worker.tier.invalidations  # type: ignore[attr-defined]
    manager = (await rival.resolve(WATCHED)).manager
    started, n = time.monotonic(), 0

    async def arrived() -> bool:
        nonlocal n
        n += 1
        await manager.append_entries([entry(f"{tag}_{n}")])
        await asyncio.sleep(0.05)
        return bool(worker.tier.invalidations > before)  # type: ignore[attr-defined]

    await until("an invalidation from the rival", arrived)
    assert await sees(worker, WATCHED, f"{tag}_{n}")
    return time.monotonic() - started


async def check_redis_agrees_with_the_journals(root: Path, url: str, keys: Any) -> None:
    """A fresh registry on Redis answers exactly the journals, and so does Redis alone."""
    async with opened(root, url) as reader:
        for key in keys:
            want = await truth(root, key)
            assert described((await reader.resolve(key)).manager) == want, key
            assert await stored_is_exact(reader, key, want), key


# --------------------------------------------------------------------------------------------
# latency
# --------------------------------------------------------------------------------------------


async def test_latency_above_the_timeout_costs_a_call_one_timeout_and_heals_without_restart(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server, workload = private_redis_server, Workload(seed=5150)
    async with (
        TcpProxy(server.host, server.port) as proxy,
        opened(tmp_path, proxy.url()) as worker,
        opened(tmp_path, server.url) as rival,
    ):
        await workload.run(worker, 12)
        await (await rival.resolve(WATCHED)).manager.append_entries([entry("w0")])
        await worker.resolve(WATCHED)
        await invalidations_flow(worker, rival, "before")

        proxy.set_latency(down=LATENCY)  # every reply arrives after the client gave up
        durations = await timed_steps(workload, worker, 16)
        breaker = worker.tier.breaker  # type: ignore[attr-defined]
        assert breaker.state != "closed" and breaker.outages == 1
        # A call waits at most for two Redis steps (the claim filter, then the delta) before
        # the breaker opens; once open, only the half-open probe pays a timeout.
        assert max(durations) < 2 * TIMEOUT + SLACK, durations
        for key in SESSIONS:  # the journals hold every acknowledged write meanwhile
            assert described((await worker.resolve(key)).manager) == await truth(tmp_path, key)

        proxy.resume()
        ended = time.monotonic()
        while breaker.state != "closed":  # recovery through the worker's own calls
            assert time.monotonic() - ended < 5, "the breaker never closed"
            await workload.step(worker)
            await asyncio.sleep(0.02)
        breaker_closed = time.monotonic() - ended
        flowing = await invalidations_flow(worker, rival, "after")
        await rival.resolve(KEY)  # refilled by a reader after the reconciliation
        worker.evict(KEY)
        assert (await worker.resolve(KEY)).manager.source == "redis"
        await workload.run(worker, 10)
        report(
            "latency",
            latency=LATENCY,
            timeout=TIMEOUT,
            median_call=sorted(durations)[len(durations) // 2],
            slowest_call=max(durations),
            breaker_closed_after=breaker_closed,
            invalidations_after=flowing,
        )
    await workload.check_nothing_is_missing(tmp_path, server.url)
    await check_redis_agrees_with_the_journals(tmp_path, server.url, [*SESSIONS, WATCHED])


# --------------------------------------------------------------------------------------------
# a connection reset in the middle of a script call
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("forward", [True, False], ids=["reply-lost", "request-lost"])
@pytest.mark.parametrize("op", ["append", "claim-filter", "claim-commit"])
async def test_a_reset_in_the_middle_of_a_script_call_loses_and_duplicates_nothing(
    tmp_path: Path, private_redis_server: RedisServerProcess, op: str, forward: bool
) -> None:
    server = private_redis_server
    async with (
        TcpProxy(server.host, server.port) as proxy,
        opened(tmp_path, proxy.url()) as worker,
        opened(tmp_path, server.url) as rival,
    ):
        manager = (await worker.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1"), entry("toolu_2")])
        assert await manager.claim(["call_0"]) == ["call_0"]
        tier: Any = worker.tier
        if op == "append":
            fired = proxy.reset_when(tier._delta.sha.encode(), forward=forward)
            assert await manager.append_entries([entry("toolu_3"), entry("toolu_2")]) == 1
            assert fired.is_set(), "the reset did not hit the script call"
            assert await manager.claim(["call_1", "call_2", "toolu_1"]) == ["call_1", "call_2"]
        else:
            phase = op.split("-")[1].encode()
            fired = proxy.reset_when(tier._claim.sha.encode(), phase, forward=forward)
            assert await manager.claim(["call_1", "call_2", "toolu_1"]) == ["call_1", "call_2"]
            assert fired.is_set(), "the reset did not hit the script call"
            assert await manager.append_entries([entry("toolu_3"), entry("toolu_2")]) == 1
        assert tier.breaker.state == "closed"  # one failure: no outage

        rivals = (await rival.resolve(KEY)).manager
        assert await rivals.claim(["call_0", "call_1", "call_2", "call_3"]) == ["call_3"]
        assert await manager.claim(["call_1", "call_3", "call_4"]) == ["call_4"]
        await rivals.append_entries([entry("toolu_3"), entry("toolu_4")])
        await manager.append_entries([entry("toolu_5")])
        assert await sees(worker, KEY, "toolu_4") or manager.stale is False

    journal = id_counts(manager.journal_path)
    claims = id_counts(manager.journal_path.with_suffix(".claims"))
    assert sorted(journal) == [f"toolu_{i}" for i in range(1, 6)]
    assert sorted(claims) == [f"call_{i}" for i in range(5)]
    assert max(journal.values()) == max(claims.values()) == 1  # no line written twice
    await check_redis_agrees_with_the_journals(tmp_path, server.url, [KEY])


# --------------------------------------------------------------------------------------------
# half-open connections
# --------------------------------------------------------------------------------------------


async def test_a_half_open_link_times_out_opens_the_breaker_and_the_listener_resubscribes(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server, workload = private_redis_server, Workload(seed=404)
    async with (
        TcpProxy(server.host, server.port) as proxy,
        opened(tmp_path, proxy.url()) as worker,
        opened(tmp_path, server.url) as rival,
    ):
        await workload.run(worker, 12)
        await (await rival.resolve(WATCHED)).manager.append_entries([entry("w0")])
        await worker.resolve(WATCHED)
        await invalidations_flow(worker, rival, "before")

        proxy.blackhole()  # every connection, the subscription's too, goes silent
        durations = await timed_steps(workload, worker, 16)
        breaker = worker.tier.breaker  # type: ignore[attr-defined]
        assert breaker.state != "closed"
        assert max(durations) < 2 * TIMEOUT + SLACK, durations
        rivals = (await rival.resolve(WATCHED)).manager
        await rivals.append_entries([entry("during")])  # its invalidation never gets through
        assert described((await rival.resolve(WATCHED)).manager) == await truth(tmp_path, WATCHED)

        proxy.resume()  # new connections work; the black-holed ones stay dead
        ended = time.monotonic()
        # The worker's cached copy of WATCHED must be revalidated: its listener has to notice
        # that its connection is dead (nothing will ever close it) and subscribe again.
        revalidated = await until(
            "the worker sees the write made during the black hole",
            lambda: sees(worker, WATCHED, "during"),
        )
        while breaker.state != "closed":
            assert time.monotonic() - ended < 5, "the breaker never closed"
            await workload.step(worker)
            await asyncio.sleep(0.02)
        breaker_closed = time.monotonic() - ended
        flowing = await invalidations_flow(worker, rival, "after")
        await workload.run(worker, 10)
        report(
            "half-open",
            timeout=TIMEOUT,
            median_call=sorted(durations)[len(durations) // 2],
            slowest_call=max(durations),
            copy_revalidated_after=revalidated,
            breaker_closed_after=breaker_closed,
            invalidations_after=flowing,
        )
    await workload.check_nothing_is_missing(tmp_path, server.url)
    await check_redis_agrees_with_the_journals(tmp_path, server.url, [*SESSIONS, WATCHED])


async def test_a_copy_is_revalidated_once_the_server_confirmed_the_subscription(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    """Regression: the plain listener marked every copy stale as soon as it had *sent*
    SUBSCRIBE; a copy revalidated before the server processed it, then written by another
    worker in that window, stayed stale for good (the write's invalidation went nowhere)."""
    server = private_redis_server
    async with (
        TcpProxy(server.host, server.port) as proxy,
        opened(tmp_path, proxy.url()) as worker,
        opened(tmp_path, server.url) as rival,
    ):
        rivals = (await rival.resolve(WATCHED)).manager
        await rivals.append_entries([entry("w0")])
        proxy.delay_when(b"SUBSCRIBE", 1.0)
        sent = proxy.seen(b"SUBSCRIBE")
        await worker.resolve(WATCHED)  # the listener starts and subscribes
        await asyncio.wait_for(sent.wait(), 5)
        await worker.resolve(WATCHED)  # revalidated if it was marked stale already
        await rivals.append_entries([entry("raced")])  # before the server has our SUBSCRIBE
        await until("the worker sees the write", lambda: sees(worker, WATCHED, "raced"), 3)
