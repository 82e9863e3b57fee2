#!/usr/bin/env python3
"""Cold resolve as a live worker sees it, against the floor of one ``PING`` round trip.

A *live worker* is a registry used the way a service uses it: started (connections open),
its invalidation listener subscribed (it resolved another agent's session first and waited
for the subscription), and then, per timed run, the session is dropped from the near cache
only (``registry.evict(key)``, public API) and resolved again. Nothing else is skipped: the
resolve reads Redis, compares the snapshot's watermark with the journal (``fstat`` and a
64-byte read), records ``state.json`` and watches the session again, as any cold resolve.
Every answer's counts are checked against the journal; the first one's id sets in full.

Measurements (``scripts/benchmark.py`` runs them all, section ``resolve``):

* :func:`bench_live`: per session size, async and sync API, interleaved: the cold resolve
  from Redis, the same from the journal (a live worker without Redis: our full rebuild) and
  one ``PING`` on a plain redis-py client of the same kind in the same process (the floor);
* :func:`bench_busy`: the same cold resolve with CPU-bound processes running beside it
  (busy loops, started and stopped here), against its idle figure measured just before;
* :func:`bench_fresh`: a new process's first resolve, timed inside it (``bench_fresh.py``)
  from the start of the script to the resolve's end, with its parts;
* :func:`bench_held`: Redis memory per id and the cold resolve with 1,000 to 100,000
  sessions held in Redis (copies of the measured session's keys, ``DUMP``/``RESTORE``);
* :func:`profile_cold`: pyinstrument over cold resolves of one size (``--profile cold``).

Times are ``time.perf_counter_ns``; ``gc.collect()`` runs before each timed call, outside it.

    python scripts/bench_cold.py --entries 500 --entries 20000     # JSON of bench_live
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_resolve
import redis
import redis.asyncio as aredis
from bench_internals import resolve_identity

from offload_registry import SessionRegistry
from offload_registry import sync as sync_api
from offload_registry.testing.server import RedisServerProcess

SESSION_KEY = bench_resolve.SESSION_KEY
WARMUP_KEY = bench_resolve.WARMUP_KEY
APIS = ("async", "sync")
SUBSCRIBE_TIMEOUT_S = 5.0
FRESH_SCRIPT = Path(__file__).with_name("bench_fresh.py")
SPAWN = mp.get_context("spawn")

Probe = Callable[[], Awaitable[int]]
"""One timed call: does its own setup, returns the nanoseconds of the timed part."""


# --- small helpers ------------------------------------------------------------------------------


async def call(value: Any) -> Any:
    """Await what the async API returns; the sync API's value is already there."""
    return await value if inspect.isawaitable(value) else value


def stats_ms(ns: list[int]) -> dict[str, float]:
    ms = sorted(n / 1e6 for n in ns)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 4),
        "p10_ms": round(ms[len(ms) // 10], 4),
        "p90_ms": round(ms[min(len(ms) - 1, len(ms) * 9 // 10)], 4),
    }


async def interleaved(probes: dict[str, Probe], runs: int) -> dict[str, list[int]]:
    """Each probe once untimed, then ``runs`` rounds of one call of each (so a slow spell of
    the machine hits every figure alike)."""
    for probe in probes.values():
        await probe()
    times: dict[str, list[int]] = {name: [] for name in probes}
    for _ in range(runs):
        for name, probe in probes.items():
            times[name].append(await probe())
    return times


def fingerprint(manager: Any) -> tuple[int, int, int, int]:
    return (
        manager.entry_count,
        len(manager.processed_tool_call_ids),
        len(manager.confirmed_offload_ids),
        len(manager.deleted_offload_ids),
    )


def id_sets(manager: Any) -> tuple[set[str], set[str], set[str]]:
    return (
        set(manager.processed_tool_call_ids),
        set(manager.confirmed_offload_ids),
        set(manager.deleted_offload_ids),
    )


# --- a live worker ------------------------------------------------------------------------------


@dataclass
class LiveWorker:
    """A started registry (async or sync API) in a live worker's state; see the module doc."""

    api: str
    registry: Any
    expect: str  # where its cold resolve must come from: "redis" or "journal"
    truth: tuple[int, int, int, int] | None = None

    @classmethod
    async def open(cls, api: str, root: Path, url: str | None, prefix: str) -> LiveWorker:
        kwargs: dict[str, Any] = {"redis_url": url, "key_prefix": prefix} if url else {}
        factory = SessionRegistry if api == "async" else sync_api.SessionRegistry
        registry = factory(root, **kwargs)
        await call(registry.start())
        warm = await call(registry.resolve(WARMUP_KEY))
        if url:
            await wait_subscribed(registry, warm.manager.identity)
        return cls(api, registry, "redis" if url else "journal")

    async def resolve(self) -> Any:
        return await call(self.registry.resolve(SESSION_KEY))

    async def evict_and_resolve(self) -> Any:
        """What a cold resolve in a live worker is: evicted from the near cache only, then
        resolved (the timed part is the resolve)."""
        self.registry.evict(SESSION_KEY)
        return await self.resolve()

    async def cold(self) -> int:
        """One cold resolve, timed (ns) and checked."""
        self.registry.evict(SESSION_KEY)
        gc.collect()
        started = time.perf_counter_ns()
        ctx = await self.resolve()
        elapsed = time.perf_counter_ns() - started
        self.check(ctx)
        return elapsed

    def check(self, ctx: Any) -> None:
        manager = ctx.manager
        if manager.source != self.expect:
            raise SystemExit(f"cold resolve came from {manager.source!r}, not {self.expect!r}")
        if self.truth is not None and fingerprint(manager) != self.truth:
            raise SystemExit(f"cold resolve from {manager.source} differs from the journal")

    async def close(self) -> None:
        await call(self.registry.close())


async def wait_subscribed(registry: Any, identity: Any) -> None:
    """Until the registry's invalidation listener hears the session (subscription confirmed)."""
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while not registry.tier.hears(identity):
        if time.monotonic() > deadline:
            raise SystemExit("the invalidation listener did not subscribe within 5 s")
        await asyncio.sleep(0.001)


class Pinger:
    """A plain redis-py client of the API's kind (asyncio or blocking), connection open."""

    def __init__(self, api: str, url: str) -> None:
        self.client: Any = (aredis if api == "async" else redis).Redis.from_url(url)

    async def ping(self) -> int:
        gc.collect()
        started = time.perf_counter_ns()
        await call(self.client.ping())
        return time.perf_counter_ns() - started

    async def close(self) -> None:
        close = getattr(self.client, "aclose", None) or self.client.close
        await call(close())


# --- live workers, per size ----------------------------------------------------------------------


async def open_pair(api: str, root: Path, url: str, prefix: str) -> tuple[LiveWorker, LiveWorker]:
    """The journal-only and the Redis live workers of one API, checked against each other:
    the first resolve of each (journal rebuild; Redis, or a rebuild that publishes it) must
    hold exactly the same id sets."""
    journal = await LiveWorker.open(api, root, None, prefix)
    redis_worker = await LiveWorker.open(api, root, url, prefix)
    truth = (await journal.resolve()).manager
    first = (await redis_worker.resolve()).manager
    if id_sets(first) != id_sets(truth) or fingerprint(first) != fingerprint(truth):
        raise SystemExit("the Redis worker's first resolve differs from the journal")
    journal.truth = redis_worker.truth = fingerprint(truth)
    return journal, redis_worker


async def measure_api(api: str, root: Path, url: str, prefix: str, runs: int) -> dict[str, Any]:
    journal, redis_worker = await open_pair(api, root, url, prefix)
    pinger = Pinger(api, url)
    try:
        times = await interleaved(
            {"journal": journal.cold, "redis": redis_worker.cold, "ping": pinger.ping}, runs
        )
    finally:
        await pinger.close()
        await redis_worker.close()
        await journal.close()
    out: dict[str, Any] = {name: stats_ms(ns) for name, ns in times.items()}
    out["redis_vs_ping"] = round(out["redis"]["median_ms"] / out["ping"]["median_ms"], 3)
    out["speedup_vs_journal"] = round(out["journal"]["median_ms"] / out["redis"]["median_ms"], 3)
    return out


def make_root(tmp: Path, count: int, seed: int) -> tuple[Path, list[str]]:
    """A data root holding one session of ``count`` entries (written with the library)."""
    root = tmp / f"live-{count}"
    return root, bench_resolve.write_session(root, count, seed)


async def bench_live(
    tmp: Path, url: str, sizes: list[int], runs: int, seed: int
) -> list[dict[str, Any]]:
    """Cold resolve from Redis and from the journal, and the PING floor, per size and API."""
    out = []
    for count in sizes:
        print(f"[bench_cold] live worker, {count:,} entries", file=sys.stderr, flush=True)
        root, ids = make_root(tmp, count, seed)
        prefix = f"bench-live-{uuid.uuid4().hex[:10]}"
        apis = {api: await measure_api(api, root, url, prefix, runs) for api in APIS}
        out.append({"entries": count, "ids": len(ids), "runs": runs, "apis": apis})
    return out


# --- CPU-bound processes beside it -------------------------------------------------------------


def spin(ready: Any, stop: Any) -> None:
    """A CPU-bound process: a busy loop until ``stop`` is set (``ready`` released first)."""
    ready.release()
    while not stop.is_set():
        for _ in range(20_000):
            pass


async def bench_busy(
    tmp: Path, url: str, count: int, runs: int, seed: int, processes: int = 2
) -> dict[str, Any]:
    """Cold resolve from Redis with ``processes`` busy loops running, against the same live
    worker idle just before (median of ``runs`` each, per API)."""
    root = tmp / f"live-{count}"
    if not root.exists():
        make_root(tmp, count, seed)
    prefix = f"bench-busy-{uuid.uuid4().hex[:10]}"
    out: dict[str, Any] = {"entries": count, "processes": processes, "runs": runs, "apis": {}}
    for api in APIS:
        journal, worker = await open_pair(api, root, url, prefix)
        await journal.close()
        pinger = Pinger(api, url)
        stop, ready = SPAWN.Event(), SPAWN.Semaphore(0)
        spinners = [
            SPAWN.Process(target=spin, args=(ready, stop), name=f"busy-{i}")
            for i in range(processes)
        ]
        try:
            idle = await interleaved({"redis": worker.cold, "ping": pinger.ping}, runs)
            for proc in spinners:
                proc.start()
            for _ in spinners:  # each busy loop spinning (spawn start-up done)
                if not await asyncio.to_thread(ready.acquire, True, 60):
                    raise SystemExit("a busy-loop process did not start")
            await asyncio.sleep(0.1)
            busy = await interleaved({"redis": worker.cold, "ping": pinger.ping}, runs)
        finally:
            stop.set()
            for proc in spinners:
                if proc.pid is not None:
                    proc.join(5)
                    if proc.is_alive():
                        proc.terminate()
                        proc.join(5)
            await pinger.close()
            await worker.close()
        result = {
            "idle": stats_ms(idle["redis"]),
            "busy": stats_ms(busy["redis"]),
            "idle_ping": stats_ms(idle["ping"]),
            "busy_ping": stats_ms(busy["ping"]),
        }
        result["busy_vs_idle"] = round(result["busy"]["median_ms"] / result["idle"]["median_ms"], 3)
        out["apis"][api] = result
    return out


# --- a fresh process ---------------------------------------------------------------------------

FRESH_PARTS = (
    ("interpreter", "spawned", "start"),
    ("import", "start", "imported"),
    ("construct", "imported", "constructed"),
    ("connect", "constructed", "connected"),
    ("first_resolve", "connected", "resolved"),
)


def fresh_once(api: str, root: Path, url: str, prefix: str) -> dict[str, Any]:
    """Spawn ``bench_fresh.py`` (a new interpreter) and read its marks (perf_counter_ns:
    CLOCK_MONOTONIC on Linux, one clock for every process, so the spawn is comparable)."""
    env = dict(os.environ)
    spawned = time.perf_counter_ns()
    proc = subprocess.run(
        [sys.executable, str(FRESH_SCRIPT), api, str(root), url, prefix, SESSION_KEY],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench_fresh.py failed: {proc.stderr[-2000:]}")
    marks = json.loads(proc.stdout)
    if marks["source"] != "redis":
        raise SystemExit(f"a fresh process's first resolve came from {marks['source']!r}")
    marks["spawned"] = spawned
    return marks


async def bench_fresh(tmp: Path, url: str, count: int, runs: int, seed: int) -> dict[str, Any]:
    """A new process's first resolve of a session Redis holds, per API: median of ``runs``
    processes of each part (ms), and of the total from spawn to the resolve's end."""
    root = tmp / f"live-{count}"
    if not root.exists():
        make_root(tmp, count, seed)
    prefix = f"bench-fresh-{uuid.uuid4().hex[:10]}"
    journal, worker = await open_pair("async", root, url, prefix)  # publishes the session
    await worker.close()
    await journal.close()
    out: dict[str, Any] = {"entries": count, "runs": runs, "apis": {}}
    for api in APIS:
        samples = [fresh_once(api, root, url, prefix) for _ in range(runs)]
        parts: dict[str, float] = {}
        for name, begin, end in FRESH_PARTS:
            parts[name] = round(statistics.median((s[end] - s[begin]) / 1e6 for s in samples), 3)
        parts["subscribed_after_resolve"] = round(
            statistics.median(max(0, s["subscribed"] - s["resolved"]) / 1e6 for s in samples), 3
        )
        out["apis"][api] = {
            "parts_ms": parts,
            "start_to_resolved_ms": round(
                statistics.median((s["resolved"] - s["start"]) / 1e6 for s in samples), 3
            ),
            "spawn_to_resolved_ms": round(
                statistics.median((s["resolved"] - s["spawned"]) / 1e6 for s in samples), 3
            ),
        }
    return out


# --- many sessions held in Redis -----------------------------------------------------------------


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def filler_keys(keyspace: Any, start: int, stop: int) -> list[Any]:
    """The Redis keys of sessions ``agent:bench-fill:s<i>`` (names only: no journal)."""
    return [
        keyspace.session_for(resolve_identity(f"agent:bench-fill:s{i}")) for i in range(start, stop)
    ]


def restore_copies(
    admin: redis.Redis, dumps: list[tuple[str, bytes, int]], sessions: list[Any], batch: int
) -> None:
    """``RESTORE`` the dumped keys under each filler session's names, pipelined. Never
    ``REPLACE``: a name that exists (not ours) makes the command fail, and the run stop."""
    for at in range(0, len(sessions), batch):
        pipe = admin.pipeline(transaction=False)
        for keys in sessions[at : at + batch]:
            for attr, blob, ttl in dumps:
                pipe.restore(getattr(keys, attr), ttl, blob)
        pipe.execute()


def delete_copies(admin: redis.Redis, sessions: list[Any], attrs: list[str], batch: int) -> None:
    for at in range(0, len(sessions), batch):
        names = [getattr(k, a) for k in sessions[at : at + batch] for a in attrs]
        admin.unlink(*names)


async def bench_held(
    tmp: Path, url: str, counts: list[int], entries: int, runs: int, seed: int
) -> dict[str, Any]:
    """Redis memory per id and the cold resolve (async API) with ``counts`` sessions of
    ``entries`` entries held in Redis: one real session (its journal on disk, the one
    resolved) and copies of its keys under other sessions' names (``DUMP`` once, then
    pipelined ``RESTORE``; only keys this function created, deleted at the end)."""
    root, ids = make_root(tmp / "held", entries, seed)
    raw_per_id = sum(len(i.encode()) for i in ids) / len(ids)
    prefix = f"bench-held-{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(url)
    base_memory = used_memory(admin)
    journal, worker = await open_pair("async", root, url, prefix)
    await journal.close()
    pinger = Pinger("async", url)
    keyspace = worker.registry.tier.keyspace
    ctx = await worker.resolve()
    keys = keyspace.session_for(ctx.manager.identity)
    dumps = []
    for attr in ("state", "deltas", "claims", "fence"):
        name = getattr(keys, attr)
        blob = admin.dump(name)
        if blob is not None:
            dumps.append((attr, blob, max(0, int(admin.pttl(name)))))
    attrs = [attr for attr, _, _ in dumps]
    session_bytes = sum(int(admin.memory_usage(getattr(keys, a), samples=0) or 0) for a in attrs)
    fillers: list[Any] = []
    points = []
    try:
        for target in sorted(counts):
            print(f"[bench_cold] {target:,} sessions held in Redis", file=sys.stderr, flush=True)
            more = filler_keys(keyspace, len(fillers), target - 1)
            started = time.perf_counter()
            restore_copies(admin, dumps, more, 1000)
            fill_seconds = time.perf_counter() - started
            fillers += more
            held = len(fillers) + 1
            memory = used_memory(admin) - base_memory
            times = await interleaved({"redis": worker.cold, "ping": pinger.ping}, runs)
            redis_ms, ping_ms = stats_ms(times["redis"]), stats_ms(times["ping"])
            points.append(
                {
                    "sessions": held,
                    "fill_seconds": round(fill_seconds, 2),
                    "used_memory_bytes": memory,
                    "bytes_per_session": round(memory / held),
                    "bytes_per_id": round(memory / (held * len(ids)), 2),
                    "redis": redis_ms,
                    "ping": ping_ms,
                    "redis_vs_ping": round(redis_ms["median_ms"] / ping_ms["median_ms"], 3),
                }
            )
    finally:
        delete_copies(admin, fillers, attrs, 1000)
        await pinger.close()
        await worker.close()
        admin.close()
    return {
        "entries_per_session": entries,
        "ids_per_session": len(ids),
        "raw_bytes_per_id": round(raw_per_id, 2),
        "session_bytes": session_bytes,
        "memory_usage_per_id": round(session_bytes / len(ids), 2),
        "keys_copied": attrs,
        "points": points,
    }


# --- profile -------------------------------------------------------------------------------------


async def profile_cold(tmp: Path, url: str, count: int, resolves: int, seed: int) -> str:
    """pyinstrument over ``resolves`` cold resolves from Redis in a live worker, async API
    (async mode on: time awaiting Redis or a worker thread shows under the awaiting frame)
    and sync API; returns both reports as text."""
    try:
        from pyinstrument import Profiler  # noqa: PLC0415 - optional (the bench extra)
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: pip install -e '.[bench]'") from None
    root, _ = make_root(tmp, count, seed)
    prefix = f"bench-profile-{uuid.uuid4().hex[:10]}"
    reports = []
    for api in APIS:
        journal, worker = await open_pair(api, root, url, prefix)
        await journal.close()
        for _ in range(20):
            await worker.cold()
        gc.collect()
        profiler = Profiler(interval=0.0001, async_mode="enabled" if api == "async" else "disabled")
        started = time.perf_counter_ns()
        profiler.start()
        for _ in range(resolves):  # no gc.collect() or check inside: only the resolves
            ctx = await worker.evict_and_resolve()
        profiler.stop()
        per_resolve = (time.perf_counter_ns() - started) / resolves / 1e6
        worker.check(ctx)
        await worker.close()
        reports.append(
            f"== pyinstrument: {resolves} cold resolves from Redis of a {count:,}-entry session "
            f"in a live worker, {api} API ({per_resolve:.3f} ms per resolve under the profiler, "
            f"evict included) ==\n"
            + profiler.output_text(unicode=False, color=False, show_all=False)
        )
    return "\n".join(reports)


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, action="append", metavar="N")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp, RedisServerProcess() as srv:
        report = asyncio.run(
            bench_live(Path(tmp), srv.url, args.entries or [500, 20_000], args.runs, args.seed)
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
