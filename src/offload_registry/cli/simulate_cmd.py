"""``offload-registry simulate``: several worker processes sharing sessions, then a check.

Each worker process opens its own registry on one shared data root and, unless
``--no-redis`` is given, one shared Redis (``--redis-url``, or an embedded server started
here on a free port). Workers run agent-like traffic (resolve, append, mark, claim, refresh)
over a few shared sessions; an embedded server is restarted, empty, halfway through, on
purpose. Afterwards the parent checks the invariants: no id won twice, no acknowledged write
lost, no duplicate journal line, a fresh registry sees every written id, and Redis agrees
with the journals. The load generator and the checker are
:mod:`offload_registry.testing.simulate`; this module parses the options and prints the
report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offload_registry.cli.ops_common import (
    PROG,
    command_parser,
    port_number,
    positive_int,
    run_job,
    tls_files,
)
from offload_registry.errors import ConfigurationError
from offload_registry.ops.tier import TierTlsFiles, open_tier
from offload_registry.testing.server import RedisServerProcess
from offload_registry.testing.simulate import (
    Checked,
    WorkerPlan,
    check_invariants,
    run_workers,
    summarize,
)

HELP = "run worker processes over shared sessions and check the invariants"
EXAMPLE = "Example: offload-registry simulate --workers 4 --sessions 3 --seconds 5"


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds greater than 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def register(commands: Any) -> None:
    parser = command_parser(commands, "simulate", HELP, EXAMPLE)
    parser.add_argument("--workers", type=positive_int, default=4, help="worker processes (4)")
    parser.add_argument("--sessions", type=positive_int, default=3, help="shared sessions (3)")
    parser.add_argument("--seconds", type=positive_float, default=4.0, help="traffic duration (4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed, for replays (1)")
    parser.add_argument("--ids", type=positive_int, default=400, help="tool call ids per session")
    parser.add_argument("--no-redis", action="store_true", help="journals and file locks only")
    parser.add_argument(
        "--no-restart", action="store_true", help="do not restart the embedded server midway"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        help="serve each worker's Prometheus metrics on PORT + worker index (metrics extra)",
    )
    parser.set_defaults(run=run)


@contextlib.contextmanager
def _redis_for(args: argparse.Namespace) -> Iterator[tuple[str | None, RedisServerProcess | None]]:
    if args.no_redis:
        yield None, None
    elif args.redis_url:
        if args.redis_url.startswith("memory:"):
            raise ConfigurationError(
                "memory:// lives inside one process; simulate's workers need a shared Redis "
                "(leave --redis-url unset to start an embedded one)"
            )
        yield args.redis_url, None
    else:
        with RedisServerProcess() as server:
            yield server.url, server


async def _reachable(data_root: Path, url: str, prefix: str, tls: TierTlsFiles) -> int:
    """Raise ``RedisUnavailableError`` (exit 1) when the given Redis does not answer: the
    workers would silently run on the journals and the report would check nothing."""
    async with open_tier(data_root, url, key_prefix=prefix, read_only=True, tls=tls):
        return 0


def run(args: argparse.Namespace) -> int:
    if args.metrics_port is not None and args.metrics_port + args.workers - 1 > 65535:
        raise ConfigurationError(
            f"--metrics-port {args.metrics_port} leaves no port for worker {args.workers - 1} "
            "(each worker serves on PORT + its index, at most 65535)"
        )
    with tempfile.TemporaryDirectory(prefix="offload-simulate-") as tmp:
        # Always a fresh root: the global --data-root (or its environment variable) may be a
        # production data root, which synthetic sessions must never touch.
        data_root = Path(tmp)
        keys = [f"agent:sim:session-{n}" for n in range(args.sessions)]
        prefix = f"{args.key_prefix}-sim{random.randrange(1 << 30):x}"
        with _redis_for(args) as (url, server):
            if url is not None and server is None:
                status = run_job(_reachable(data_root, url, prefix, tls_files(args)))
                if status:
                    return status
            if server is not None:
                print(
                    f"{PROG} simulate: started {server.binary} on {server.host}:{server.port}"
                    + (
                        ""
                        if args.no_restart
                        else f"; it is restarted empty after ~{args.seconds / 2 + 1.0:g} s on"
                        " purpose, so the workers' warnings about failed Redis calls then are"
                        " expected (--no-restart to skip)"
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            tls = tls_files(args) if server is None else None
            plans = [
                WorkerPlan(
                    i,
                    str(data_root),
                    keys,
                    args.seconds,
                    args.seed,
                    args.ids,
                    url,
                    prefix,
                    args.metrics_port,
                    tls,
                )
                for i in range(args.workers)
            ]
            restart_after = None if args.no_restart else args.seconds / 2 + 1.0
            reports, elapsed, restarted = run_workers(
                plans, server=server, restart_after=restart_after
            )
            checked = Checked()
            violations = check_invariants(
                data_root, keys, reports, url, prefix, checked=checked, tls=tls
            )
        summary = summarize(
            workers=args.workers,
            sessions=args.sessions,
            seconds=args.seconds,
            reports=reports,
            elapsed=elapsed,
            violations=violations,
            url=url,
            server=server,
            restarted=restarted,
            checked=checked,
        )
    if args.json:
        print(json.dumps(summary))
    else:
        _print_report(summary)
    return 1 if violations else 0


def _print_report(summary: dict[str, Any]) -> None:
    print(
        f"simulate: {_plural(summary['workers'], 'worker process', 'worker processes')}, "
        f"{_plural(summary['sessions'], 'shared session')}, {summary['seconds']} s, "
        f"shared tier: {summary['shared_tier']}"
    )
    errors, outages = summary["redis_errors"], summary["redis_outages_seen"]
    if summary["redis_restarted_midway"]:
        print(
            "  Redis was restarted empty midway, on purpose: "
            + _plural(errors, "Redis call")
            + (" failed and was" if errors == 1 else " failed and were")
            + " answered from the journals; "
            + (
                f"the circuit breaker opened {_plural(outages, 'time')}"
                if outages
                else "too few in a row to open the circuit breaker"
            )
        )
    elif errors:
        verb = "was" if errors == 1 else "were"
        print(f"  {_plural(errors, 'Redis call')} failed and {verb} answered from the journals")
    print(f"  {'operation':<10} {'count':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for op, row in summary["operations"].items():
        print(
            f"  {op:<10} {row['count']:>7} {row['per_second']:>9} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8}"
        )
    sources = ", ".join(f"{n} from {s}" for s, n in sorted(summary["cold_resolves"].items()))
    print(
        f"  cold resolves: {sources or 'none'}; near-cache hit ratio {summary['cache_hit_ratio']}"
    )
    staleness = summary["staleness_ms"]
    if "p50" in staleness:
        print(
            f"  staleness (write in one worker -> visible in another): p50 {staleness['p50']}"
            f" ms, p99 {staleness['p99']} ms, max {staleness['max']} ms"
            f" ({staleness['samples']} samples)"
        )
    claims = summary["claims"]
    print(
        f"  claims: {claims['tried']} attempted, {claims['won']} won,"
        f" {claims['contested']} lost to another worker or already processed"
    )
    leases = summary["leases"]
    print(
        f"  leases: {leases['granted']} granted, {leases['busy']} busy,"
        f" {leases['lost']} writes refused by fencing"
    )
    print(f"  entries written: {summary['written']}, all found by a fresh registry")
    if summary["violations"]:
        print(f"  VIOLATIONS ({len(summary['violations'])}):")
        for line in summary["violations"][:20]:
            print(f"    {line}")
    else:
        compared = summary["redis_sessions_compared"]
        if compared is None:
            redis = "no Redis in this run"
        elif compared:
            redis = f"Redis agrees with the journals on the {_plural(compared, 'session')} it held"
        else:
            redis = "Redis held none of the sessions at the end: nothing compared with it"
        print(
            "  invariants: OK (no id won twice, no lease token granted twice, no lost write, "
            f"no duplicate line; {redis})"
        )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
