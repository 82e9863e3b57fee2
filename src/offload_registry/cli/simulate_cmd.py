"""``offload-registry simulate``: several worker processes sharing sessions, then a check.

Each worker process opens its own registry on one shared data root and, unless
``--no-redis`` is given, one shared Redis (``--redis-url``, or an embedded server started
here on a free port). Workers run agent-like traffic (resolve, append, mark, claim, refresh)
over a few shared sessions; an embedded server is restarted, empty, halfway through, on
purpose. Afterwards the parent checks the invariants: no id won twice, no acknowledged write
lost, no duplicate journal line, a fresh registry sees every written id, and Redis agrees
with the journals.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from offload_registry.cli.ops_common import PROG, positive_int, run_job, tls_files
from offload_registry.errors import ConfigurationError, LeaseLostError, LeaseUnavailableError
from offload_registry.journal import read_journal
from offload_registry.metrics import serve_metrics
from offload_registry.ops.tier import TlsFiles, open_tier
from offload_registry.session_state import normalize_id
from offload_registry.store.urls import TierOptions, redact
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess

HELP = "run worker processes over shared sessions and check the invariants"
EXAMPLE = "Example: offload-registry simulate --workers 4 --sessions 3 --seconds 5"
OPERATIONS = ("resolve", "append", "mark", "claim", "refresh", "lease")
WEIGHTS = (5, 3, 1, 3, 1, 1)
SOCKET_TIMEOUT = 0.5
PROBE_KEY = "agent:sim:staleness-probe"
PROBE_EVERY = 0.05  # seconds between a worker's probe writes
PROBE_POLL = 0.001  # seconds between a worker's probe reads
LEASE_TTL = 2.0


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds greater than 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser("simulate", help=HELP, description=HELP, epilog=EXAMPLE)
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
        type=int,
        default=None,
        help="serve each worker's Prometheus metrics on PORT + worker index (metrics extra)",
    )
    parser.set_defaults(run=run)


@dataclass
class WorkerPlan:
    index: int
    data_root: str
    session_keys: list[str]
    seconds: float
    seed: int
    ids_per_session: int
    redis_url: str | None
    key_prefix: str
    metrics_port: int | None = None
    tls: TlsFiles | None = None


@dataclass
class WorkerReport:
    index: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    written: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    won: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    claims_tried: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    hits: int = 0
    resolves: int = 0
    redis_errors: int = 0
    outages: int = 0
    leases: Counter[str] = field(default_factory=Counter)
    lease_tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    probe_written: dict[str, float] = field(default_factory=dict)  # id -> acknowledged at
    probe_seen: dict[str, float] = field(default_factory=dict)  # others' ids -> first seen at


def _entry(tool_call_id: str, worker: int) -> dict[str, Any]:
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "node_id": None,
        "tool_call": f"bash -lc 'cat {tool_call_id}'",
        "summary": f"result of {tool_call_id} (worker {worker})",
        "result_ref": f"refs/{tool_call_id}.md",
        "tool_call_id": tool_call_id,
        "score": 5,
    }


def _open(
    plan_root: str,
    url: str | None,
    prefix: str,
    tls: TlsFiles | None = None,
    **kwargs: Any,
) -> SessionRegistry:
    options = TierOptions(socket_timeout=SOCKET_TIMEOUT, connect_timeout=SOCKET_TIMEOUT)
    if tls:
        options = dataclasses.replace(options, **tls)
    return SessionRegistry(
        plan_root, redis_url=url, key_prefix=prefix, redis_options=options, **kwargs
    )


def run_worker(plan: WorkerPlan) -> WorkerReport:
    """One worker process: random agent-like traffic until the deadline, plus a staleness
    probe (a thread writing stamped ids to a probe session and watching for others')."""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s worker-{plan.index} %(levelname)s %(name)s: %(message)s",
    )
    rng = random.Random(plan.seed * 1_000 + plan.index)
    report = WorkerReport(plan.index)
    deadline = time.monotonic() + plan.seconds
    cache = max(2, len(plan.session_keys) // 2) + 1  # + the probe session
    with _open(plan.data_root, plan.redis_url, plan.key_prefix, plan.tls, max_cached=cache) as reg:
        if plan.metrics_port is not None:
            serve_metrics(plan.metrics_port + plan.index, reg, addr="127.0.0.1")
        probe = threading.Thread(target=_probe, args=(reg, plan, report, deadline), daemon=True)
        probe.start()
        while time.monotonic() < deadline:
            key = rng.choice(plan.session_keys)
            op = rng.choices(OPERATIONS, weights=WEIGHTS)[0]
            ids = [f"call_{rng.randrange(plan.ids_per_session)}" for _ in range(rng.randint(1, 5))]
            started = time.perf_counter()
            cold = reg.get(key) is None
            manager = reg.resolve(key).manager
            report.resolves += 1
            if cold:
                report.sources[manager.source] += 1
            else:
                report.hits += 1
            _operate(op, key, ids, manager, rng=rng, plan=plan, report=report)
            if rng.random() < 0.05:
                reg.evict(key)
            report.latencies[op].append(time.perf_counter() - started)
        probe.join()
        stats = getattr(reg.tier, "stats", None)
        if stats is not None:
            report.redis_errors = stats.errors
            report.outages = reg.tier.breaker.outages  # type: ignore[attr-defined]
    return report


def _operate(
    op: str,
    key: str,
    ids: list[str],
    manager: Any,
    *,
    rng: random.Random,
    plan: WorkerPlan,
    report: WorkerReport,
) -> None:
    if op == "append":
        _append(key, ids, manager, plan, report)
    elif op == "mark":
        manager.mark_offload_status({i: rng.choice([True, "deleted"]) for i in ids})
    elif op == "claim":
        _claim(key, ids, manager, report)
    elif op == "refresh":
        manager.refresh()
    elif op == "lease":
        _lease_turn(key, ids, manager, plan, report)


def _append(
    key: str,
    ids: list[str],
    manager: Any,
    plan: WorkerPlan,
    report: WorkerReport,
    *,
    lease: Any = None,
) -> None:
    """Append entries for ``ids`` and record those this call wrote (new to the journal)."""
    before = set(manager.processed_tool_call_ids)
    manager.append_entries([_entry(i, plan.index) for i in ids], lease=lease)
    after = manager.processed_tool_call_ids
    report.written[key].extend(i for i in dict.fromkeys(ids) if i in after and i not in before)


def _claim(
    key: str, ids: list[str], manager: Any, report: WorkerReport, *, lease: Any = None
) -> list[str]:
    """Claim ``ids`` and record the attempt and what was won."""
    report.claims_tried += len(ids)
    won: list[str] = manager.claim(ids, lease=lease)
    report.won[key].extend(won)
    return won


def _lease_turn(
    key: str, ids: list[str], manager: Any, plan: WorkerPlan, report: WorkerReport
) -> None:
    """An agent turn under the session's lease: claim and append with the lease's token."""
    try:
        with manager.lease(ttl=LEASE_TTL, wait=0.05) as lease:
            report.leases["granted"] += 1
            report.lease_tokens[key].append(lease.token)
            won = _claim(key, ids, manager, report, lease=lease)
            _append(key, won, manager, plan, report, lease=lease)
    except LeaseUnavailableError:
        report.leases["busy"] += 1
    except LeaseLostError:
        report.leases["lost"] += 1  # a write refused by fencing (nothing of it was written)


def _probe(reg: Any, plan: WorkerPlan, report: WorkerReport, deadline: float) -> None:
    """Write a stamped probe id every PROBE_EVERY seconds, and poll the probe session every
    PROBE_POLL seconds, noting when each other worker's id first became visible here."""
    mine = f"probe-{plan.index}-"
    next_write = time.monotonic()
    counter = seen_count = 0
    try:
        while time.monotonic() < deadline:
            manager = reg.resolve(PROBE_KEY).manager
            if time.monotonic() >= next_write:
                probe_id = f"{mine}{counter}"
                counter += 1
                manager.append_entries([_entry(probe_id, plan.index)])
                report.probe_written[probe_id] = time.time()
                next_write += PROBE_EVERY
            now = time.time()
            if manager.entry_count != seen_count:  # something new arrived: look at it
                seen_count = manager.entry_count
                for tool_call_id in list(manager.processed_tool_call_ids):
                    if tool_call_id.startswith("probe-") and not tool_call_id.startswith(mine):
                        report.probe_seen.setdefault(tool_call_id, now)
            time.sleep(PROBE_POLL)
    except Exception:  # the probe only measures; a failure must not stop the worker
        logging.getLogger(__name__).exception("staleness probe failed")


def check_invariants(
    data_root: Path,
    keys: list[str],
    reports: list[WorkerReport],
    url: str | None,
    prefix: str,
    *,
    checked: Checked | None = None,
    tls: TlsFiles | None = None,
) -> list[str]:
    """Every violation found, as a sentence (empty when all invariants hold); ``checked``
    receives how many sessions could be compared with Redis."""
    checked = checked if checked is not None else Checked()
    violations: list[str] = []
    won = Counter(
        (key, normalize_id(i)) for r in reports for key, ids in r.won.items() for i in ids
    )
    violations += [f"{key}: id {i!r} won {n} times" for (key, i), n in won.items() if n > 1]
    tokens = Counter((key, t) for r in reports for key, ts in r.lease_tokens.items() for t in ts)
    violations += [
        f"{key}: lease token {t} granted {n} times" for (key, t), n in tokens.items() if n > 1
    ]
    with SessionRegistry(data_root, read_only=True, max_cached=len(keys)) as fresh:
        for key in keys:
            manager = fresh.resolve(key).manager
            lines = read_journal(manager.journal_path).entries
            counts = Counter(normalize_id(e["tool_call_id"]) for e in lines)
            violations += [f"{key}: {i!r} on {n} lines" for i, n in counts.items() if n > 1]
            for report in reports:
                for i in report.written.get(key, []) + report.won.get(key, []):
                    if i not in manager.processed_tool_call_ids:
                        violations.append(f"{key}: acknowledged {i!r} missing after restart")
            if url is not None:
                compared, found = _compare_with_redis(data_root, key, manager, url, prefix, tls=tls)
                checked.redis_compared += compared
                violations += found
    return violations


@dataclass
class Checked:
    """What the final check could compare (so the report never claims more)."""

    redis_compared: int = 0
    """Sessions Redis held at the end and that were compared with their journals."""


def _compare_with_redis(
    data_root: Path, key: str, truth: Any, url: str, prefix: str, *, tls: TlsFiles | None
) -> tuple[bool, list[str]]:
    """``(compared, violations)``: a session Redis does not hold is not compared."""
    with _open(str(data_root), url, prefix, tls, read_only=True) as shared:
        manager = shared.resolve(key).manager
        if manager.source != "redis":
            return False, []  # not in Redis (evicted, or never published): not compared
        for name in ("confirmed_offload_ids", "deleted_offload_ids", "processed_tool_call_ids"):
            if set(getattr(manager, name)) != set(getattr(truth, name)):
                return True, [f"{key}: Redis and the journal disagree on {name}"]
        if manager.entry_count != truth.entry_count:
            return True, [f"{key}: Redis and the journal disagree on entry_count"]
    return True, []


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


async def _reachable(data_root: Path, url: str, prefix: str, tls: TlsFiles) -> int:
    """Raise ``RedisUnavailableError`` (exit 1) when the given Redis does not answer: the
    workers would silently run on the journals and the report would check nothing."""
    async with open_tier(data_root, url, key_prefix=prefix, read_only=True, tls=tls):
        return 0


def _restart_midway(server: RedisServerProcess, after: float, done: threading.Event) -> None:
    if not done.wait(after):
        server.restart()


def run(args: argparse.Namespace) -> int:
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
                    tls_files(args) if server is None else None,
                )
                for i in range(args.workers)
            ]
            done = threading.Event()
            restarter = None
            if server is not None and not args.no_restart:
                restarter = threading.Thread(
                    target=_restart_midway, args=(server, args.seconds / 2 + 1.0, done)
                )
                restarter.start()
            started = time.perf_counter()
            try:
                with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
                    reports = list(pool.map(run_worker, plans))
            finally:
                done.set()
                if restarter is not None:
                    restarter.join()
            elapsed = time.perf_counter() - started
            checked = Checked()
            violations = check_invariants(
                data_root,
                keys,
                reports,
                url,
                prefix,
                checked=checked,
                tls=tls_files(args) if server is None else None,
            )
        summary = _summarize(
            args,
            reports=reports,
            elapsed=elapsed,
            violations=violations,
            url=url,
            server=server,
            restarter=restarter,
            checked=checked,
        )
    if args.json:
        print(json.dumps(summary))
    else:
        _print_report(summary)
    return 1 if violations else 0


def _summarize(
    args: argparse.Namespace,
    *,
    reports: list[WorkerReport],
    elapsed: float,
    violations: list[str],
    url: str | None,
    server: RedisServerProcess | None,
    restarter: threading.Thread | None,
    checked: Checked,
) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for op in OPERATIONS:
        samples = [s for r in reports for s in r.latencies.get(op, [])]
        if samples:
            # "inclusive": percentiles inside the observed range (the default extrapolates,
            # which put p99 above the maximum)
            cuts = (
                statistics.quantiles(samples, n=100, method="inclusive")
                if len(samples) > 1
                else samples * 99
            )
            operations[op] = {
                "count": len(samples),
                "per_second": round(len(samples) / args.seconds, 1),
                "p50_ms": round(cuts[49] * 1e3, 3),
                "p99_ms": round(cuts[98] * 1e3, 3),
            }
    won = sum(len(ids) for r in reports for ids in r.won.values())
    tier = "none (journals and file locks)"
    if url is not None:
        tier = f"redis {redact(url)}" + (
            f" (embedded: {server.binary})" if server is not None else ""
        )
    sources: Counter[str] = Counter()
    leases: Counter[str] = Counter()
    for r in reports:
        sources.update(r.sources)
        leases.update(r.leases)
    resolves = sum(r.resolves for r in reports)
    tried = sum(r.claims_tried for r in reports)
    return {
        "workers": args.workers,
        "sessions": args.sessions,
        "seconds": round(elapsed, 2),
        "shared_tier": tier,
        "redis_restarted_midway": restarter is not None,
        "operations": operations,
        "cold_resolves": dict(sources),
        "cache_hit_ratio": round(sum(r.hits for r in reports) / resolves, 3) if resolves else None,
        "staleness_ms": _staleness(reports),
        "leases": {"granted": leases["granted"], "busy": leases["busy"], "lost": leases["lost"]},
        "redis_errors": sum(r.redis_errors for r in reports),
        "redis_outages_seen": sum(r.outages for r in reports),
        "redis_sessions_compared": checked.redis_compared if url is not None else None,
        "claims": {"tried": tried, "won": won, "contested": tried - won},
        "written": sum(len(ids) for r in reports for ids in r.written.values()),
        "violations": violations,
        "ok": not violations,
    }


def _staleness(reports: list[WorkerReport]) -> dict[str, Any]:
    """Write acknowledged in one worker -> first seen by another's resolve, over the probe ids
    (wall clock: all workers run on this machine)."""
    written = {i: t for r in reports for i, t in r.probe_written.items()}
    windows = [
        max(seen - written[i], 0.0)
        for r in reports
        for i, seen in r.probe_seen.items()
        if i in written
    ]
    if len(windows) < 2:
        return {"samples": len(windows)}
    cuts = statistics.quantiles(windows, n=100, method="inclusive")
    return {
        "samples": len(windows),
        "p50": round(cuts[49] * 1e3, 2),
        "p99": round(cuts[98] * 1e3, 2),
        "max": round(max(windows) * 1e3, 2),
    }


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
