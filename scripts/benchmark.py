#!/usr/bin/env python3
"""The benchmark command: every figure of the README, each against a baseline measured in the
same run, on a real ``redis-server`` started on a free loopback port (never a Redis already
running on this machine), printed as one table and written as JSON with ``--json PATH``.

Rows (figure | baseline measured in the same run -> goal):

1. hot ``resolve`` (near-cache hit), async and sync API | an ``OrderedDict`` LRU lookup with
   ``move_to_end``, called (or awaited) the same way -> at most 1.5x it, and under 1 us;
2. cold ``resolve`` answered by Redis, 500 and 20,000 entries | rebuilding the same session
   from its journal -> at least 10x faster, in 1 round trip (``INFO commandstats`` deltas);
3. journal rebuild (``scan_journal`` + id sets) | stdlib ``json`` line by line, and
   ``orjson`` parse only -> faster than stdlib, within 1.3x of orjson;
4. ``warm`` of a data root | parse-only time of the same journals -> at most 2x;
5. ``append_entries`` (1, 10, 100), ``mark_offload_status``, ``claim`` per fsync policy |
   a ``PING`` round trip and an ``os.fsync`` on the data root's filesystem (reported);
6. staleness window across processes under load (writer -> reader's ``resolve``) -> p99
   at most 10 ms;
7. claims with 4 contending processes (each id won once, checked) and total ops/s for 1 to
   8 worker processes (reported);
8. Redis memory per session and per id | the raw bytes of the ids (reported).

It imports the measuring functions of ``bench_resolve``, ``bench_journal``, ``bench_warm`` and
``bench_workers`` (each still runnable alone). The default sizes keep a run under 10 minutes
on 2 cores; ``--full`` warms the issue's 10,000 sessions x 100 entries; ``--quick`` is a
smoke run of a few seconds (tiny sizes: its figures mean nothing).

    python scripts/benchmark.py                       # table
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

import bench_journal
import bench_resolve
import bench_warm
import bench_workers
import redis

from offload_registry.testing.server import RedisServerProcess

SECTIONS = ("resolve", "journal", "warm", "writes", "staleness", "claims", "scaling")

HOT_GOAL_RATIO, HOT_GOAL_NS = 1.5, 1000.0
COLD_GOAL_SPEEDUP, COLD_GOAL_TRIPS = 10.0, 1
ORJSON_GOAL_RATIO = 1.3
WARM_GOAL_RATIO = 2.0
STALENESS_GOAL_P99_MS = 10.0


# --- sizes -------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """What to measure, by mode: --quick (smoke), default (under 10 minutes), --full."""
    if args.quick:
        return {
            "entries": [100, 1000],
            "runs": 2,
            "hot_loops": 2000,
            "warm": (50, 20),
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
        "warm": (10_000, 100) if args.full else (2_000, 100),
        "growth": [(80, 500), (2, 20_000)],
        "write_ops": 200,
        "stale_writes": 400,
        "claim_ids": 2_000,
        "scaling": [1, 2, 4, 8],
        "scaling_seconds": 2.0,
    }


# --- measurements (each returns plain JSON) -------------------------------------------------------


async def measure_resolve(tmp: Path, url: str, p: dict[str, Any], seed: int) -> dict[str, Any]:
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
    return {"sizes": sizes, "hot": hot}


def measure_journal(tmp: Path, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    out = []
    for count in p["entries"]:
        path = tmp / f"journal-{count}" / f"offload-bench-{count}.jsonl"
        path.parent.mkdir(parents=True)
        bench_journal.write_journal(path, count, seed)
        out.append(bench_journal.bench_one(path, count, p["runs"], with_node=False))
    return out


def warm_once(tmp: Path, url: str, sessions: int, entries: int) -> dict[str, Any]:
    root = tmp / f"warm-{sessions}x{entries}"
    size = bench_warm.generate(root, sessions, entries)
    bench_warm.parse_only(root)  # page cache warm: both passes read from memory
    count, parse_seconds = bench_warm.parse_only(root)
    first, second = asyncio.run(bench_warm.warm_twice(root, url))
    if first.published != sessions or second.skipped != sessions:
        raise SystemExit(f"warm published {first.published}, then skipped {second.skipped}")
    return {
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
    main = warm_once(tmp, url, *p["warm"])
    growth = [warm_once(tmp, url, s, e) for s, e in p["growth"]]
    return {"main": main, "growth": growth}


def profiled(directory: str | None, name: str, measure: Callable[[], Any]) -> Any:
    """``measure()``, under pyinstrument when ``--profile DIR`` is given (the ``bench``
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
        for size in d["resolve"]["sizes"]:
            by = {r["key"]: r for r in size["rows"]}
            red, base = by["cold_redis"]["ms"], by["cold_journal"]["ms"]
            trips = size["commands"]["round_trips"]
            speedup = base / red
            rows.append(
                _row(
                    2,
                    f"cold resolve from Redis, {size['entries']:,} entries ({trips} round trip)",
                    red,
                    "ms",
                    baseline="rebuild from the journal",
                    baseline_value=base,
                    ratio=round(speedup, 2),
                    per="faster",
                    goal=">= 10x faster, 1 round trip",
                    met=speedup >= COLD_GOAL_SPEEDUP and trips == COLD_GOAL_TRIPS,
                )
            )
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
        for w in [d["warm"]["main"], *d["warm"]["growth"]]:
            rows.append(
                _row(
                    4,
                    f"warm, {w['sessions']:,} sessions x {w['entries_per_session']:,} entries",
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
                    goal="reported",
                )
            )
    return rows


def growth(d: dict[str, Any]) -> dict[str, Any]:
    """How cold resolve and warm grow from the smallest to the largest session size."""
    out: dict[str, Any] = {}
    if "resolve" in d and len(d["resolve"]["sizes"]) > 1:
        small, large = d["resolve"]["sizes"][0], d["resolve"]["sizes"][-1]
        s = {r["key"]: r["ms"] for r in small["rows"]}
        b = {r["key"]: r["ms"] for r in large["rows"]}
        out["cold_resolve"] = {
            "entries": [small["entries"], large["entries"]],
            "entries_factor": large["entries"] / small["entries"],
            "redis_ms": [s["cold_redis"], b["cold_redis"]],
            "redis_factor": round(b["cold_redis"] / s["cold_redis"], 2),
            "rebuild_ms": [s["cold_journal"], b["cold_journal"]],
            "rebuild_factor": round(b["cold_journal"] / s["cold_journal"], 2),
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
    header = f"{'#':>2}  {'what':62} {'figure':>12}  {'baseline (same run)':38} {'ratio':>18}  goal"
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
            f"{r['row']:>2}  {r['name']:62} {_fmt(r['value'], r['unit']):>12}  "
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
    if "warm" in g:
        w = g["warm"]
        print(
            f"growth {w['entries_per_session'][0]:,} -> {w['entries_per_session'][1]:,} entries "
            f"per session: warm {w['us_per_entry'][0]} -> {w['us_per_entry'][1]} us per entry "
            f"({w['us_per_entry_factor']}x), warm/parse {w['warm_vs_parse'][0]} -> "
            f"{w['warm_vs_parse'][1]}"
        )
    d = report["details"]
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
                details[name] = profiled(args.profile, name, measure)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, seconds")
    size.add_argument(
        "--full", action="store_true", help="warm the issue's 10,000 sessions x 100 entries"
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
        "--profile", metavar="DIR", help="profile each section with pyinstrument into DIR"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    report = run(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
