#!/usr/bin/env python3
"""Measure a cold resolve from Redis in a live worker, against one PING round trip (issue 15).

Starts its own ``redis-server`` on a free loopback port, writes one session of ``--entries``
entries into a temporary data root through the public API, then, for each API (async and
blocking), opens a live registry (started, the session and another agent's session resolved
once, so the connection is open and the invalidation listener subscribed) and repeats,
interleaved per round (``gc.collect()`` outside the timed part):

* ``ping``: one redis-py ``PING`` from the same process (a client of the same flavour);
* ``cold``: ``registry.evict(key)`` (the near cache only), then the timed ``resolve(key)``,
  which must be answered by Redis (``manager.source == "redis"``);
* ``cold_cpu``: the process CPU time (every thread) of each cold resolve, steadier than the
  wall clock on a machine shared with other jobs (it leaves out waiting: Redis, scheduling);
* ``rebuild`` (``--rebuild``): the same on a registry without Redis: our own rebuild from
  the journal.

Prints median and p90 (ms) and the ratios the issue's goals use: cold/ping (<= 3 at 500
entries), rebuild/cold (>= 10 at 20,000). ``--busy N`` starts N CPU-burning processes first
(the goal: median <= 2x the idle one). ``--profile async|sync`` runs the cold resolves of
the first size under cProfile (or pyinstrument with ``--pyinstrument``) and prints the top.

    python scripts/bench_cold.py                         # 500 and 20,000 entries, idle
    python scripts/bench_cold.py --entries 500 --busy 2  # with two CPU burners
    python scripts/bench_cold.py --entries 500 --profile async --runs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import multiprocessing
import os
import pstats
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from offload_registry import sync as sync_api
from offload_registry._async.registry import SessionRegistry as AsyncRegistry
from offload_registry.testing.server import RedisServerProcess

KEY = "agent:main:bench-cold"
WARM_KEY = "agent:bench-other:warm"  # another agent: the live worker's first resolve
ALNUM = string.ascii_letters + string.digits
WORDS = ["the", "file", "parses", "a", "config", "returns", "options", "test", "module"]


def make_entry(rng: random.Random) -> dict[str, Any]:
    """An entry shaped like the seed's (~450 bytes of JSON), ~10 % offloaded, ~3 % deleted."""
    call_id = "toolu_01" + "".join(rng.choices(ALNUM, k=22))
    entry: dict[str, Any] = {
        "timestamp": "2026-02-03T04:05:06.789Z",
        "node_id": None,
        "tool_call": f"bash -lc 'sed -n 1,200p src/pkg/module_{rng.randrange(97)}.py'",
        "summary": " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 42))),
        "result_ref": f"refs/{call_id}.md",
        "tool_call_id": call_id,
        "session_key": KEY,
        "score": rng.randint(0, 10),
    }
    roll = rng.random()
    if roll < 0.03:
        entry["offloaded"] = "deleted"
    elif roll < 0.13:
        entry["offloaded"] = True
    return entry


def write_session(root: Path, count: int) -> None:
    rng = random.Random(count)
    with sync_api.SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager
        for start in range(0, count, 1000):
            manager.append_entries([make_entry(rng) for _ in range(min(1000, count - start))])


def burn() -> None:
    while True:
        pass


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered) * 1e3,
        "p90": ordered[int(len(ordered) * 0.9)] * 1e3,
    }


def timed(fn: Callable[[], object], cpu: list[float] | None = None) -> float:
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


async def atimed(fn: Callable[[], Any], cpu: list[float] | None = None) -> float:
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    await fn()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


async def run_async(root: Path, url: str, runs: int, rebuild: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ping": [], "cold": [], "rebuild": [], "cold_cpu": []}
    client = redis.asyncio.Redis.from_url(url)
    reg = AsyncRegistry(root, redis_url=url)
    local = AsyncRegistry(root)
    try:
        await reg.start()
        await reg.resolve(WARM_KEY)
        await reg.resolve(KEY)
        await client.ping()

        async def cold() -> None:
            reg.evict(KEY)
            ctx = await reg.resolve(KEY)
            assert ctx.manager.source == "redis", ctx.manager.source

        async def rebuilt() -> None:
            local.evict(KEY)
            ctx = await local.resolve(KEY)
            assert ctx.manager.source == "journal", ctx.manager.source

        for _ in range(runs):
            out["ping"].append(await atimed(client.ping))
            out["cold"].append(await atimed(cold, out["cold_cpu"]))
            if rebuild:
                out["rebuild"].append(await atimed(rebuilt))
    finally:
        await reg.close()
        await local.close()
        await client.aclose()
    return out


def run_sync(root: Path, url: str, runs: int, rebuild: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ping": [], "cold": [], "rebuild": [], "cold_cpu": []}
    client = redis.Redis.from_url(url)
    with (
        sync_api.SessionRegistry(root, redis_url=url) as reg,
        sync_api.SessionRegistry(root) as local,
    ):
        reg.resolve(WARM_KEY)
        reg.resolve(KEY)
        client.ping()

        def cold() -> None:
            reg.evict(KEY)
            ctx = reg.resolve(KEY)
            assert ctx.manager.source == "redis", ctx.manager.source

        def rebuilt() -> None:
            local.evict(KEY)
            local.resolve(KEY)

        for _ in range(runs):
            out["ping"].append(timed(client.ping))
            out["cold"].append(timed(cold, out["cold_cpu"]))
            if rebuild:
                out["rebuild"].append(timed(rebuilt))
    client.close()
    return out


def profile(root: Path, url: str, api: str, runs: int, use_pyinstrument: bool) -> None:
    """Run ``runs`` cold resolves under a profiler and print where the time goes."""

    async def async_loop() -> None:
        reg = AsyncRegistry(root, redis_url=url)
        await reg.start()
        await reg.resolve(WARM_KEY)
        await reg.resolve(KEY)
        for _ in range(runs):
            reg.evict(KEY)
            await reg.resolve(KEY)
        await reg.close()

    def sync_loop() -> None:
        with sync_api.SessionRegistry(root, redis_url=url) as reg:
            reg.resolve(WARM_KEY)
            reg.resolve(KEY)
            for _ in range(runs):
                reg.evict(KEY)
                reg.resolve(KEY)

    work: Callable[[], None] = (lambda: asyncio.run(async_loop())) if api == "async" else sync_loop
    if use_pyinstrument:
        import pyinstrument  # noqa: PLC0415 - optional

        profiler = pyinstrument.Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        work()
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(45)
    print(text.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[500, 20_000])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--api", choices=["async", "sync", "both"], default="both")
    parser.add_argument("--busy", type=int, default=0, help="CPU-burning processes beside it")
    parser.add_argument("--rebuild", action="store_true", help="also time the journal rebuild")
    parser.add_argument("--profile", choices=["async", "sync"])
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.busy)]
    for p in burners:
        p.start()
    results: list[dict[str, Any]] = []
    try:
        with RedisServerProcess() as server, tempfile.TemporaryDirectory() as tmp:
            for count in args.entries:
                root = Path(tmp) / f"root-{count}"
                write_session(root, count)
                if args.profile:
                    profile(root, server.url, args.profile, args.runs, args.pyinstrument)
                    return 0
                apis = ["async", "sync"] if args.api == "both" else [args.api]
                for api in apis:
                    runner = run_async if api == "async" else run_sync
                    raw: Any = runner(root, server.url, args.runs, args.rebuild)  # type: ignore[operator]
                    if api == "async":
                        raw = asyncio.run(raw)
                    row: dict[str, Any] = {"entries": count, "api": api, "busy": args.busy}
                    for name, values in raw.items():
                        if values:
                            row[name] = summary(values)
                    row["cold_per_ping"] = row["cold"]["median"] / row["ping"]["median"]
                    if "rebuild" in row:
                        row["rebuild_per_cold"] = row["rebuild"]["median"] / row["cold"]["median"]
                    results.append(row)
    finally:
        for p in burners:
            p.kill()
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load": load, "rows": results}))
        return 0
    loads = " ".join(f"{x:.2f}" for x in load)
    print(f"load {loads}; cpus {os.cpu_count()}; busy {args.busy}")
    for row in results:
        parts = [f"{row['entries']:>6} {row['api']:<5}"]
        for name in ("ping", "cold", "cold_cpu", "rebuild"):
            if name in row:
                parts.append(f"{name} {row[name]['median']:.3f}/{row[name]['p90']:.3f} ms")
        parts.append(f"cold/ping {row['cold_per_ping']:.1f}x")
        if "rebuild_per_cold" in row:
            parts.append(f"rebuild/cold {row['rebuild_per_cold']:.1f}x")
        print("  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
