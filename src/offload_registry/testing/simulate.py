"""The load generator and invariant checker behind ``offload-registry simulate``.

:func:`run_workers` runs one spawned process per :class:`WorkerPlan`: each opens its own
registry on the shared data root (and Redis) and runs agent-like traffic (resolve, append,
mark, claim, refresh, turns under a lease) over a few shared sessions, plus a staleness
probe, optionally while the embedded server is restarted empty midway. Afterwards
:func:`check_invariants` proves no id won twice, no lease token granted twice, no
acknowledged write lost, no duplicate journal line, and Redis agreeing with the journals;
:func:`summarize` turns the reports into the command's JSON report.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from offload_registry.config import TierOptions
from offload_registry.disk import layout
from offload_registry.disk.journal import read_journal
from offload_registry.errors import LeaseLostError, LeaseUnavailableError
from offload_registry.metrics import serve_metrics
from offload_registry.ops.tier import TierTlsFiles
from offload_registry.session_state import normalize_id
from offload_registry.store.urls import redact
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess

OPERATIONS = ("resolve", "append", "mark", "claim", "refresh", "lease")
WEIGHTS = (5, 3, 1, 3, 1, 1)
SOCKET_TIMEOUT = 0.5
PROBE_KEY = "agent:sim:staleness-probe"
PROBE_EVERY = 0.05  # seconds between a worker's probe writes
PROBE_POLL = 0.001  # seconds between a worker's probe reads
LEASE_TTL = 2.0


@dataclass
class WorkerPlan:
    """What one worker process runs: its sessions, duration, seed and where Redis is."""

    index: int
    data_root: str
    session_keys: list[str]
    seconds: float
    seed: int
    ids_per_session: int
    redis_url: str | None
    key_prefix: str
    metrics_port: int | None = None
    tls: TierTlsFiles | None = None


@dataclass
class WorkerReport:
    """What one worker did and saw: latencies, ids written and won, leases, probe times."""

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


def entry(tool_call_id: str, worker: int) -> dict[str, Any]:
    """A journal entry shaped like the seed's, for ``tool_call_id`` written by ``worker``."""
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "node_id": None,
        "tool_call": f"bash -lc 'cat {tool_call_id}'",
        "summary": f"result of {tool_call_id} (worker {worker})",
        "result_ref": layout.ref_name(tool_call_id),
        "tool_call_id": tool_call_id,
        "score": 5,
    }


def open_registry(
    plan_root: str,
    url: str | None,
    prefix: str,
    tls: TierTlsFiles | None = None,
    **kwargs: Any,
) -> SessionRegistry:
    """A blocking registry as a simulated worker opens it (short Redis timeouts, TLS files)."""
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
    with open_registry(
        plan.data_root, plan.redis_url, plan.key_prefix, plan.tls, max_cached=cache
    ) as reg:
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
    manager.append_entries([entry(i, plan.index) for i in ids], lease=lease)
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
                manager.append_entries([entry(probe_id, plan.index)])
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
    tls: TierTlsFiles | None = None,
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
    data_root: Path, key: str, truth: Any, url: str, prefix: str, *, tls: TierTlsFiles | None
) -> tuple[bool, list[str]]:
    """``(compared, violations)``: a session Redis does not hold is not compared."""
    with open_registry(str(data_root), url, prefix, tls, read_only=True) as shared:
        manager = shared.resolve(key).manager
        if manager.source != "redis":
            return False, []  # not in Redis (evicted, or never published): not compared
        for name in ("confirmed_offload_ids", "deleted_offload_ids", "processed_tool_call_ids"):
            if set(getattr(manager, name)) != set(getattr(truth, name)):
                return True, [f"{key}: Redis and the journal disagree on {name}"]
        if manager.entry_count != truth.entry_count:
            return True, [f"{key}: Redis and the journal disagree on entry_count"]
    return True, []


def _restart_midway(server: RedisServerProcess, after: float, done: threading.Event) -> None:
    if not done.wait(after):
        server.restart()


def run_workers(
    plans: list[WorkerPlan], *, server: RedisServerProcess | None, restart_after: float | None
) -> tuple[list[WorkerReport], float, bool]:
    """Run one process per plan (spawned, so each opens its own registry) and, when
    ``restart_after`` is given, restart ``server`` empty that many seconds in; returns the
    reports, the seconds the run took and whether the restart was scheduled."""
    done = threading.Event()
    restarter = None
    if server is not None and restart_after is not None:
        restarter = threading.Thread(target=_restart_midway, args=(server, restart_after, done))
        restarter.start()
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(len(plans), mp_context=get_context("spawn")) as pool:
            reports = list(pool.map(run_worker, plans))
    finally:
        done.set()
        if restarter is not None:
            restarter.join()
    return reports, time.perf_counter() - started, restarter is not None


def summarize(
    *,
    workers: int,
    sessions: int,
    seconds: float,
    reports: list[WorkerReport],
    elapsed: float,
    violations: list[str],
    url: str | None,
    server: RedisServerProcess | None,
    restarted: bool,
    checked: Checked,
) -> dict[str, Any]:
    """The report of a run, as ``simulate --json`` prints it."""
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
                "per_second": round(len(samples) / seconds, 1),
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
        "workers": workers,
        "sessions": sessions,
        "seconds": round(elapsed, 2),
        "shared_tier": tier,
        "redis_restarted_midway": restarted,
        "operations": operations,
        "cold_resolves": dict(sources),
        "cache_hit_ratio": round(sum(r.hits for r in reports) / resolves, 3) if resolves else None,
        "staleness_ms": staleness(reports),
        "leases": {"granted": leases["granted"], "busy": leases["busy"], "lost": leases["lost"]},
        "redis_errors": sum(r.redis_errors for r in reports),
        "redis_outages_seen": sum(r.outages for r in reports),
        "redis_sessions_compared": checked.redis_compared if url is not None else None,
        "claims": {"tried": tried, "won": won, "contested": tried - won},
        "written": sum(len(ids) for r in reports for ids in r.written.values()),
        "violations": violations,
        "ok": not violations,
    }


def staleness(reports: list[WorkerReport]) -> dict[str, Any]:
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
