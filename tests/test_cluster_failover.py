"""Redis Cluster failures under a running workload: a master killed, a stale replica forced to
take over, a slot moved. Each test owns its cluster (``redis_cluster``) and prints its figures
(run with ``-s`` to see them).

What must hold, whatever Redis does: every acknowledged append and claim is in the journal and
seen by a fresh registry; no claim id is won twice (the claims record on disk, written under
the journal's lock, is the commit point: Redis is only a cache); Redis agrees with the journal
after the next resolve; and the workers ride through without a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cluster_fixtures import LocalCluster, command, redis_cluster, wait_for
from failover_workload import Window, Worker, check_after, entry, report, won_twice
from offload_registry import SessionRegistry
from offload_registry.keys import resolve_identity
from offload_registry.store.keyspace import Keyspace

__all__ = ["redis_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

SESSIONS = [f"agent:main:f{i}" for i in range(4)]
PREFIX = "fo"


def opened(root: Path, cluster: LocalCluster) -> SessionRegistry:
    return SessionRegistry(root, redis_url=cluster.url, key_prefix=PREFIX)


def slot_of_session(root: Path, cluster: LocalCluster, key: str) -> int:
    keys = Keyspace.for_data_root(PREFIX, root).session_for(resolve_identity(key, None))
    return cluster.slot_of(keys.state)


def published(reg: SessionRegistry) -> int:
    stats: Any = reg.tier.stats  # type: ignore[attr-defined]
    return int(stats.deltas_published + stats.snapshots_published)


async def run_workers(workers: list[Worker], window: Window) -> tuple[asyncio.Event, list[Any]]:
    stop = asyncio.Event()
    return stop, [asyncio.create_task(worker.run(stop, window)) for worker in workers]


async def test_a_master_killed_mid_workload_is_ridden_through_without_losing_anything(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    slot = slot_of_session(tmp_path, redis_cluster, SESSIONS[0])
    victim = redis_cluster.master_of_slot(slot)
    async with opened(tmp_path, redis_cluster) as a, opened(tmp_path, redis_cluster) as b:
        workers = [Worker("wa", a, SESSIONS, 1), Worker("wb", b, SESSIONS, 2)]
        window = Window()
        stop, tasks = await run_workers(workers, window)
        await asyncio.sleep(1.0)
        window.start()
        victim.kill()
        promoted = await asyncio.to_thread(redis_cluster.wait_master_of_slot_is_not, slot, victim)
        await asyncio.to_thread(redis_cluster.wait_ok)
        window.stop()
        before = published(a) + published(b)
        await asyncio.sleep(2.0)  # the workers go on against the new master
        stop.set()
        await asyncio.gather(*tasks)
        after = published(a) + published(b)
    assert [e for w in workers for e in w.errors] == []
    assert after > before, "writes never reached Redis again after the failover"
    assert redis_cluster.master_of_slot(slot) is promoted
    figures = await check_after(tmp_path, redis_cluster.url, PREFIX, workers, SESSIONS)
    assert won_twice(workers) == []
    assert figures["window_appends_found"] == figures["window_appends"]
    report("cluster: master killed mid-workload", window, workers, figures)


async def test_claims_a_stale_replica_missed_are_never_won_again_after_it_takes_over(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    key = SESSIONS[0]
    slot = slot_of_session(tmp_path, redis_cluster, key)
    master = redis_cluster.master_of_slot(slot)
    replica = redis_cluster.replicas_of(master)[0]
    hard = [f"hard_{i:02d}" for i in range(40)]
    async with opened(tmp_path, redis_cluster) as first:
        manager = (await first.resolve(key)).manager
        await manager.append_entries([entry("before_pause")])
        assert await manager.claim(["early"]) == ["early"]
        assert command(master, "WAIT", 1, 2000) == 1  # the replica has all of that
        replica.pause()
        # Cut the replication link too: bytes already in the frozen replica's socket buffer
        # would otherwise reach it on SIGCONT, and it could not miss anything.
        assert command(master, "CLIENT", "KILL", "TYPE", "replica") >= 1
        assert await manager.claim(hard) == hard  # acknowledged by the master alone
        await manager.append_entries([entry("during_pause")])
    master.kill()
    replica.resume()
    await asyncio.to_thread(
        wait_for,
        "the stale replica to take over",
        lambda: (
            command(replica, "CLUSTER", "FAILOVER", "TAKEOVER") == "OK"
            and redis_cluster.role(replica) == "master"
        ),
    )
    await asyncio.to_thread(
        wait_for, "the slot on the replica", lambda: redis_cluster.master_of_slot(slot) is replica
    )
    await asyncio.to_thread(redis_cluster.wait_ok)
    async with opened(tmp_path, redis_cluster) as probe:
        stored = await probe.tier.load(resolve_identity(key, None))  # type: ignore[attr-defined]
    missing = [i for i in hard if stored is None or i not in stored.claimed]
    assert missing, "the scenario needs a new master that missed acknowledged claims"
    async with opened(tmp_path, redis_cluster) as b, opened(tmp_path, redis_cluster) as c:
        mb, mc = (await b.resolve(key)).manager, (await c.resolve(key)).manager
        again = await asyncio.gather(mb.claim([*hard, "new_1"]), mc.claim([*hard, "new_1"]))
    assert sorted(again[0] + again[1]) == ["new_1"]  # no hard id won again, new_1 won once
    await check_after(tmp_path, redis_cluster.url, PREFIX, [], [key])  # Redis caught up too
    print(
        "== cluster: stale replica forced to take over (CLUSTER FAILOVER TAKEOVER)\n"
        f"   claims acknowledged by the old master only: {len(hard)}\n"
        f"   of them missing from the new master's copy: {len(missing)}\n"
        f"   of them won again afterwards: {len([i for i in again[0] + again[1] if i in hard])}"
    )


async def test_a_sessions_slot_moved_while_a_worker_runs_keeps_working(
    tmp_path: Path, redis_cluster: LocalCluster
) -> None:
    key = SESSIONS[0]
    slot = slot_of_session(tmp_path, redis_cluster, key)
    source = redis_cluster.master_of_slot(slot)
    masters = [n for n in redis_cluster.running if redis_cluster.role(n) == "master"]
    target = next(n for n in masters if n is not source)
    async with opened(tmp_path, redis_cluster) as a, opened(tmp_path, redis_cluster) as reader:
        cached = (await reader.resolve(key)).manager
        workers = [Worker("wa", a, [key], 1)]
        window = Window()
        stop, tasks = await run_workers(workers, window)
        await asyncio.sleep(0.5)
        window.start()
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, target, 0.3)
        window.stop()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        assert redis_cluster.master_of_slot(slot) is target
        # The reader's listener followed the slot: a new write still invalidates its copy.
        await asyncio.sleep(0.5)
        await reader.resolve(key)
        heard = reader.tier.invalidations  # type: ignore[attr-defined]
        await (await a.resolve(key)).manager.append_entries([entry("after_move")])
        await asyncio.to_thread(
            wait_for,
            "an invalidation from the slot's new master",
            lambda: reader.tier.invalidations > heard,  # type: ignore[attr-defined]
            5.0,
        )
        assert cached.stale
        assert "after_move" in (await reader.resolve(key)).manager.processed_tool_call_ids
    assert [e for w in workers for e in w.errors] == []
    figures = await check_after(tmp_path, redis_cluster.url, PREFIX, workers, [key])
    assert figures["window_appends_found"] == figures["window_appends"]
    report("cluster: a session's slot resharded mid-workload", window, workers, figures)
