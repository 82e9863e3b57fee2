"""The registry behind Redis Sentinel (1 master, 1 replica, 3 sentinels, started by the tests):
``redis+sentinel://`` works, and a ``SENTINEL FAILOVER`` or a killed master is followed by the
workers and by the invalidation listener without losing an acknowledged write."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path

import pytest

from cluster_fixtures import LocalSentinel, command, redis_sentinel
from failover_workload import Window, Worker, check_after, entry, report, won_twice
from offload_registry import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from session_helpers import PATIENCE, listening, until

__all__ = ["redis_sentinel"]
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

SESSIONS = [f"agent:main:x{i}" for i in range(3)]
PREFIX = "se"
STALENESS_BOUND_SECONDS = 1.0  # the README's bound after a fault heals
SLACK = 2.0  # scheduling on a busy machine


def opened(root: Path, deployment: LocalSentinel) -> SessionRegistry:
    return SessionRegistry(root, redis_url=deployment.url, key_prefix=PREFIX)


async def test_a_sentinel_url_shares_sessions_and_invalidations(
    tmp_path: Path, redis_sentinel: LocalSentinel
) -> None:
    async with (
        opened(tmp_path, redis_sentinel) as writer,
        opened(tmp_path, redis_sentinel) as reader,
    ):
        cached = await listening(reader, SESSIONS[0])
        manager = (await writer.resolve(SESSIONS[0])).manager
        await manager.append_entries([entry("t1")])
        assert await manager.claim(["c1"]) == ["c1"]
        await until("the invalidation", lambda: cached.stale)
        assert "t1" in (await reader.resolve(SESSIONS[0])).manager.processed_tool_call_ids
    async with opened(tmp_path, redis_sentinel) as fresh:
        assert (await fresh.resolve(SESSIONS[0])).manager.source == "redis"


async def failover_under_workload(
    root: Path, deployment: LocalSentinel, title: str, fail: str
) -> None:
    old = deployment.master()
    async with opened(root, deployment) as a, opened(root, deployment) as b:
        cached = (await b.resolve(SESSIONS[0])).manager
        for key in SESSIONS[1:]:  # the live reader holds every session
            await b.resolve(key)
        workers = [Worker("wa", a, SESSIONS, 1)]
        window = Window()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop, window)) for worker in workers]
        await asyncio.sleep(1.0)
        window.start()
        if fail == "kill":
            old.kill()
        else:
            command(deployment.sentinels[0], "SENTINEL", "FAILOVER", deployment.service)
        new: RedisServerProcess = await asyncio.to_thread(deployment.wait_new_master, old)
        healed = time.monotonic()
        window.stop()
        # The live view: the reader's next resolves show every write acknowledged before the
        # new master took over, within the bound (writes announced to the old master, lost
        # in the failover, or refused READONLY alike).
        acknowledged = {k: set(workers[0].appended.get(k, [])) | set(workers[0].won.get(k, []))
                        for k in SESSIONS}  # fmt: skip
        for key in SESSIONS:
            while not acknowledged[key] <= set(
                (await b.resolve(key)).manager.processed_tool_call_ids
            ):
                late = time.monotonic() - healed
                assert late < STALENESS_BOUND_SECONDS + SLACK, (
                    f"{key}: the live reader missed acknowledged writes {late:.1f} s after "
                    "the new master took over"
                )
                await asyncio.sleep(0.01)
        print(f"{title}: live reader current {time.monotonic() - healed:.3f} s after the heal")
        await asyncio.sleep(2.0)  # ride on against the new master
        stop.set()
        await asyncio.gather(*tasks)
        assert [e for w in workers for e in w.errors] == []
        # The reader's listener follows the new master: a new write still reaches it. The
        # writer may itself still be finding the new master (its Redis step fails over to the
        # journal meanwhile), so it writes again every 0.1 s until the reader hears one.
        await b.resolve(SESSIONS[0])
        heard = b.tier.invalidations  # type: ignore[attr-defined]
        writer = (await a.resolve(SESSIONS[0])).manager
        for n in itertools.count():
            await writer.append_entries([entry(f"after{n}")])
            with contextlib.suppress(pytest.fail.Exception):
                await until(
                    "an invalidation from the new master",
                    lambda: b.tier.invalidations > heard,  # type: ignore[attr-defined]
                    seconds=0.1,
                )
                break
            assert n < PATIENCE / 0.1, "no invalidation from the new master"
        assert cached.stale
    assert deployment.master() is new
    figures = await check_after(root, deployment.url, PREFIX, workers, SESSIONS)
    assert figures["window_appends_found"] == figures["window_appends"]
    assert won_twice(workers) == []
    report(title, window, workers, figures)


async def test_a_sentinel_failover_is_followed_without_losing_acknowledged_writes(
    tmp_path: Path, redis_sentinel: LocalSentinel
) -> None:
    await failover_under_workload(tmp_path, redis_sentinel, "sentinel: SENTINEL FAILOVER", "cmd")


async def test_a_killed_master_is_replaced_and_followed_without_losing_acknowledged_writes(
    tmp_path: Path, redis_sentinel: LocalSentinel
) -> None:
    await failover_under_workload(tmp_path, redis_sentinel, "sentinel: master killed", "kill")
