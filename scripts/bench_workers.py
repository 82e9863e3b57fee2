#!/usr/bin/env python3
"""Benchmark the write path and many worker processes over one Redis and one data root.

Measurements (each an importable function; ``scripts/benchmark.py`` runs them all):

* :func:`bench_writes`: ``append_entries`` (batches of 1, 10 and 100), ``mark_offload_status``
  and ``claim``, one async registry, per fsync policy; against a ``PING`` round trip and an
  ``os.fsync`` of a small write on the data root's filesystem, measured in the same run.
* :func:`bench_staleness`: the staleness window across OS processes under load: a writer
  process appends ids and records (``time.monotonic``, system-wide on Linux) when each append
  returned; reader processes poll ``resolve`` + membership and record when each id became
  visible; background processes add traffic on other sessions meanwhile.
* :func:`bench_claims`: N processes claiming the same ids at once; claims/s, and a check that
  each id was won exactly once.
* :func:`bench_scaling`: total ops/s (resolve + append + claim on shared sessions) for 1 to
  N worker processes: the cost curve.

Worker processes are started with ``spawn`` (a clean interpreter each, as real workers are)
and line up on a barrier, so start-up is never timed.

    python scripts/bench_workers.py --quick      # every measurement, small, on an embedded Redis
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from offload_registry import SessionRegistry
from offload_registry.testing.server import RedisServerProcess

SUMMARY = "summary of a tool call, a few dozen words long, as an agent would keep it " * 3
BARRIER_TIMEOUT = 120.0
SPAWN = mp.get_context("spawn")


def _entry(tool_call_id: str) -> dict[str, Any]:
    return {"tool_call_id": tool_call_id, "summary": SUMMARY, "tool_call": "read_file"}


def _stats_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    cuts = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return {
        "n": len(ms),
        "p50_ms": round(cuts[49], 4),
        "p99_ms": round(cuts[98], 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "max_ms": round(ms[-1], 4),
    }


# --- write path, one process -------------------------------------------------------------------


def fsync_seconds(directory: Path, count: int) -> list[float]:
    """``os.fsync`` after a 100-byte append, ``count`` times, in a temp file in ``directory``
    (the same filesystem as the data root): the floor of a durable write on this disk."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-probe-") as probe:
        fd = probe.fileno()
        times = []
        for _ in range(count):
            os.write(fd, b"x" * 99 + b"\n")
            started = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    return times


async def ping_seconds(url: str, count: int) -> list[float]:
    """A ``PING`` round trip on a redis-py asyncio client (with hiredis when installed)."""
    client = aredis.Redis.from_url(url)
    try:
        await client.ping()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await client.ping()
            times.append(time.perf_counter() - started)
        return times
    finally:
        await client.aclose()


async def _timed_ops(ops: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    await op(-1)  # warm-up (not timed)
    times = []
    for i in range(ops):
        started = time.perf_counter()
        await op(i)
        times.append(time.perf_counter() - started)
    return times


async def bench_writes(root: Path, url: str, ops: int, mark_entries: int = 500) -> dict[str, Any]:
    """ms per op and ops/s of each write, per fsync policy, with the two baselines.

    ``mark_offload_status`` rewrites the whole journal: it is measured on a session of
    ``mark_entries`` entries, marking one id per call (alternating ``True``/``"deleted"``)."""
    root.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "ops": ops,
        "mark_session_entries": mark_entries,
        "ping": _stats_ms(await ping_seconds(url, max(ops, 50))),
        "fsync": _stats_ms(fsync_seconds(root, max(ops, 50))),
        "policies": {},
    }
    for policy in ("always", "never"):
        prefix = f"bench-writes-{uuid.uuid4().hex[:8]}"
        rows: dict[str, Any] = {}
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix, fsync=policy) as reg:
            m = (await reg.resolve(f"agent:main:writes-{policy}")).manager
            for batch in (1, 10, 100):
                n = max(2, ops // max(1, batch // 10))

                async def append(i: int, batch: int = batch, m: Any = m) -> object:
                    tag = f"b{batch}_{i}_{uuid.uuid4().hex[:8]}"
                    return await m.append_entries([_entry(f"{tag}_{k}") for k in range(batch)])

                rows[f"append_{batch}"] = _stats_ms(await _timed_ops(n, append))

            marked = (await reg.resolve(f"agent:main:marks-{policy}")).manager
            await marked.append_entries([_entry(f"mark_{k}") for k in range(mark_entries)])

            async def mark(i: int, marked: Any = marked) -> object:
                status: Any = True if i % 2 else "deleted"
                return await marked.mark_offload_status({f"mark_{i % mark_entries}": status})

            rows["mark"] = _stats_ms(await _timed_ops(ops, mark))

            async def claim(i: int, m: Any = m) -> object:
                won = await m.claim([f"claim_{i}_{uuid.uuid4().hex[:8]}"])
                if len(won) != 1:
                    raise SystemExit("an uncontended claim of a fresh id was not won")
                return won

            rows["claim"] = _stats_ms(await _timed_ops(ops, claim))
        for row in rows.values():
            row["ops_per_s"] = round(1e3 / row["mean_ms"], 1)
        result["policies"][policy] = rows
    return result


# --- processes ---------------------------------------------------------------------------------


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _wait(barrier: Any) -> None:
    await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)


def staleness_writer(
    url: str, root: str, prefix: str, key: str, n: int, gap: float, acked: Any, barrier: Any
) -> None:
    async def main() -> None:
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
            m = (await reg.resolve(key)).manager
            await _wait(barrier)
            await asyncio.sleep(0.3)  # every reader is subscribed and polling
            for i in range(n):
                await m.append_entries([_entry(f"st_{i}")])
                acked[i] = time.monotonic()
                await asyncio.sleep(gap)

    _run(main())


def staleness_reader(
    url: str, root: str, prefix: str, key: str, n: int, poll: float, seen: Any, barrier: Any
) -> None:
    async def main() -> None:
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
            await reg.resolve(key)
            await _wait(barrier)
            deadline = time.monotonic() + 60 + n * 0.05
            i = 0
            while i < n and time.monotonic() < deadline:
                ids = (await reg.resolve(key)).manager.processed_tool_call_ids
                now = time.monotonic()
                while i < n and f"st_{i}" in ids:
                    seen[i] = now
                    i += 1
                await asyncio.sleep(poll)

    _run(main())


def traffic_worker(
    url: str, root: str, prefix: str, keys: list[str], seconds: float, barrier: Any, out: Any
) -> None:
    """Agent-like traffic for ``seconds``: resolve, append one entry and claim one id, round
    robin over ``keys``. Puts ``(ops, elapsed)`` on ``out``."""

    async def main() -> None:
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
            for key in keys:
                await reg.resolve(key)
            await _wait(barrier)
            tag = uuid.uuid4().hex[:8]
            ops = i = 0
            started = time.perf_counter()
            end = started + seconds
            while time.perf_counter() < end:
                key = keys[i % len(keys)]
                m = (await reg.resolve(key)).manager
                await m.append_entries([_entry(f"t_{tag}_{i}")])
                await m.claim([f"c_{tag}_{i}"])
                ops += 3
                i += 1
            out.put((ops, time.perf_counter() - started))

    _run(main())


def claim_worker(
    url: str, root: str, prefix: str, key: str, ids: list[str], batch: int, barrier: Any, out: Any
) -> None:
    async def main() -> None:
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
            m = (await reg.resolve(key)).manager
            await _wait(barrier)
            started = time.monotonic()
            won: list[str] = []
            for at in range(0, len(ids), batch):
                won.extend(await m.claim(ids[at : at + batch]))
            out.put((won, started, time.monotonic()))

    _run(main())


def _join(procs: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
    failed = [p for p in procs if p.exitcode != 0]
    for proc in failed:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    if failed:
        raise SystemExit(f"worker processes failed: {[(p.name, p.exitcode) for p in failed]}")


def bench_staleness(
    root: Path, url: str, writes: int, readers: int = 2, background: int = 1
) -> dict[str, Any]:
    """p50/p99 of the window from a write returning in the writer process to each reader
    process's ``resolve`` showing it (reader polls every 0.5 ms, so up to 0.5 ms of each
    figure is the poll interval), with ``background`` traffic processes running meanwhile."""
    prefix = f"bench-stale-{uuid.uuid4().hex[:8]}"
    key, gap, poll = "agent:main:staleness", 0.005, 0.0005
    acked = SPAWN.Array("d", writes, lock=False)
    seen = [SPAWN.Array("d", writes, lock=False) for _ in range(readers)]
    barrier = SPAWN.Barrier(1 + readers + background + 1)
    out = SPAWN.Queue()
    busy_seconds = 1.0 + writes * (gap + 0.004)
    procs = [
        SPAWN.Process(
            target=staleness_writer,
            args=(url, str(root), prefix, key, writes, gap, acked, barrier),
            name="writer",
        )
    ]
    procs += [
        SPAWN.Process(
            target=staleness_reader,
            args=(url, str(root), prefix, key, writes, poll, s, barrier),
            name=f"reader-{r}",
        )
        for r, s in enumerate(seen)
    ]
    procs += [
        SPAWN.Process(
            target=traffic_worker,
            args=(url, str(root), prefix, [f"agent:bg:s{b}"], busy_seconds, barrier, out),
            name=f"background-{b}",
        )
        for b in range(background)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(BARRIER_TIMEOUT)
    background_ops = [out.get(timeout=BARRIER_TIMEOUT) for _ in range(background)]
    _join(procs, 120 + writes * 0.05)
    windows, early, missing = [], 0, 0
    for s in seen:
        for i in range(writes):
            if s[i] == 0.0 or acked[i] == 0.0:
                missing += 1
                continue
            delta = s[i] - acked[i]
            early += delta < 0
            windows.append(max(0.0, delta))
    if not windows:
        raise SystemExit("no write became visible to any reader")
    return {
        "processes": {"writers": 1, "readers": readers, "background": background},
        "writes": writes,
        "poll_ms": poll * 1e3,
        "write_gap_ms": gap * 1e3,
        "windows": _stats_ms(windows),
        "seen_before_ack": early,
        "missing": missing,
        "background_ops_per_s": round(sum(o for o, _ in background_ops) / busy_seconds, 1),
    }


def bench_claims(root: Path, url: str, ids: int, procs: int = 4, batch: int = 10) -> dict[str, Any]:
    """``procs`` processes claim the same ``ids`` ids, in the same order, in batches of
    ``batch``: claims/s (ids decided per second) and a check that each id is won once."""
    prefix = f"bench-claims-{uuid.uuid4().hex[:8]}"
    key = "agent:main:contended"
    wanted = [f"toolu_claim_{i:06d}" for i in range(ids)]
    barrier = SPAWN.Barrier(procs + 1)
    out = SPAWN.Queue()
    workers = [
        SPAWN.Process(
            target=claim_worker,
            args=(url, str(root), prefix, key, wanted, batch, barrier, out),
            name=f"claimer-{p}",
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait(BARRIER_TIMEOUT)
    results = [out.get(timeout=BARRIER_TIMEOUT + ids) for _ in range(procs)]
    _join(workers, 60)
    won = [i for w, _, _ in results for i in w]
    started = min(s for _, s, _ in results)
    ended = max(e for _, _, e in results)
    once = len(won) == len(set(won)) == ids and set(won) == set(wanted)
    if not once:
        raise SystemExit(
            f"claims: {len(won)} wins for {ids} ids ({len(set(won))} distinct): not each once"
        )
    seconds = ended - started
    return {
        "processes": procs,
        "ids": ids,
        "batch": batch,
        "seconds": round(seconds, 4),
        "claims_per_s": round(ids / seconds, 1),
        "claim_calls_per_s": round(procs * -(-ids // batch) / seconds, 1),
        "won_per_process": [len(w) for w, _, _ in results],
        "each_won_once": once,
    }


def bench_scaling(
    root: Path, url: str, counts: list[int], seconds: float, sessions: int = 8
) -> list[dict[str, Any]]:
    """Total ops/s (resolve, append 1, claim 1 per round, round robin over ``sessions`` shared
    sessions) with 1..N worker processes, ``seconds`` each: the cost curve."""
    points = []
    for n in counts:
        prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
        keys = [f"agent:main:shared-{s}" for s in range(sessions)]
        barrier = SPAWN.Barrier(n + 1)
        out = SPAWN.Queue()
        workers = [
            SPAWN.Process(
                target=traffic_worker,
                args=(
                    url,
                    str(root),
                    prefix,
                    keys[p % sessions :] + keys[: p % sessions],
                    seconds,
                    barrier,
                    out,
                ),
                name=f"worker-{p}",
            )
            for p in range(n)
        ]
        for w in workers:
            w.start()
        barrier.wait(BARRIER_TIMEOUT)
        results = [out.get(timeout=BARRIER_TIMEOUT + seconds) for _ in range(n)]
        _join(workers, 60)
        total = sum(ops for ops, _ in results)
        wall = max(elapsed for _, elapsed in results)
        points.append(
            {
                "processes": n,
                "ops": total,
                "ops_per_s": round(total / wall, 1),
                "ops_per_s_per_process": round(total / wall / n, 1),
            }
        )
    base = points[0]["ops_per_s"]
    for p in points:
        p["vs_one_process"] = round(p["ops_per_s"] / base, 3)
    return points


# --- command line --------------------------------------------------------------------------------


def run_all(url: str, tmp: Path, quick: bool) -> dict[str, Any]:
    return {
        "writes": asyncio.run(bench_writes(tmp / "writes", url, 10 if quick else 200)),
        "staleness": bench_staleness(tmp / "stale", url, 20 if quick else 300),
        "claims": bench_claims(tmp / "claims", url, 100 if quick else 2000),
        "scaling": bench_scaling(
            tmp / "scale", url, [1, 2] if quick else [1, 2, 4, 8], 0.3 if quick else 2.0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, RedisServerProcess() as srv:
        report = run_all(srv.url, Path(tmp), args.quick)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
