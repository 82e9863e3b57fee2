"""Redis over its ``maxmemory``: an outage the registry rides through on the journals, never a
crash, and never a script that keeps writing past the limit. Real servers the tests start
(``private_redis_server``) and reconfigure with ``CONFIG SET``."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import OutOfMemoryError

from offload_registry import SessionRegistry
from offload_registry._async.open_redis import open_redis_tier
from offload_registry.changes import TierSnapshot
from offload_registry.config import TierOptions
from offload_registry.keys import resolve_identity
from offload_registry.session_state import SessionState
from offload_registry.store.breaker import CircuitBreaker
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import cli_json, journal_truth, redis_view, run_cli, unique_prefix
from session_helpers import described, entry, truth

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

KEY = "agent:main:s1"
TIMEOUT = 0.5


def opened(root: Path, url: str, prefix: str) -> SessionRegistry:
    options = TierOptions(key_prefix=prefix, socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    return SessionRegistry(root, redis_url=url, redis_options=options)


def memory(server: RedisServerProcess) -> tuple[int, int]:
    """``(used_memory, maxmemory)`` of the server."""
    client = server.client()
    try:
        info = client.info("memory")
        return int(info["used_memory"]), int(info["maxmemory"])
    finally:
        client.close()


def put_over_limit(server: RedisServerProcess, policy: str = "noeviction") -> None:
    """Set ``maxmemory`` below what the server uses now: every write that may grow memory is
    refused with ``OOM`` (noeviction, or nothing left to evict)."""
    client = server.client()
    try:
        client.config_set("maxmemory-policy", policy)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", max(used - 64 * 1024, 1024))
    finally:
        client.close()


def oom_refusals(server: RedisServerProcess) -> int:
    client = server.client()
    try:
        stats = client.info("errorstats")
        return int(stats.get("errorstat_OOM", {}).get("count", 0))
    finally:
        client.close()


def dump_all(server: RedisServerProcess, prefix: str) -> dict[bytes, bytes | None]:
    """Every key of the deployment with its serialized value (``DUMP``): equal dumps mean
    nothing was written."""
    client = server.client()
    try:
        return {key: client.dump(key) for key in client.scan_iter(match=f"{prefix}:*")}
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# start-up and single calls
# --------------------------------------------------------------------------------------------


async def test_a_registry_starting_against_a_redis_over_its_memory_limit_answers_from_journals(
    private_redis_server: RedisServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A fresh prefix: the start-up must create the marker and deployment keys, and cannot.
    put_over_limit(private_redis_server)
    prefix = unique_prefix()
    caplog.set_level(logging.WARNING, logger="offload_registry.redis")
    async with opened(tmp_path, private_redis_server.url, prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.source == "journal"
        assert await manager.append_entries([entry("toolu_1"), entry("toolu_2")]) == 2
        assert await manager.claim(["call_1", "toolu_1"]) == ["call_1"]
        await manager.mark_offload_status({"toolu_1": True})
        assert reg.tier.stats.oom >= 1  # counted
        assert described(manager) == await truth(tmp_path, KEY)
    failures = [r for r in caplog.records if "Redis call failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # logged once
    assert "OutOfMemoryError" in failures[0].getMessage()
    # Once Redis has room again, the registry uses it.
    client = private_redis_server.client()
    client.config_set("maxmemory", 0)
    client.close()
    async with opened(tmp_path, private_redis_server.url, prefix) as reg:
        first = (await reg.resolve(KEY)).manager
        assert first.source == "journal"  # a miss, rebuilt and published
        assert described(first) == await truth(tmp_path, KEY)
    async with opened(tmp_path, private_redis_server.url, prefix) as reg:
        assert (await reg.resolve(KEY)).manager.source == "redis"


def test_a_redis_that_keeps_refusing_writes_is_logged_once_not_once_per_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Over maxmemory, reads succeed (closing the breaker) and writes fail (opening it again).
    now = [0.0]
    breaker = CircuitBreaker(reset_after=1.0, clock=lambda: now[0], log_every=30.0)
    caplog.set_level(logging.WARNING, logger="offload_registry.redis")
    for _ in range(20):
        for _ in range(3):
            breaker.record_failure(OutOfMemoryError("OOM command not allowed"), "delta")
        now[0] += 1.0
        assert breaker.allow()
        assert breaker.record_success()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one failure, one recovery, in 20 s of flapping
    assert breaker.outages == 20  # every one is still counted


def test_the_cli_inspect_against_a_redis_over_its_memory_limit_answers_from_the_journal(
    private_redis_server: RedisServerProcess, tmp_path: Path
) -> None:
    journal = tmp_path / "main" / "offload-s1.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"tool_call_id":"toolu_1","offloaded":true}\n')
    put_over_limit(private_redis_server)
    done = run_cli(
        "--data-root", str(tmp_path), "--redis-url", private_redis_server.url,
        "--key-prefix", unique_prefix(), "inspect", "--json", KEY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    got = json.loads(done.stdout)
    assert got["source"] == "journal"
    assert "toolu_1" in got["confirmed"] and got["entry_count"] == 1


async def test_no_script_writes_while_redis_is_over_its_memory_limit(
    private_redis_server: RedisServerProcess, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    async with opened(tmp_path, private_redis_server.url, prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry(f"toolu_{i}") for i in range(5)])
        assert await manager.claim(["call_0"]) == ["call_0"]
        before = dump_all(private_redis_server, prefix)
        assert before  # the session is in Redis
        refused = oom_refusals(private_redis_server)
        put_over_limit(private_redis_server)
        # Every write path of the registry: a delta, a full snapshot (publish.lua begins
        # with a DEL, which Redis allows over the limit), the claim filter's commit, a lease.
        await manager.append_entries([entry(f"toolu_big_{i}_{'x' * 200}") for i in range(50)])
        await manager.mark_offload_status({"toolu_1": True})
        await reg.tier.publish(manager.identity, manager.snapshot())
        assert await manager.claim(["call_1"]) == ["call_1"]
        async with manager.lease(ttl=5.0) as lease:
            assert lease.token >= 1
        assert oom_refusals(private_redis_server) > refused  # the limit was hit
        # Nothing written past the limit (a copy may have been dropped: DEL frees memory).
        after = dump_all(private_redis_server, prefix)
        assert {k: before.get(k) for k in after} == after
        assert described(manager) == await truth(tmp_path, KEY)


def test_warm_never_fills_redis_past_its_memory_limit(
    private_redis_server: RedisServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "main").mkdir(parents=True)
    for s in range(120):
        lines = [f'{{"tool_call_id":"toolu_{s}_{e}_{"y" * 80}"}}\n' for e in range(200)]
        (root / "main" / f"offload-s{s:03d}.jsonl").write_text("".join(lines))
    client = private_redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    used = int(client.info("memory")["used_memory"])
    limit = used + 1536 * 1024  # room for some sessions, not for 120
    client.config_set("maxmemory", limit)
    prefix = unique_prefix()
    status, report = cli_json(
        capsys, "--data-root", str(root), "--redis-url", private_redis_server.url,
        "--key-prefix", prefix, "warm", "--json", "--batch", "8",
    )  # fmt: skip
    assert status == 1, report  # an operator tool says it could not load everything
    used, _ = memory(private_redis_server)
    sizes = [client.memory_usage(k) or 0 for k in client.scan_iter(match=f"{prefix}:*:state")]
    client.close()
    assert 0 < len(sizes) < 120
    # A write starts only below the limit, so at most one snapshot's size lies beyond it
    # (and what the connections' buffers hold).
    assert used <= limit + max(sizes) + 64 * 1024, (used, limit, max(sizes))


# --------------------------------------------------------------------------------------------
# a standing multi-process workload under a tiny maxmemory
# --------------------------------------------------------------------------------------------

SESSIONS = [f"agent:main:s{i:02d}" for i in range(12)]
CLAIM_POOL = 60


async def _work(root: str, url: str, prefix: str, name: str, steps: int) -> dict[str, Any]:
    rng = random.Random(name)
    appended: dict[str, list[str]] = {}
    won: dict[str, list[str]] = {}
    async with opened(Path(root), url, prefix) as reg:
        for step in range(steps):
            key = rng.choice(SESSIONS)
            manager = (await reg.resolve(key)).manager
            ids = [f"toolu_{name}_{step}_{j}_{'z' * 300}" for j in range(rng.randint(1, 4))]
            assert await manager.append_entries([entry(i) for i in ids]) == len(ids)
            appended.setdefault(key, []).extend(ids)
            pool = [f"call_{rng.randrange(CLAIM_POOL):03d}" for _ in range(3)]
            won.setdefault(key, []).extend(await manager.claim(pool))
            if rng.random() < 0.2:
                await manager.mark_offload_status({rng.choice(ids): True})
        oom = reg.tier.stats.oom
    return {"appended": appended, "won": won, "oom": oom}


def _worker(root: str, url: str, prefix: str, name: str, steps: int, queue: Any) -> None:
    queue.put(asyncio.run(_work(root, url, prefix, name, steps)))


@pytest.mark.parametrize("policy", ["noeviction", "allkeys-lru", "allkeys-random"])
def test_workers_under_a_tiny_maxmemory_lose_nothing_and_never_answer_wrong(
    private_redis_server: RedisServerProcess, tmp_path: Path, policy: str
) -> None:
    url, prefix = private_redis_server.url, unique_prefix()
    client = private_redis_server.client()
    client.config_set("maxmemory-policy", policy)
    # Room for the workers' connections and a few sessions: the limit is reached early.
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 400 * 1024)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(tmp_path), url, prefix, f"w{n}", 80, queue))
        for n in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=100) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    stats = client.info("stats")
    client.close()
    if policy == "noeviction":
        assert oom_refusals(private_redis_server) > 0
        assert sum(r["oom"] for r in results) > 0
    else:
        assert int(stats["evicted_keys"]) > 0
    # No id won twice, across every worker process.
    for key in SESSIONS:
        wins = Counter(i for r in results for i in r["won"].get(key, []))
        assert all(count == 1 for count in wins.values()), (key, wins.most_common(3))
    # Nothing acknowledged is lost, and Redis-backed readers answer exactly the journals.
    expected = journal_truth(tmp_path, SESSIONS)
    for key in SESSIONS:
        acknowledged = {i for r in results for i in r["appended"].get(key, [])}
        acknowledged |= {i for r in results for i in r["won"].get(key, [])}
        assert acknowledged <= set(expected[key]["processed"]), key
    client = private_redis_server.client()
    client.config_set("maxmemory", 0)  # the reader may publish what it rebuilds
    client.close()
    for _ in range(2):  # once rebuilding or catching up, once from what Redis then holds
        view = redis_view(tmp_path, url, prefix, SESSIONS)
        for key in SESSIONS:
            got = {k: v for k, v in view[key].items() if k != "source"}
            assert got == expected[key], key


async def test_a_server_without_script_flags_gets_the_scripts_without_their_shebang(
    tmp_path: Path,
) -> None:
    # fakeredis stands in for Redis 6: it cannot compile a "#!lua" line either.
    tier = open_redis_tier(
        tmp_path,
        url="memory://",
        client=None,
        options=TierOptions(key_prefix=unique_prefix()),
        read_only=False,
    )
    tier._flagged_scripts = True  # as for a real server, until it refuses the shebang
    tier._register_scripts(tier.client)
    try:
        await tier.start()
        assert not tier._flagged_scripts
        identity = resolve_identity(KEY)
        await tier.publish(identity, TierSnapshot(SessionState(), {"call_1"}, None))
        assert tier.stats.snapshots_published == 1 and tier.stats.errors == 0
        stored = await tier.load(identity)
        assert stored is not None and stored.claimed == {"call_1"}
    finally:
        await tier.close()
