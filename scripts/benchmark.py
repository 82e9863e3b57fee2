#!/usr/bin/env python3
"""The benchmark command: every figure of the README, each against a baseline measured in the
same run, on a real ``redis-server`` started on a free loopback port (never a Redis already
running on this machine), printed as one table and written as JSON with ``--json PATH``.

Rows (figure | baseline measured in the same run -> goal):

1. hot ``resolve`` (near-cache hit), async and sync API | an ``OrderedDict`` LRU lookup with
   ``move_to_end``, called (or awaited) the same way -> at most 1.5x it, and under 1 us;
2. cold ``resolve`` from Redis in a live worker (started, subscribed, the session evicted from
   the near cache only; ``bench_cold``), async and sync API: 500 entries | one redis-py
   ``PING`` -> at most 3x; 20,000 entries | our full rebuild from the journal in the same kind
   of live worker -> at least 10x faster; with 2 CPU-bound processes beside it | itself idle
   just before -> at most 2x; a fresh process's first resolve and its parts (reported); the
   cold resolve with 1,000 to 100,000 sessions held in Redis | ``PING`` (reported); the round
   trips of one cold resolve (``INFO commandstats`` deltas) -> 1;
3. journal rebuild (``scan_journal`` + id sets) | stdlib ``json`` line by line, and
   ``orjson`` parse only -> faster than stdlib, within 1.3x of orjson;
4. ``warm`` of 10,000 sessions x 100 entries | parse-only time of the same journals -> at
   most 2x, for 1, 2 and 4 processes when ``warm`` has such an option (else 1, said so);
5. ``append_entries`` (1, 10, 100), ``mark_offload_status``, ``claim`` per fsync policy |
   a ``PING`` round trip and an ``os.fsync`` on the data root's filesystem (reported);
6. staleness window across processes under load (writer -> reader's ``resolve``) -> p99
   at most 10 ms;
7. claims with 4 contending processes (each id won once, checked) and total ops/s for 1 to
   8 worker processes (reported);
8. Redis memory per id (``MEMORY USAGE`` of one session; ``used_memory`` growth with many
   sessions held) | the raw bytes of the ids -> at most 2x.

Then the growth table: cold resolve from the journal, from Redis, and the ``PING`` floor at
100 to 100,000 entries per session (``--growth-sizes``); ``--chart [PATH.svg]`` draws it
log-log (matplotlib, the ``bench`` extra; default ``docs/cold-resolve.svg``). ``--profile cold``
only profiles the 500-entry cold resolve from Redis in a live worker with pyinstrument and
prints where the time goes.

It imports the measuring functions of ``bench_resolve``, ``bench_cold``, ``bench_journal``,
``bench_warm`` and ``bench_workers`` (each still runnable alone); non-public library names
come only through ``bench_internals``. The default run stays under 15 minutes on 2 cores;
``--quick`` is a smoke run of seconds (tiny sizes: its figures mean nothing).

    python scripts/benchmark.py                       # table
    python scripts/benchmark.py --json bench.json --chart docs/cold-resolve.svg
    python scripts/benchmark.py --profile cold        # where a cold resolve's time goes
    python scripts/benchmark.py --json bench.json     # table, and the same as JSON
    python scripts/benchmark.py --quick --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_chart
import bench_cold
import bench_journal
import bench_resolve
import bench_warm
import bench_workers
import redis

from offload_registry.testing.server import RedisServerProcess

SECTIONS = ("resolve", "journal", "warm", "writes", "staleness", "claims", "scaling")

HOT_GOAL_RATIO, HOT_GOAL_NS = 1.5, 1000.0
COLD_GOAL_SPEEDUP, COLD_GOAL_TRIPS = 10.0, 1
COLD_GOAL_PINGS = 3.0  # a cold resolve from Redis (small session) within 3 PING round trips
BUSY_GOAL_RATIO = 2.0  # with CPU-bound processes beside it: within 2x its idle median
MEMORY_GOAL_RATIO = 2.0  # Redis bytes per id within 2x the raw id bytes
DEFAULT_CHART = Path(__file__).resolve().parents[1] / "docs" / "cold-resolve.svg"
ORJSON_GOAL_RATIO = 1.3
WARM_GOAL_RATIO = 2.0
STALENESS_GOAL_P99_MS = 10.0


# --- sizes -------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """What to measure, by mode: --quick (smoke, seconds) or the default (under 15 minutes
    on 2 cores; the sizes are flags)."""
    if args.quick:
        return {
            "entries": [100, 1000],
            "runs": 2,
            "hot_loops": 2000,
            "live": (100, 1000),
            "cold_runs": 2,
            "live_growth": [100, 1000],
            "busy_processes": 2,
            "fresh_runs": 1,
            "held": [10, 100],
            "held_entries": 20,
            "warm": (50, 20),
            "warm_processes": [1, 2],
            "growth": [(8, 100), (1, 1000)],
            "write_ops": 5,
            "stale_writes": 15,
            "claim_ids": 100,
            "scaling": [1, 2],
            "scaling_seconds": 0.3,
        }
    return {
        "entries": [500, 20_000],
        "runs": args.runs,
        "hot_loops": 50_000,
        "live": (500, 20_000),
        "cold_runs": args.cold_runs,
        "live_growth": args.growth_sizes,
        "busy_processes": 2,
        "fresh_runs": args.fresh_runs,
        "held": args.held_sessions,
        "held_entries": args.held_entries,
        "warm": (args.warm_sessions, 100),
        "warm_processes": [1, 2, 4],
        "growth": [(80, 500), (2, 20_000)],
        "write_ops": 200,
        "stale_writes": 400,
        "claim_ids": 2_000,
        "scaling": [1, 2, 4, 8],
        "scaling_seconds": 2.0,
    }


# --- measurements (each returns plain JSON) -------------------------------------------------------


async def measure_resolve(tmp: Path, url: str, p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Hot and cold resolve: ``sizes`` (a new registry per run: the parts, the round trips and
    the memory of ``bench_resolve``), ``hot``, and the live-worker figures of ``bench_cold``:
    ``live`` (per size: Redis, journal, PING), ``busy``, ``fresh`` and ``held``."""
    admin = redis.Redis.from_url(url)
    try:
        sizes, largest = [], None
        for count in p["entries"]:
            result, root = await bench_resolve.bench_size(
                tmp, count, p["runs"], seed, "async", url, admin
            )
            sizes.append(result.as_json())
            largest = root
        assert largest is not None
        hot = await bench_resolve.bench_hot(largest, p["hot_loops"], max(p["runs"], 5))
    finally:
        admin.close()
    small, large = p["live"]
    live_sizes = sorted({small, large, *p["live_growth"]})
    cold = tmp / "cold"
    runs = p["cold_runs"]
    live = await bench_cold.bench_live(cold, url, live_sizes, runs, seed)
    print("[benchmark] resolve: busy processes, fresh process, held sessions", file=sys.stderr)
    busy = await bench_cold.bench_busy(cold, url, small, runs, seed, p["busy_processes"])
    fresh = await bench_cold.bench_fresh(cold, url, small, p["fresh_runs"], seed)
    held = await bench_cold.bench_held(cold, url, p["held"], p["held_entries"], runs, seed)
    return {
        "sizes": sizes,
        "hot": hot,
        "live": live,
        "live_small": small,
        "live_large": large,
        "busy": busy,
        "fresh": fresh,
        "held": held,
    }


def measure_journal(tmp: Path, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    out = []
    for count in p["entries"]:
        path = tmp / f"journal-{count}" / f"offload-bench-{count}.jsonl"
        path.parent.mkdir(parents=True)
        bench_journal.write_journal(path, count, seed)
        out.append(bench_journal.bench_one(path, count, p["runs"], with_node=False))
    return out


def warm_option() -> str | None:
    """The name of ``warm``'s parallelism option: ``processes`` (``warm --processes N``,
    ``ops.warm_processes``)."""
    return "processes" if hasattr(bench_warm, "warm_twice_with_processes") else None


def warm_once(
    tmp: Path, url: str, sessions: int, entries: int, processes: int | None = None
) -> dict[str, Any]:
    """Warm a generated root into an empty keyspace (its own prefix), with ``processes``
    through warm's own option when given (see :func:`warm_option`)."""
    root = tmp / f"warm-{sessions}x{entries}"
    size = bench_warm.generate(root, sessions, entries) if not root.exists() else 0
    bench_warm.parse_only(root)  # page cache warm: both passes read from memory
    count, parse_seconds = bench_warm.parse_only(root)
    prefix = f"bench-warm-{processes or 1}p"
    if warm_option() and processes:
        first, second = asyncio.run(
            bench_warm.warm_twice_with_processes(root, url, prefix, processes)
        )
    else:
        first, second = asyncio.run(bench_warm.warm_twice(root, url, prefix=prefix))
    if first.published != sessions or second.skipped != sessions:
        raise SystemExit(f"warm published {first.published}, then skipped {second.skipped}")
    return {
        "processes": processes or 1,
        "sessions": sessions,
        "entries_per_session": entries,
        "entries": count,
        "megabytes": round(size / 1e6, 1),
        "parse_seconds": round(parse_seconds, 4),
        "warm_seconds": round(first.seconds, 4),
        "warm_vs_parse": round(first.seconds / parse_seconds, 3),
        "parse_entries_per_s": round(count / parse_seconds),
        "warm_entries_per_s": round(first.entries / first.seconds),
        "warm_us_per_entry": round(first.seconds / first.entries * 1e6, 3),
        "second_warm_seconds": round(second.seconds, 4),
    }


def measure_warm(tmp: Path, url: str, p: dict[str, Any]) -> dict[str, Any]:
    """Warm against parse-only: the main root with 1, 2, 4 processes when ``warm`` has a
    processes option (else 1 only, said in the output), and the growth roots."""
    option = warm_option()
    counts = p["warm_processes"] if option else [1]
    by_processes = [warm_once(tmp, url, *p["warm"], processes=n) for n in counts]
    growth = [warm_once(tmp, url, s, e) for s, e in p["growth"]]
    return {
        "main": by_processes[0],
        "by_processes": by_processes,
        "processes_option": option,
        "growth": growth,
    }


def profiled(directory: str | None, name: str, measure: Callable[[], Any]) -> Any:
    """``measure()``, under pyinstrument when ``--profile-sections DIR`` is given (the ``bench``
    extra): its report goes to ``DIR/<section>.txt``. Only this process's main thread is
    sampled (worker threads show as waiting; worker processes are not profiled)."""
    if directory is None:
        return measure()
    try:
        from pyinstrument import Profiler  # noqa: PLC0415 - optional (the bench extra)
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: pip install -e '.[bench]'") from None
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        return measure()
    finally:
        profiler.stop()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.txt").write_text(profiler.output_text(unicode=False, color=False))


# --- the table ---------------------------------------------------------------------------------


def _row(
    row: int,
    name: str,
    value: float,
    unit: str,
    *,
    baseline: str = "",
    baseline_value: float | None = None,
    ratio: float | None = None,
    per: str = "",
    goal: str = "",
    met: bool | None = None,
) -> dict[str, Any]:
    """One row; ``ratio`` reads as ``f"{ratio}x {per}"`` (``per``: "faster" when it is the
    baseline over the figure, else what the figure is a multiple of)."""
    return {
        "row": row,
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "ratio_text": "" if ratio is None else f"{ratio:.2f}x {per}".strip(),
        "goal": goal,
        "met": met,
    }


def build_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "resolve" in d:
        hot = {r["key"]: r for r in d["resolve"]["hot"]["rows"]}
        for api in ("async", "sync"):
            ns, base = hot[f"hot_{api}"]["ns_per_op"], hot[f"baseline_{api}"]["ns_per_op"]
            ratio = ns / base
            rows.append(
                _row(
                    1,
                    f"hot resolve, {api} API",
                    ns,
                    "ns",
                    baseline=f"OrderedDict LRU, {'awaited' if api == 'async' else 'called'}",
                    baseline_value=base,
                    ratio=round(ratio, 2),
                    per="the baseline",
                    goal="<= 1.5x and < 1 us",
                    met=ratio <= HOT_GOAL_RATIO and ns < HOT_GOAL_NS,
                )
            )
        rows += cold_rows(d["resolve"])
    for result in d.get("journal", []):
        by = {r["name"]: r["ms"] for r in result["rows"]}
        rebuild = by["rebuild via scan_journal (what resolve does)"]
        stdlib = by[bench_journal.BASELINE]
        orj = by["orjson parse only (split + loads, kept)"]
        n = result["entries"]
        rows.append(
            _row(
                3,
                f"journal rebuild, {n:,} entries",
                rebuild,
                "ms",
                baseline="stdlib json line by line",
                baseline_value=stdlib,
                ratio=round(stdlib / rebuild, 2),
                per="faster",
                goal="faster than stdlib",
                met=rebuild < stdlib,
            )
        )
        rows.append(
            _row(
                3,
                f"journal rebuild, {n:,} entries",
                rebuild,
                "ms",
                baseline="orjson parse only",
                baseline_value=orj,
                ratio=round(rebuild / orj, 2),
                per="orjson",
                goal="<= 1.3x orjson",
                met=rebuild <= ORJSON_GOAL_RATIO * orj,
            )
        )
    if "warm" in d:
        one_only = "" if d["warm"].get("processes_option") else " (warm has no processes option)"
        for w in [*d["warm"]["by_processes"], *d["warm"]["growth"]]:
            rows.append(
                _row(
                    4,
                    f"warm, {w['sessions']:,} sessions x {w['entries_per_session']:,} entries, "
                    f"{w['processes']} process{'es' if w['processes'] > 1 else ''}{one_only}",
                    w["warm_seconds"],
                    "s",
                    baseline="parse only, same journals",
                    baseline_value=w["parse_seconds"],
                    ratio=w["warm_vs_parse"],
                    per="parse",
                    goal="<= 2x parse",
                    met=w["warm_vs_parse"] <= WARM_GOAL_RATIO,
                )
            )
    if "writes" in d:
        w = d["writes"]
        for policy, ops in w["policies"].items():
            for op, s in ops.items():
                rows.append(
                    _row(
                        5,
                        f"{op.replace('_', ' ')} (fsync={policy}), {s['ops_per_s']:,.0f} ops/s",
                        s["p50_ms"],
                        "ms",
                        baseline="PING" if policy == "never" else "fsync",
                        baseline_value=w["ping" if policy == "never" else "fsync"]["p50_ms"],
                        ratio=round(
                            s["p50_ms"] / w["ping" if policy == "never" else "fsync"]["p50_ms"], 2
                        ),
                        per="PING" if policy == "never" else "fsync",
                        goal="reported",
                    )
                )
    if "staleness" in d:
        s = d["staleness"]
        procs = s["processes"]
        who = f"{procs['readers']} readers, {procs['background']} background"
        for q in ("p50", "p99"):
            rows.append(
                _row(
                    6,
                    f"staleness {q}, processes: 1 writer, {who}",
                    s["windows"][f"{q}_ms"],
                    "ms",
                    goal="p99 <= 10 ms" if q == "p99" else "",
                    met=s["windows"]["p99_ms"] <= STALENESS_GOAL_P99_MS if q == "p99" else None,
                )
            )
    if "claims" in d:
        c = d["claims"]
        rows.append(
            _row(
                7,
                f"claims, {c['processes']} contending processes, batches of {c['batch']}",
                c["claims_per_s"],
                "ids/s",
                goal="each id won once",
                met=c["each_won_once"],
            )
        )
    for point in d.get("scaling", []):
        rows.append(
            _row(
                7,
                f"ops/s, {point['processes']} worker process(es)",
                point["ops_per_s"],
                "ops/s",
                baseline="1 process",
                baseline_value=d["scaling"][0]["ops_per_s"],
                ratio=point["vs_one_process"],
                per="one process",
                goal="reported",
            )
        )
    if "resolve" in d:
        for size in d["resolve"]["sizes"]:
            mem = size["memory"]
            rows.append(
                _row(
                    8,
                    f"Redis memory per id, {size['entries']:,} entries "
                    f"({mem['session_bytes'] / 1024:,.0f} KiB per session)",
                    mem["bytes_per_id"],
                    "B",
                    baseline="raw id bytes",
                    baseline_value=mem["raw_bytes_per_id"],
                    ratio=round(mem["bytes_per_id"] / mem["raw_bytes_per_id"], 2),
                    per="raw",
                    goal="<= 2x raw",
                    met=mem["bytes_per_id"] <= MEMORY_GOAL_RATIO * mem["raw_bytes_per_id"],
                )
            )
        rows += held_memory_rows(d["resolve"]["held"])
    return rows


def _live(d: dict[str, Any], entries: int) -> dict[str, Any]:
    return next(p for p in d["live"] if p["entries"] == entries)


def cold_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Row 2: cold resolve in a live worker (against PING, the rebuild, itself idle), a fresh
    process, sessions held in Redis, and the round trips of one cold resolve."""
    rows: list[dict[str, Any]] = []
    small, large = _live(r, r["live_small"]), _live(r, r["live_large"])
    for api in bench_cold.APIS:
        s = small["apis"][api]
        rows.append(
            _row(
                2,
                f"cold resolve from Redis, {small['entries']:,} entries, live worker, {api} API",
                s["redis"]["median_ms"],
                "ms",
                baseline=f"PING, redis-py {'asyncio' if api == 'async' else 'blocking'}",
                baseline_value=s["ping"]["median_ms"],
                ratio=s["redis_vs_ping"],
                per="PING",
                goal="<= 3x PING",
                met=s["redis_vs_ping"] <= COLD_GOAL_PINGS,
            )
        )
    for api in bench_cold.APIS:
        b = large["apis"][api]
        rows.append(
            _row(
                2,
                f"cold resolve from Redis, {large['entries']:,} entries, live worker, {api} API",
                b["redis"]["median_ms"],
                "ms",
                baseline="rebuild from the journal, live worker",
                baseline_value=b["journal"]["median_ms"],
                ratio=b["speedup_vs_journal"],
                per="faster",
                goal=">= 10x faster",
                met=b["speedup_vs_journal"] >= COLD_GOAL_SPEEDUP,
            )
        )
    busy = r["busy"]
    for api in bench_cold.APIS:
        x = busy["apis"][api]
        rows.append(
            _row(
                2,
                f"same ({busy['entries']:,} entries, {api}), {busy['processes']} CPU-bound "
                "processes beside it",
                x["busy"]["median_ms"],
                "ms",
                baseline="same, idle (just before)",
                baseline_value=x["idle"]["median_ms"],
                ratio=x["busy_vs_idle"],
                per="idle",
                goal="<= 2x idle",
                met=x["busy_vs_idle"] <= BUSY_GOAL_RATIO,
            )
        )
    fresh = r["fresh"]
    for api in bench_cold.APIS:
        f = fresh["apis"][api]
        live_ms = small["apis"][api]["redis"]["median_ms"]
        rows.append(
            _row(
                2,
                f"fresh process, script start to first resolve done, {fresh['entries']:,} "
                f"entries, {api}",
                f["start_to_resolved_ms"],
                "ms",
                baseline="cold resolve, live worker",
                baseline_value=live_ms,
                ratio=round(f["start_to_resolved_ms"] / live_ms, 1),
                per="live",
                goal="reported",
            )
        )
    held = r["held"]
    for point in held["points"]:
        rows.append(
            _row(
                2,
                f"cold resolve from Redis, {point['sessions']:,} sessions held "
                f"({held['entries_per_session']:,} entries each), async",
                point["redis"]["median_ms"],
                "ms",
                baseline="PING, redis-py asyncio",
                baseline_value=point["ping"]["median_ms"],
                ratio=point["redis_vs_ping"],
                per="PING",
                goal="reported",
            )
        )
    for size in r["sizes"]:
        trips = size["commands"]["round_trips"]
        rows.append(
            _row(
                2,
                f"round trips of one cold resolve from Redis, {size['entries']:,} entries",
                trips,
                "",
                goal="1 round trip",
                met=trips == COLD_GOAL_TRIPS,
            )
        )
    return rows


def held_memory_rows(held: dict[str, Any]) -> list[dict[str, Any]]:
    """Row 8, many sessions: the server's ``used_memory`` growth per id held."""
    rows = []
    raw = held["raw_bytes_per_id"]
    for point in held["points"]:
        per_id = point["bytes_per_id"]
        rows.append(
            _row(
                8,
                f"Redis memory per id, {point['sessions']:,} sessions x "
                f"{held['entries_per_session']:,} entries (used_memory)",
                per_id,
                "B",
                baseline="raw id bytes",
                baseline_value=raw,
                ratio=round(per_id / raw, 2),
                per="raw",
                goal="<= 2x raw",
                met=per_id <= MEMORY_GOAL_RATIO * raw,
            )
        )
    return rows


def growth(d: dict[str, Any]) -> dict[str, Any]:
    """How cold resolve and warm grow from the smallest to the largest session size."""
    out: dict[str, Any] = {}
    if "resolve" in d and len(d["resolve"]["live"]) > 1:
        live = d["resolve"]["live"]
        small, large = live[0]["apis"]["async"], live[-1]["apis"]["async"]
        s = {k: small[k]["median_ms"] for k in ("redis", "journal")}
        b = {k: large[k]["median_ms"] for k in ("redis", "journal")}
        out["cold_resolve"] = {
            "entries": [live[0]["entries"], live[-1]["entries"]],
            "entries_factor": live[-1]["entries"] / live[0]["entries"],
            "redis_ms": [s["redis"], b["redis"]],
            "redis_factor": round(b["redis"] / s["redis"], 2),
            "rebuild_ms": [s["journal"], b["journal"]],
            "rebuild_factor": round(b["journal"] / s["journal"], 2),
            "table": [
                {
                    "entries": p["entries"],
                    **{
                        f"{api}_{k}_ms": p["apis"][api][k]["median_ms"]
                        for api in bench_cold.APIS
                        for k in ("journal", "redis", "ping")
                    },
                }
                for p in live
            ],
        }
    if "warm" in d and len(d["warm"]["growth"]) > 1:
        small, large = d["warm"]["growth"][0], d["warm"]["growth"][-1]
        out["warm"] = {
            "entries_per_session": [small["entries_per_session"], large["entries_per_session"]],
            "us_per_entry": [small["warm_us_per_entry"], large["warm_us_per_entry"]],
            "us_per_entry_factor": round(
                large["warm_us_per_entry"] / small["warm_us_per_entry"], 2
            ),
            "warm_vs_parse": [small["warm_vs_parse"], large["warm_vs_parse"]],
        }
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ns":
        return f"{value / 1000:.3f} us"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"$ {report['command']}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); Python "
        f"{m['python']}; {m['server']}; redis-py {m['redis_py']}, hiredis "
        f"{'yes' if m['hiredis'] else 'no'}; load average {report['load_average']['start']} "
        f"at start, {report['load_average']['end']} at end; {report['seconds']:.0f} s"
    )
    print()
    header = f"{'#':>2}  {'what':80} {'figure':>12}  {'baseline (same run)':38} {'ratio':>18}  goal"
    print(header)
    print("-" * (len(header) + 24))
    for r in report["rows"]:
        base = ""
        if r["baseline"]:
            base = f"{r['baseline']} {_fmt(r['baseline_value'], r['unit'])}".strip()
        ratio = r["ratio_text"]
        mark = {True: "met", False: "NOT MET", None: ""}[r["met"]]
        goal = f"{r['goal']}: {mark}" if mark else r["goal"]
        print(
            f"{r['row']:>2}  {r['name']:80} {_fmt(r['value'], r['unit']):>12}  "
            f"{base:38} {ratio:>18}  {goal}"
        )
    g = report["growth"]
    if "cold_resolve" in g:
        c = g["cold_resolve"]
        print(
            f"\ngrowth {c['entries'][0]:,} -> {c['entries'][1]:,} entries "
            f"({c['entries_factor']:.0f}x): cold resolve from Redis {c['redis_factor']}x "
            f"({c['redis_ms'][0]:.2f} -> {c['redis_ms'][1]:.2f} ms), rebuild "
            f"{c['rebuild_factor']}x ({c['rebuild_ms'][0]:.2f} -> {c['rebuild_ms'][1]:.2f} ms)"
        )
    if "table" in g.get("cold_resolve", {}):
        print_growth_table(g["cold_resolve"]["table"])
    if "warm" in g:
        w = g["warm"]
        print(
            f"growth {w['entries_per_session'][0]:,} -> {w['entries_per_session'][1]:,} entries "
            f"per session: warm {w['us_per_entry'][0]} -> {w['us_per_entry'][1]} us per entry "
            f"({w['us_per_entry_factor']}x), warm/parse {w['warm_vs_parse'][0]} -> "
            f"{w['warm_vs_parse'][1]}"
        )
    d = report["details"]
    if "resolve" in d:
        print_resolve_details(d["resolve"])
    if "warm" in d and not d["warm"].get("processes_option"):
        print(
            "warm: offload_registry.ops.warm.warm has no processes/workers option, so only 1 "
            "process is reported (its parsing runs in one worker thread beside the event loop)"
        )
    if "writes" in d:
        w = d["writes"]
        print(
            f"baselines: PING p50 {w['ping']['p50_ms']:.3f} ms, fsync of a 100-byte append "
            f"p50 {w['fsync']['p50_ms']:.3f} ms (p99 {w['fsync']['p99_ms']:.3f} ms); mark "
            f"rewrites a {w['mark_session_entries']}-entry journal"
        )
    if "staleness" in d:
        s = d["staleness"]
        print(
            f"staleness: {s['writes']} writes every {s['write_gap_ms']:.0f} ms, readers poll "
            f"every {s['poll_ms']} ms; {s['seen_before_ack']} seen before the writer's ack "
            f"(counted 0), background traffic {s['background_ops_per_s']:,.0f} ops/s"
        )
    if "claims" in d:
        c = d["claims"]
        print(f"claims: won per process {c['won_per_process']}, each id once: {c['each_won_once']}")


def print_growth_table(table: list[dict[str, Any]]) -> None:
    print("\ncold resolve in a live worker by session size (median ms; async API, sync API)")
    print(
        f"  {'entries':>8} {'journal':>9} {'Redis':>8} {'PING':>7} {'Redis/PING':>10} "
        f"{'journal/Redis':>13}   {'sync: journal':>13} {'Redis':>8} {'PING':>7}"
    )
    for t in table:
        j, r, p = t["async_journal_ms"], t["async_redis_ms"], t["async_ping_ms"]
        print(
            f"  {t['entries']:>8,} {j:>9.3f} {r:>8.3f} {p:>7.3f} {r / p:>9.1f}x {j / r:>12.2f}x"
            f"   {t['sync_journal_ms']:>13.3f} {t['sync_redis_ms']:>8.3f} {t['sync_ping_ms']:>7.3f}"
        )


def print_resolve_details(r: dict[str, Any]) -> None:
    fresh = r["fresh"]
    for api, f in fresh["apis"].items():
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in f["parts_ms"].items())
        print(
            f"fresh process ({api}, median of {fresh['runs']}): spawn to first resolve done "
            f"{f['spawn_to_resolved_ms']:.1f} ms = {parts} ms"
        )
    held = r["held"]
    print(
        f"held sessions: {held['entries_per_session']}-entry sessions, keys copied per session "
        f"{held['keys_copied']}, MEMORY USAGE {held['session_bytes']:,} B per session "
        f"({held['memory_usage_per_id']} B per id, raw {held['raw_bytes_per_id']} B); fill "
        + ", ".join(f"{p['sessions']:,}: {p['fill_seconds']} s" for p in held["points"])
    )


def markdown(report: dict[str, Any]) -> str:
    """The table as Markdown (for the README), with the command line and the machine."""
    m = report["machine"]
    lines = [
        f"`{report['command']}` ({report['seconds']:.0f} s; load average "
        f"{report['load_average']['start'][0]} at start, {report['load_average']['end'][0]} "
        f"at end)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['server']} "
        f"(embedded, loopback), redis-py {m['redis_py']}, hiredis "
        f"{'yes' if m['hiredis'] else 'no'}.",
        "",
        "| # | what | figure | baseline, same run | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        base = ""
        if r["baseline"]:
            base = f"{r['baseline']}: {_fmt(r['baseline_value'], r['unit'])}"
        ratio = r["ratio_text"]
        mark = {True: "**met**", False: "**not met**", None: ""}[r["met"]]
        goal = f"{r['goal']}: {mark}" if mark else r["goal"]
        lines.append(
            f"| {r['row']} | {r['name']} | {_fmt(r['value'], r['unit'])} | {base} | {ratio} "
            f"| {goal} |"
        )
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    p = plan(args)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown sections {sorted(unknown)} (known: {SECTIONS})")
    details: dict[str, Any] = {}
    started, load_start = time.perf_counter(), os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="offload-benchmark-", dir=args.tmp_dir) as tmp_name,
        RedisServerProcess() as server,
    ):
        tmp, url = Path(tmp_name), server.url
        admin = redis.Redis.from_url(url)
        info = admin.info("server")
        admin.close()
        server_name = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("valkey_version") or info.get("redis_version"))
        machine = bench_resolve.machine_info(version, server_name)

        sections: dict[str, Callable[[], Any]] = {
            "resolve": lambda: asyncio.run(measure_resolve(tmp / "resolve", url, p, args.seed)),
            "journal": lambda: measure_journal(tmp, p, args.seed),
            "warm": lambda: measure_warm(tmp, url, p),
            "writes": lambda: asyncio.run(
                bench_workers.bench_writes(tmp / "writes", url, p["write_ops"])
            ),
            "staleness": lambda: bench_workers.bench_staleness(
                tmp / "stale", url, p["stale_writes"]
            ),
            "claims": lambda: bench_workers.bench_claims(tmp / "claims", url, p["claim_ids"]),
            "scaling": lambda: bench_workers.bench_scaling(
                tmp / "scale", url, p["scaling"], p["scaling_seconds"]
            ),
        }
        for name, measure in sections.items():
            if name in only:
                print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
                details[name] = profiled(args.profile_sections, name, measure)
    return {
        "command": "python scripts/benchmark.py " + shlex.join(args.argv),
        "machine": machine,
        "load_average": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "mode": "quick" if args.quick else "full" if args.full else "default",
        "plan": {k: v for k, v in p.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": build_rows(details),
        "growth": growth(details),
        "details": details,
    }


def sizes_list(text: str) -> list[int]:
    values = [int(v.replace("_", "")) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def run_profile(args: argparse.Namespace) -> str:
    """``--profile cold``: pyinstrument's reports of the 500-entry cold resolve from Redis."""
    with (
        tempfile.TemporaryDirectory(prefix="offload-benchmark-", dir=args.tmp_dir) as tmp_name,
        RedisServerProcess() as server,
    ):
        return asyncio.run(
            bench_cold.profile_cold(
                Path(tmp_name), server.url, 500, args.profile_resolves, args.seed
            )
        )


def chart(report: dict[str, Any], path: Path) -> Path:
    if "resolve" not in report["details"]:
        raise SystemExit("--chart needs the resolve section")
    m, load = report["machine"], report["load_average"]
    subtitle = (
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['server']}; load average "
        f"{load['start'][0]} at start, {load['end'][0]} at end; median of "
        f"{report['plan']['cold_runs']} interleaved runs"
    )
    return bench_chart.write_chart(report["details"]["resolve"]["live"], path, subtitle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, seconds")
    size.add_argument(
        "--full", action="store_true", help="the default sizes (kept for old command lines)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per figure (median)")
    parser.add_argument(
        "--only", metavar="LIST", help=f"comma-separated sections ({','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--tmp-dir", help="where the data roots go (its filesystem is the one measured)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    parser.add_argument(
        "--profile",
        choices=("cold",),
        help="cold: only profile the cold resolve from Redis of a 500-entry session in a live "
        "worker (pyinstrument, async and sync API) and print it",
    )
    parser.add_argument("--profile-resolves", type=int, default=400, help="(400)")
    parser.add_argument(
        "--profile-sections", metavar="DIR", help="profile each section with pyinstrument into DIR"
    )
    parser.add_argument(
        "--chart",
        nargs="?",
        const=str(DEFAULT_CHART),
        metavar="PATH.svg",
        help="draw cold resolve against session size, log-log (matplotlib; default "
        "docs/cold-resolve.svg)",
    )
    parser.add_argument(
        "--growth-sizes",
        type=sizes_list,
        default=[100, 1_000, 10_000, 100_000],
        metavar="N,N",
        help="session sizes of the growth sweep (100,1000,10000,100000)",
    )
    parser.add_argument(
        "--held-sessions",
        type=sizes_list,
        default=[1_000, 10_000, 100_000],
        metavar="N,N",
        help="sessions held in Redis (1000,10000,100000)",
    )
    parser.add_argument(
        "--held-entries", type=int, default=100, help="entries per held session (100)"
    )
    parser.add_argument("--warm-sessions", type=int, default=10_000, help="(10000, x 100 entries)")
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=41,
        help="interleaved runs per live-worker cold-resolve figure (median; 41)",
    )
    parser.add_argument("--fresh-runs", type=int, default=5, help="fresh processes per API (5)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    if args.profile:
        print(run_profile(args))
        return 0
    report = run(args)
    print_report(report)
    if args.chart:
        print(f"chart: {chart(report, Path(args.chart))}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
