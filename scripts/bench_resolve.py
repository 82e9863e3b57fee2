#!/usr/bin/env python3
"""Benchmark resolving a session: cold from its journal, cold from Redis, and hot.

For each ``--entries`` size, writes one session journal of realistic entries (~450 bytes,
ids ``toolu_01`` + 22 random alphanumerics, ~10 % ``offloaded: true``, ~3 % ``"deleted"``)
with the library into a temporary data root, then measures, interleaved (one call of each
per round, ``gc.collect()`` before each, outside the timed region), the median of ``--runs``:

* cold resolve rebuilt from the journal (the baseline): a new ``SessionRegistry(root)``
  without Redis per run, timing ``resolve(key)`` only (construction and ``start`` excluded);
* cold resolve answered by Redis: a new ``SessionRegistry(root, redis_url=...)`` per run,
  started first, timing ``resolve(key)`` only (asserts ``manager.source == "redis"``);
* each registry first resolves a session of another agent, untimed, so the timed resolve
  runs as in a live worker: invalidation listener subscribed, connections open;
* the parts of that resolve, each alone: the load round trip (with ``PING`` and a
  plain ``HGET`` of the same snapshot field for reference), ``codec.decode_snapshot``, the
  journal tail catch-up past the snapshot's watermark, the claims-record catch-up,
  ``record_session`` (``state.json``) and one ``asyncio.to_thread`` hop (the async API makes
  three of them on a cold Redis resolve);
* commands per cold Redis resolve: ``INFO commandstats`` deltas around exactly one resolve on
  a started registry, and the round trips (top-level commands the registry's client sent);
* Redis memory of the session (``MEMORY USAGE``), per session and per id.

Then the hot resolve (near-cache hit), sync and awaited async, against a plain
``OrderedDict`` LRU lookup with ``move_to_end`` called the same way (ns per op, loops of
``--hot-loops``). ``--api`` chooses the API of the cold rows (async by default: the path a
service takes; its blocking file work runs in worker threads). ``--profile N`` also runs N cold
Redis resolves of the largest size under ``cProfile`` and prints where the time goes.

Starts its own Redis-compatible server on a free loopback port (and stops it at the end)
unless ``--redis-url`` is given; keys use a fresh random prefix and are deleted afterwards.

    python scripts/bench_resolve.py                          # table, 500 and 20,000 entries
    python scripts/bench_resolve.py --entries 20000 --json   # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import string
import sys
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import redis
import redis.utils

from offload_registry import codec
from offload_registry import sync as sync_api
from offload_registry._async.redis_tier import RedisTier as AsyncRedisTier
from offload_registry._async.registry import SessionRegistry as AsyncRegistry
from offload_registry._sync.redis_tier import RedisTier as SyncRedisTier
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.session_files import SessionFiles, SessionPaths
from offload_registry.keys import resolve_identity
from offload_registry.session_state import SessionState
from offload_registry.testing.server import RedisServerProcess

# A sentence reads better than forty quoted words.
WORDS = (  # noqa: SIM905
    "the file contains a function that parses the config and returns a dict of options "
    "test passed failed error warning module class method import return value line output "
    "traceback assert expected actual diff patch commit branch build install package"
).split()
ALNUM = string.ascii_letters + string.digits
SESSION_KEY = "agent:main:bench-resolve"
WARMUP_KEY = "agent:bench-warmup:live-worker"  # another agent: its own state.json
BATCH = 1_000
GOAL_RATIO = 0.1  # issue 4: a cold resolve from Redis costs at most 1/10 of the rebuild
GOAL_ROUND_TRIPS = 1
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})

# Row keys (stable: the JSON and the smoke test use them) and their labels.
COLD_JOURNAL = "cold_journal"
COLD_REDIS = "cold_redis"
ROWS: dict[str, str] = {
    COLD_JOURNAL: "cold resolve, rebuilt from the journal (baseline)",
    COLD_REDIS: "cold resolve, answered by Redis",
    "load_round_trip": "  part: load round trip (MULTI of plain reads)",
    "ping_round_trip": "  reference: PING round trip",
    "hget_round_trip": "  reference: HGET of the same snapshot field, no script",
    "decode_snapshot": "  part: codec.decode_snapshot",
    "catch_up": "  part: journal tail catch-up (SessionFiles.catch_up)",
    "catch_up_claims": "  part: claims catch-up (SessionFiles.catch_up_claims)",
    "record_session": "  part: record_session (state.json, unchanged)",
    "thread_hop": "  part: one asyncio.to_thread hop (no-op)",
}
HOT_ROWS: dict[str, str] = {
    "baseline_sync": "OrderedDict get + move_to_end, sync (baseline)",
    "hot_sync": "hot resolve, sync SessionRegistry",
    "baseline_async": "OrderedDict get + move_to_end, awaited (baseline)",
    "hot_async": "hot resolve, awaited async SessionRegistry",
}

Probe = Callable[[], Awaitable[float]]
"""One measurement: does its own setup and teardown, returns the seconds of the timed part."""


# --- data -----------------------------------------------------------------------------------


def make_entry(rng: random.Random) -> dict[str, Any]:
    """An entry shaped like the seed's (~450 bytes of JSON)."""
    call_id = "toolu_01" + "".join(rng.choices(ALNUM, k=22))
    n = rng.randrange(1_000_000)
    entry: dict[str, Any] = {
        "timestamp": f"2026-02-03T04:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
        "node_id": None if n % 3 else f"node-{n // 3}",
        "tool_call": f"bash -lc 'sed -n 1,200p src/pkg/module_{n % 97}.py'",
        "summary": " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 42))),
        "result_ref": f"refs/{call_id}.md",
        "tool_call_id": call_id,
        "session_key": SESSION_KEY,
        "score": rng.randint(0, 10),
    }
    roll = rng.random()
    if roll < 0.03:
        entry["offloaded"] = "deleted"
    elif roll < 0.13:
        entry["offloaded"] = True
    return entry


def write_session(root: Path, count: int, seed: int) -> list[str]:
    """Write ``count`` entries with the library (batches of 1,000, no fsync); their ids."""
    rng = random.Random(seed)
    ids: list[str] = []
    with sync_api.SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(SESSION_KEY).manager
        for start in range(0, count, BATCH):
            batch = [make_entry(rng) for _ in range(min(BATCH, count - start))]
            written = manager.append_entries(batch)
            if written != len(batch):
                raise SystemExit(f"append_entries wrote {written} of {len(batch)} entries")
            ids.extend(entry["tool_call_id"] for entry in batch)
    return ids


# --- helpers --------------------------------------------------------------------------------


def ratio_text(ms: float, base: float) -> str:
    """``1/7.3`` for a figure 7.3 times smaller than ``base``, ``1.25x`` for a larger one."""
    if ms <= 0 or base <= 0:
        return "-"
    return f"1/{base / ms:.1f}" if ms < base else f"{ms / base:.2f}x"


PREFIXES: list[str] = []
"""Every key prefix this run used (their keys are deleted at the end)."""


def new_prefix() -> str:
    prefix = f"bench-resolve-{uuid.uuid4().hex[:12]}"
    PREFIXES.append(prefix)
    return prefix


def p10(values: list[float]) -> float:
    return sorted(values)[len(values) // 10]


def session_files(root: Path) -> SessionFiles:
    """The same ``SessionFiles`` a registry builds for the session (default fsync policy)."""
    identity = resolve_identity(SESSION_KEY)
    return SessionFiles(SessionPaths.for_identity(root, identity), FsyncPolicy.ALWAYS, False)


def same_state(a: SessionState, b: SessionState) -> bool:
    return (a.processed, a.confirmed, a.deleted, a.entry_count) == (
        b.processed,
        b.confirmed,
        b.deleted,
        b.entry_count,
    )


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats``: calls and server microseconds of each command."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }


@contextlib.contextmanager
def counting_commands(client: Any) -> Iterator[list[str]]:
    """Record the top-level commands (one round trip each: the registry pipelines nothing)
    that ``client`` sends, by shadowing its ``execute_command`` on the instance; pipelines
    are counted as one round trip each."""
    sent: list[str] = []
    execute, pipeline = client.execute_command, client.pipeline
    if asyncio.iscoroutinefunction(execute):

        async def counted_async(*args: Any, **options: Any) -> Any:
            sent.append(str(args[0]).lower())
            return await execute(*args, **options)

        client.execute_command = counted_async
    else:

        def counted_sync(*args: Any, **options: Any) -> Any:
            sent.append(str(args[0]).lower())
            return execute(*args, **options)

        client.execute_command = counted_sync

    def counted_pipeline(*args: Any, **options: Any) -> Any:
        sent.append("pipeline")
        return pipeline(*args, **options)

    client.pipeline = counted_pipeline
    try:
        yield sent
    finally:
        del client.execute_command, client.pipeline


# --- the two APIs, behind one interface -----------------------------------------------------


@dataclass
class Api:
    """Cold-resolve probes for the async or the sync registry (``--api``)."""

    name: str
    root: Path
    url: str
    prefix: str

    def _registry(self, with_redis: bool) -> Any:
        kwargs: dict[str, Any] = {}
        if with_redis:
            kwargs = {"redis_url": self.url, "key_prefix": self.prefix}
        if self.name == "async":
            return AsyncRegistry(self.root, **kwargs)
        return sync_api.SessionRegistry(self.root, **kwargs)

    async def _call(self, result: Any) -> Any:
        return await result if self.name == "async" else result

    async def open(self, with_redis: bool) -> Any:
        """A started registry in the state of a live worker: its invalidation listener
        subscribed and its connections open (it resolved a session of another agent, so
        the timed resolve finds nothing of its session anywhere in this process)."""
        reg = self._registry(with_redis)
        await self._call(reg.start())
        await self._call(reg.resolve(WARMUP_KEY))
        await asyncio.sleep(0.05)  # the listener's connect and SUBSCRIBE finish meanwhile
        return reg

    async def close(self, reg: Any) -> None:
        await self._call(reg.close())

    async def resolve(self, reg: Any) -> Any:
        return await self._call(reg.resolve(SESSION_KEY))

    def cold(self, with_redis: bool, expect: str, check: Callable[[Any], None]) -> Probe:
        async def probe() -> float:
            reg = await self.open(with_redis)
            gc.collect()
            started = time.perf_counter()
            ctx = await self.resolve(reg)
            elapsed = time.perf_counter() - started
            if ctx.manager.source != expect:
                raise SystemExit(f"cold resolve came from {ctx.manager.source!r}, not {expect!r}")
            check(ctx)
            await self.close(reg)
            return elapsed

        return probe

    async def load_reply(self, reg: Any) -> Any:
        """Fetch exactly as ``RedisTier.load`` does (one transaction, one round trip)."""
        tier = cast("AsyncRedisTier | SyncRedisTier", reg.tier)
        keys = tier.keyspace.session_for(resolve_identity(SESSION_KEY))
        return await self._call(tier.fetch(keys))


def timed(fn: Callable[[], object]) -> Probe:
    async def probe() -> float:
        gc.collect()
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    return probe


def timed_async(fn: Callable[[], Awaitable[object]]) -> Probe:
    async def probe() -> float:
        gc.collect()
        started = time.perf_counter()
        await fn()
        return time.perf_counter() - started

    return probe


async def interleaved(probes: dict[str, Probe], runs: int) -> dict[str, list[float]]:
    """Each probe once as a warm-up, then ``runs`` rounds of one call of each (ms)."""
    for probe in probes.values():
        await probe()
    times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(runs):
        for name, probe in probes.items():
            times[name].append(await probe() * 1e3)
    return times


# --- one size ---------------------------------------------------------------------------------


@dataclass
class SizeResult:
    entries: int
    journal_bytes: int
    ids: dict[str, int]
    times: dict[str, list[float]]
    commands: dict[str, Any]
    memory: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def build_rows(self) -> None:
        base = statistics.median(self.times[COLD_JOURNAL])
        round_trips = self.commands["round_trips"]
        for key, label in ROWS.items():
            ms = statistics.median(self.times[key])
            self.rows.append(
                {
                    "key": key,
                    "name": label.strip(),
                    "ms": round(ms, 4),
                    "p10_ms": round(p10(self.times[key]), 4),
                    "vs_rebuild": round(ms / base, 5),
                    "round_trips": {COLD_JOURNAL: 0, COLD_REDIS: round_trips}.get(key),
                }
            )

    def row(self, key: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["key"] == key)

    def as_json(self) -> dict[str, Any]:
        redis_row, base_row = self.row(COLD_REDIS), self.row(COLD_JOURNAL)
        return {
            "entries": self.entries,
            "journal_bytes": self.journal_bytes,
            "ids": self.ids,
            "rows": self.rows,
            "goal": {
                "max_ratio": GOAL_RATIO,
                "ratio": redis_row["vs_rebuild"],
                "speedup": round(base_row["ms"] / redis_row["ms"], 3),
                "ratio_met": redis_row["vs_rebuild"] <= GOAL_RATIO,
                "round_trips": self.commands["round_trips"],
                "round_trips_met": self.commands["round_trips"] <= GOAL_ROUND_TRIPS,
            },
            "commands": self.commands,
            "memory": self.memory,
        }


async def count_commands(api: Api, admin: redis.Redis) -> dict[str, Any]:
    """Commands of exactly one cold Redis resolve on a started registry."""
    reg = await api.open(with_redis=True)
    try:
        client = reg.tier._client
        before = command_stats(admin)
        with counting_commands(client) as sent:
            ctx = await api.resolve(reg)
        after = command_stats(admin)
        if ctx.manager.source != "redis":
            raise SystemExit("the counted resolve did not come from Redis")
    finally:
        await api.close(reg)
    delta = {name: n - before.get(name, (0, 0))[0] for name, (n, _) in after.items()}
    usec = {name: u - before.get(name, (0, 0))[1] for name, (_, u) in after.items()}
    delta["info"] = delta.get("info", 0) - 1  # our own INFO between the two snapshots
    executed = {name: n for name, n in sorted(delta.items()) if n}
    return {
        "commandstats_delta": executed,
        "server_usec": {name: usec[name] for name in executed},
        "commandstats_total": sum(executed.values()),
        "script_calls": sum(n for name, n in executed.items() if name in SCRIPT_COMMANDS),
        "client_commands": sent,
        "round_trips": len(sent),
    }


def measure_memory(admin: redis.Redis, reg: Any, ids: list[str]) -> dict[str, Any]:
    tier = cast("AsyncRedisTier | SyncRedisTier", reg.tier)
    keys = tier.keyspace.session_for(resolve_identity(SESSION_KEY))
    per_key: dict[str, int] = {}
    for name, key in (("state", keys.state), ("deltas", keys.deltas), ("claims", keys.claims)):
        usage = admin.memory_usage(key, samples=0)
        if usage is not None:
            per_key[name] = int(usage)
    total = sum(per_key.values())
    raw_ids = sum(len(i.encode()) for i in ids)
    forms = {f for i in ids for f in (i, i.replace("_", ""))}
    return {
        "keys": per_key,
        "session_bytes": total,
        "snapshot_value_bytes": int(admin.hstrlen(keys.state, "snap")),
        "deltas_len": int(admin.llen(keys.deltas)),
        "bytes_per_id": round(total / len(ids), 2),
        "raw_id_bytes": raw_ids,
        "raw_bytes_per_id": round(raw_ids / len(ids), 2),
        "raw_bytes_with_forms": sum(len(f.encode()) for f in forms),
    }


async def bench_size(
    tmp: Path, count: int, runs: int, seed: int, api_name: str, url: str, admin: redis.Redis
) -> tuple[SizeResult, Path]:
    root = tmp / f"root-{count}"
    ids = write_session(root, count, seed)
    files = session_files(root)
    journal_bytes = files.paths.journal.stat().st_size
    prefix = new_prefix()
    api = Api(api_name, root, url, prefix)

    truth = files.rebuild().state
    if truth.entry_count != count:
        raise SystemExit(f"journal holds {truth.entry_count} entries, expected {count}")

    # Warm-up: a first resolve with Redis rebuilds from the journal and publishes it.
    warm = await api.open(with_redis=True)
    first = await api.resolve(warm)
    if first.manager.source != "journal":
        raise SystemExit(f"the warm-up resolve came from {first.manager.source!r}")
    await api.close(warm)

    # A started registry whose tier and client the part probes use.
    probe_reg = await api.open(with_redis=True)
    reply = await api.load_reply(probe_reg)
    if not reply:
        raise SystemExit("Redis does not hold the session after the warm-up resolve")
    cwm_bytes, snap_bytes = reply[0][1], reply[1]
    decoded = codec.decode_snapshot(snap_bytes)
    if not same_state(decoded.state, truth):
        raise SystemExit("the snapshot in Redis differs from the journal's state")
    watermark, claims_watermark = decoded.watermark, codec.decode_watermark(cwm_bytes)
    if files.catch_up(watermark).changed:
        raise SystemExit("the snapshot's watermark is behind the journal")

    def check(ctx: Any) -> None:
        state = ctx.manager.snapshot().state
        if not same_state(state, truth):
            raise SystemExit(f"resolve from {ctx.manager.source} differs from the journal")

    async def noop_hop() -> None:
        await asyncio.to_thread(lambda: None)

    tier_client = probe_reg.tier._client

    async def load_round_trip() -> object:
        return await api.load_reply(probe_reg)

    async def ping() -> object:
        return await api._call(tier_client.ping())

    state_key = probe_reg.tier.keyspace.session_for(resolve_identity(SESSION_KEY)).state

    async def hget() -> object:
        return await api._call(tier_client.hget(state_key, "snap"))

    probes: dict[str, Probe] = {
        COLD_JOURNAL: api.cold(False, "journal", check),
        COLD_REDIS: api.cold(True, "redis", check),
        "load_round_trip": timed_async(load_round_trip),
        "ping_round_trip": timed_async(ping),
        "hget_round_trip": timed_async(hget),
        "decode_snapshot": timed(lambda: codec.decode_snapshot(snap_bytes)),
        "catch_up": timed(lambda: files.catch_up(watermark)),
        "catch_up_claims": timed(lambda: files.catch_up_claims(claims_watermark)),
        "record_session": timed(lambda: files.record_session(SESSION_KEY, None)),
        "thread_hop": timed_async(noop_hop),
    }
    times = await interleaved(probes, runs)
    commands = await count_commands(api, admin)
    memory = measure_memory(admin, probe_reg, ids)
    await api.close(probe_reg)
    result = SizeResult(
        entries=count,
        journal_bytes=journal_bytes,
        ids={
            "processed": len(truth.processed),
            "confirmed": len(truth.confirmed),
            "deleted": len(truth.deleted),
        },
        times=times,
        commands=commands,
        memory=memory,
    )
    result.build_rows()
    return result, root


# --- hot resolve ------------------------------------------------------------------------------


class PlainLru:
    """The baseline: an ``OrderedDict`` LRU lookup, as a method call like ``resolve``."""

    def __init__(self, key: str, value: object) -> None:
        self._data: OrderedDict[str, object] = OrderedDict({key: value})

    def get(self, key: str) -> object | None:
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value

    async def aget(self, key: str) -> object | None:
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value


async def bench_hot(root: Path, loops: int, runs: int) -> dict[str, Any]:
    """ns per op of a near-cache hit against the baseline, sync and awaited (journal-only
    registries: a hit never touches the tier)."""
    sync_reg = sync_api.SessionRegistry(root)
    async_reg = AsyncRegistry(root)
    await async_reg.start()
    sync_ctx = sync_reg.resolve(SESSION_KEY)
    await async_reg.resolve(SESSION_KEY)
    plain = PlainLru(SESSION_KEY, sync_ctx)
    key = SESSION_KEY
    rng = range(loops)

    def loop_sync(call: Callable[[str], object]) -> float:
        started = time.perf_counter()
        for _ in rng:
            call(key)
        return time.perf_counter() - started

    async def loop_async(call: Callable[[str], Awaitable[object]]) -> float:
        started = time.perf_counter()
        for _ in rng:
            await call(key)
        return time.perf_counter() - started

    async def run_sync(call: Callable[[str], object]) -> float:
        gc.collect()
        return loop_sync(call)

    async def run_async(call: Callable[[str], Awaitable[object]]) -> float:
        gc.collect()
        return await loop_async(call)

    probes: dict[str, Probe] = {
        "baseline_sync": lambda: run_sync(plain.get),
        "hot_sync": lambda: run_sync(sync_reg.resolve),
        "baseline_async": lambda: run_async(plain.aget),
        "hot_async": lambda: run_async(async_reg.resolve),
    }
    times = await interleaved(probes, runs)
    sync_reg.close()
    await async_reg.close()
    ns = {name: statistics.median(t) * 1e6 / loops for name, t in times.items()}
    rows = []
    for name, label in HOT_ROWS.items():
        baseline = ns["baseline_async" if "async" in name else "baseline_sync"]
        rows.append(
            {
                "key": name,
                "name": label,
                "ns_per_op": round(ns[name], 2),
                "vs_baseline": round(ns[name] / baseline, 3),
            }
        )
    return {"loops": loops, "runs": runs, "rows": rows}


# --- profile ------------------------------------------------------------------------------------


async def profile_cold_redis(root: Path, url: str, resolves: int, out: io.TextIOBase) -> None:
    """``cProfile`` of ``resolves`` cold Redis resolves (only the ``resolve`` calls), with the
    async API (main thread only: the worker threads' file work shows as waiting) and with the
    sync API (everything on one thread)."""
    prefix = new_prefix()
    for api_name in ("async", "sync"):
        api = Api(api_name, root, url, prefix)
        warm = await api.open(with_redis=True)
        await api.resolve(warm)
        await api.close(warm)
        profiler = cProfile.Profile()
        wall = 0.0
        for _ in range(resolves):
            reg = await api.open(with_redis=True)
            gc.collect()
            started = time.perf_counter()
            profiler.enable()
            ctx = await api.resolve(reg)
            profiler.disable()
            wall += time.perf_counter() - started
            if ctx.manager.source != "redis":
                raise SystemExit("a profiled resolve did not come from Redis")
            await api.close(reg)
            del ctx  # freed here, not inside the next profiled call
        print(
            f"\ncProfile: {resolves} cold Redis resolves, {api_name} API, "
            f"{wall / resolves * 1e3:.2f} ms per resolve under the profiler",
            file=out,
        )
        for sort, limit in (("tottime", 18), ("cumulative", 30)):
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            stats.sort_stats(sort).print_stats(limit)
            body = text.getvalue()
            start = body.find("   ncalls")
            print(f"-- by {sort} (times are totals over {resolves} resolves)", file=out)
            print(body[start:].rstrip(), file=out)


# --- output -------------------------------------------------------------------------------------


def machine_info(server_version: str, server_name: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "server": f"{server_name} {server_version}",
        "redis_py": metadata.version("redis"),
        "hiredis": redis.utils.HIREDIS_AVAILABLE,
        "msgpack": metadata.version("msgpack"),
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['platform']}\nPython {m['python']}, {m['server']} ({report['server_where']}), "
        f"redis-py {m['redis_py']}, hiredis {'yes' if m['hiredis'] else 'no'}, "
        f"msgpack {m['msgpack']}; cold rows: {report['api']} API"
    )
    for size in report["sizes"]:
        ids = size["ids"]
        print(
            f"\n{size['entries']:,} entries, journal {size['journal_bytes'] / 1e6:.2f} MB "
            f"({ids['processed']:,} processed / {ids['confirmed']:,} confirmed / "
            f"{ids['deleted']:,} deleted strings); median of {report['runs']} interleaved runs"
        )
        header = f"  {'what':56} {'ms':>9} {'p10 ms':>9} {'vs rebuild':>11} {'round trips':>12}"
        print(header)
        print("  " + "-" * (len(header) - 2))
        for row in size["rows"]:
            label = ROWS[row["key"]]
            base = size["rows"][0]["ms"]
            ratio = "1.00" if row["key"] == COLD_JOURNAL else ratio_text(row["ms"], base)
            trips = "" if row["round_trips"] is None else str(row["round_trips"])
            print(f"  {label:56} {row['ms']:>9.3f} {row['p10_ms']:>9.3f} {ratio:>11} {trips:>12}")
        goal, cmds, mem = size["goal"], size["commands"], size["memory"]
        executed = ", ".join(
            f"{n} {name.upper()} ({cmds['server_usec'][name]} us)"
            for name, n in cmds["commandstats_delta"].items()
        )
        print(
            f"  goal <= 1/10 of the rebuild in 1 round trip: "
            f"{'met' if goal['ratio_met'] else 'MISSED'} (speed-up {goal['speedup']:.1f}x), "
            f"round trips {goal['round_trips']} "
            f"({'met' if goal['round_trips_met'] else 'MISSED'})"
        )
        print(
            f"  commands per cold Redis resolve (INFO commandstats delta, server time; a "
            f"script's own commands are counted too): {executed or '-'}\n"
            f"  sent by the registry's client: "
            f"{', '.join(c.upper() for c in cmds['client_commands']) or '-'} "
            f"= {cmds['round_trips']} round trip(s)"
        )
        print(
            f"  Redis memory: {mem['session_bytes'] / 1024:.1f} KiB per session "
            f"({', '.join(f'{k} {v / 1024:.1f} KiB' for k, v in mem['keys'].items())}; "
            f"snapshot value {mem['snapshot_value_bytes'] / 1024:.1f} KiB, "
            f"{mem['deltas_len']} deltas), {mem['bytes_per_id']:.1f} B per journal id "
            f"(raw id {mem['raw_bytes_per_id']:.1f} B)"
        )
    sizes = report["sizes"]
    print("\ncold resolve, summary")
    print(f"  {'entries':>8} {'rebuild ms':>11} {'Redis ms':>9} {'ratio':>7} {'trips':>6}  goal")
    for size in sizes:
        base, red = size["rows"][0]["ms"], size["rows"][1]["ms"]
        goal = size["goal"]
        ok = goal["ratio_met"] and goal["round_trips_met"]
        print(
            f"  {size['entries']:>8,} {base:>11.3f} {red:>9.3f} {ratio_text(red, base):>7} "
            f"{goal['round_trips']:>6}  {'met' if ok else 'MISSED'}"
        )
    hot = report["hot"]
    print(f"\nhot resolve (near-cache hit), median of {hot['runs']} runs of {hot['loops']:,} calls")
    print(f"  {'what':52} {'ns/op':>9} {'vs baseline':>12}")
    for row in hot["rows"]:
        print(f"  {row['name']:52} {row['ns_per_op']:>9.1f} {row['vs_baseline']:>11.2f}x")


async def run(args: argparse.Namespace, url: str, where: str) -> dict[str, Any]:
    admin = redis.Redis.from_url(url)
    try:
        info = admin.info("server")
        server_name = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("valkey_version") or info.get("redis_version"))
        sizes: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="bench-resolve-") as tmp_name:
            tmp = Path(tmp_name)
            largest: Path | None = None
            for count in args.entries:
                result, root = await bench_size(
                    tmp, count, args.runs, args.seed, args.api, url, admin
                )
                sizes.append(result.as_json())
                if count == max(args.entries):
                    largest = root
            assert largest is not None
            hot = await bench_hot(largest, args.hot_loops, args.runs)
            if args.profile:
                out = cast(io.TextIOBase, sys.stderr if args.json else sys.stdout)
                await profile_cold_redis(largest, url, args.profile, out)
    finally:
        for prefix in PREFIXES:
            for key in admin.scan_iter(match=f"{prefix}:*", count=1000):
                admin.delete(key)
        admin.close()
    return {
        "machine": machine_info(version, server_name),
        "server_where": where,
        "api": args.api,
        "runs": args.runs,
        "sizes": sizes,
        "hot": hot,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without --redis-url an embedded server is started on a free loopback port.",
    )
    parser.add_argument(
        "--entries",
        type=int,
        action="append",
        metavar="N",
        help="session size in journal entries (repeatable; default 500 and 20000)",
    )
    parser.add_argument("--runs", type=int, default=15, help="timed runs per figure (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--redis-url", help="use this server instead of starting one (keys get a random prefix)"
    )
    parser.add_argument(
        "--api",
        choices=("async", "sync"),
        default="async",
        help="API of the cold-resolve rows (default async)",
    )
    parser.add_argument(
        "--hot-loops", type=int, default=100_000, help="calls per hot-resolve run (default 100k)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile N cold Redis resolves of the largest size (to stderr with --json)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    args = parser.parse_args(argv)
    args.entries = args.entries or [500, 20_000]
    if min(args.entries) < 1 or args.runs < 1 or args.hot_loops < 1 or args.profile < 0:
        parser.error("--entries, --runs and --hot-loops must be positive")

    if args.redis_url:
        report = asyncio.run(run(args, args.redis_url, "given by --redis-url"))
    else:
        with RedisServerProcess() as server:
            report = asyncio.run(run(args, server.url, f"embedded, port {server.port}"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
