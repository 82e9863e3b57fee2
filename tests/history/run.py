"""The controller: run worker processes under faults, then read the final state.

During the run, at seeded random moments, it restarts Redis empty (kill, then a fresh server on
the same port), FLUSHALLs it, pauses its writes (``CLIENT PAUSE ... WRITE``, longer than the
workers' socket timeout), freezes it (SIGSTOP, then SIGCONT), SIGKILLs a random worker, and
freezes one (SIGSTOP, then SIGCONT after longer than a lease's ttl, so a holder wakes up
with a lost lease); some workers are also told to kill themselves at an exact crash point
(``faults.CRASH_POINTS``). Every dead worker is replaced by a new process with a new history
file while time remains. Each fault's window (from its start until it healed) is recorded
for the checker's live view. Afterwards every session's journal and claims record are read
raw, and fresh readers report what they see: the snapshot Redis holds, a new registry with
Redis, one without, and ``offload-registry inspect --json`` with and without.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster_fixtures import LocalSentinel
from history.checker import SessionFinal, View, Window
from history.faults import CRASH_POINTS
from history.record import Op, read_history
from history.worker import WorkerConfig
from offload_registry.disk.session_files import SessionPaths
from offload_registry.keys import resolve_identity
from offload_registry.sync import OffloadStateManager, SessionRegistry
from offload_registry.testing.server import RedisServerProcess

TESTS_DIR = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 1.0  # workers start after the controller; give them this head start
CALM_SECONDS = 0.5  # the fault flag stays this long after a heal (writes then hit old epochs)


@dataclass(frozen=True)
class Plan:
    """What to run: the seed decides every worker's operations and every fault's moment."""

    seed: int
    seconds: float = 5.0
    workers: int = 4
    sessions: int = 3
    redis_restarts: int = 2
    random_kills: int = 2
    pauses: int = 1  # SIGSTOP a random worker for pause_seconds (past a lease's ttl)
    pause_seconds: float = 1.5
    flushes: int = 0  # FLUSHALL
    client_pauses: int = 0  # CLIENT PAUSE client_pause_ms WRITE (past the socket timeout)
    client_pause_ms: int = 1500
    redis_stops: int = 0  # SIGSTOP Redis for redis_stop_seconds
    redis_stop_seconds: float = 1.0
    master_kills: int = 0  # SIGKILL the master of a Sentinel deployment (run_history's server)
    crash_points: int = 3  # how many of the first workers die at a named crash point
    max_cached: int = 2
    pool: int = 120
    quiet_sessions: int = 0  # extra sessions read as often as the others, written rarely
    quiet_weight: float = 0.03  # a quiet session's share of writes, against 1 for the others
    socket_timeout: float = 0.5  # the workers' Redis timeouts


@dataclass
class Run:
    plan: Plan
    workdir: Path
    ops: list[Op] = field(default_factory=list)
    finals: dict[str, SessionFinal] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        outcomes = Counter(f"{op.f}:{op.outcome or 'died'}" for op in self.ops)
        won = sum(len(op.result["won"]) for op in self.ops if op.ok and op.f == "claim")
        lines = sum(len(final.journal) for final in self.finals.values())
        views = Counter(name for final in self.finals.values() for name in final.views)
        return (
            f"seed {self.plan.seed}: {len(self.ops)} operations "
            f"({', '.join(f'{k}={v}' for k, v in sorted(outcomes.items()))}); "
            f"{lines} journal lines, {won} ids won; faults: {'; '.join(self.faults)}; "
            f"views compared per reader: {dict(views)}; fresh readers' sources: "
            f"{dict(self.sources)}; histories in {self.workdir}"
        )


class _Controller:
    def __init__(
        self, workdir: Path, server: RedisServerProcess | LocalSentinel, plan: Plan
    ) -> None:
        self.workdir = workdir
        self.server = server
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.root = workdir / "root"
        self.root.mkdir()
        (workdir / "histories").mkdir()
        self.sessions = [f"agent:history:s{n}" for n in range(plan.sessions)]
        self.quiet = [f"agent:history:q{n}" for n in range(plan.quiet_sessions)]
        self.sessions += self.quiet
        self.prefix = f"hist{plan.seed:x}{os.getpid():x}"
        self.started = time.time()
        self.deadline = self.started + STARTUP_SECONDS + plan.seconds
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.faults: list[str] = []
        self.windows: list[Window] = []
        self.open_windows: dict[str, tuple[str, int]] = {}  # "redis"/victim -> (kind, start)
        self.replacements = 0
        self.flag = workdir / "fault-active"  # a workload hint: write quiet sessions now

    def spawn(self, name: str, crash_target: str | None = None) -> None:
        config = WorkerConfig(
            name=name,
            data_root=str(self.root),
            redis_url=self.server.url,
            key_prefix=self.prefix,
            sessions=self.sessions,
            quiet=self.quiet,
            quiet_weight=self.plan.quiet_weight,
            fault_flag=str(self.flag),
            socket_timeout=self.plan.socket_timeout,
            seed=self.plan.seed * 1_000 + len(self.procs),
            deadline=self.deadline,
            history=str(self.workdir / "histories" / f"{name}.jsonl"),
            max_cached=self.plan.max_cached,
            pool=self.plan.pool,
            crash_target=crash_target,
            crash_call=self.rng.randint(2, 8) if crash_target else 0,
        )
        config_path = self.workdir / f"{name}.json"
        config.dump(config_path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
        with open(self.workdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "history.worker", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if crash_target:
            self.faults.append(f"{name} dies after call {config.crash_call} of {crash_target}")

    def replace(self, dead: str) -> None:
        if self.deadline - time.time() > STARTUP_SECONDS:
            self.replacements += 1
            self.spawn(f"r{self.replacements}")
            self.faults.append(f"r{self.replacements} replaces {dead}")

    def reap(self, name: str, proc: subprocess.Popen[bytes], running: dict[str, bool]) -> None:
        status = proc.poll()
        if status is None or not running[name]:
            return
        running[name] = False
        if status == -signal.SIGKILL:
            self.faults.append(f"{name} was killed at {self.elapsed()}")
            self.replace(name)
        elif status != 0:
            log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {name} exited with status {status}:\n{log}")

    def elapsed(self) -> str:
        return f"{time.time() - self.started:.2f} s"

    def run(self) -> None:
        targets = self.rng.sample(CRASH_POINTS, min(self.plan.crash_points, len(CRASH_POINTS)))
        for n in range(self.plan.workers):
            self.spawn(f"w{n}", targets[n] if n < len(targets) else None)
        start = self.deadline - self.plan.seconds
        kinds = (
            ["restart"] * self.plan.redis_restarts
            + ["kill"] * self.plan.random_kills
            + ["pause"] * self.plan.pauses
            + ["flushall"] * self.plan.flushes
            + ["client-pause"] * self.plan.client_pauses
            + ["redis-stop"] * self.plan.redis_stops
            + ["master-kill"] * self.plan.master_kills
        )
        events = sorted((start + self.rng.uniform(0.1, 0.9) * self.plan.seconds, k) for k in kinds)
        running = dict.fromkeys(self.procs, True)
        while time.time() < self.deadline or any(p.poll() is None for p in self.procs.values()):
            for name, proc in list(self.procs.items()):
                running.setdefault(name, True)
                self.reap(name, proc, running)
            if events and time.time() >= events[0][0]:
                _, kind = events.pop(0)
                self.fault(kind, running, events)
            if time.time() > self.deadline + 60:
                raise RuntimeError("workers still running a minute after the deadline")
            time.sleep(0.02)
        for _, kind in events:  # heal what is still frozen (Redis, or a stopped worker)
            if kind == "redis-cont" or kind.startswith("resume "):
                self.fault(kind, running, [])
        for name, proc in self.procs.items():
            self.reap(name, proc, running)
        for owner, (kind, began) in self.open_windows.items():  # a victim killed while stopped
            self.windows.append(Window(kind, began, time.time_ns(), _process_of(owner)))

    def close_window(self, owner: str) -> None:
        if owner in self.open_windows:
            kind, began = self.open_windows.pop(owner)
            self.windows.append(Window(kind, began, time.time_ns(), _process_of(owner)))

    def redis_fault(self, kind: str, events: list[tuple[float, str]]) -> None:
        if "redis" in self.open_windows:  # frozen: one Redis fault at a time
            events.append((time.time() + self.plan.redis_stop_seconds, kind))
            events.sort()
            return
        began = time.time_ns()
        self.flag.touch()
        # The hint lasts while the fault does (a pause, a freeze: writes time out) or a
        # moment after it (a restart, a flush: writers still hold the old epoch).
        if kind != "redis-stop":  # (that one calms down at its SIGCONT)
            lasts = self.plan.client_pause_ms / 1000 if kind == "client-pause" else CALM_SECONDS
            events.append((time.time() + lasts, "calm"))
            events.sort()
        if isinstance(self.server, LocalSentinel):
            if kind == "master-kill":  # the one fault a Sentinel deployment takes here
                old = self.server.master()
                old.kill()
                killed = self.elapsed()
                new = self.server.wait_new_master(old)
                self.faults.append(
                    f"master :{old.port} killed at {killed}, :{new.port} took over at "
                    f"{self.elapsed()}"
                )
                self.windows.append(Window(kind, began, time.time_ns(), None))
            return
        if kind == "restart":
            self.server.restart()
            self.faults.append(f"Redis restarted empty at {self.elapsed()}")
        elif kind == "flushall":
            with self.server.client(socket_timeout=5) as admin:
                admin.flushall()
            self.faults.append(f"FLUSHALL at {self.elapsed()}")
        elif kind == "client-pause":
            ms = self.plan.client_pause_ms
            with self.server.client(socket_timeout=5) as admin:
                admin.execute_command("CLIENT", "PAUSE", ms, "WRITE")
            self.windows.append(Window(kind, began, time.time_ns() + ms * 1_000_000, None))
            self.faults.append(f"CLIENT PAUSE {ms} WRITE at {self.elapsed()}")
            return
        else:  # redis-stop
            self.server.pause()
            self.open_windows["redis"] = (kind, began)
            events.append((time.time() + self.plan.redis_stop_seconds, "redis-cont"))
            events.sort()
            self.faults.append(f"SIGSTOP Redis at {self.elapsed()}")
            return
        self.windows.append(Window(kind, began, time.time_ns(), None))

    def fault(self, kind: str, running: dict[str, bool], events: list[tuple[float, str]]) -> None:
        if kind in ("restart", "flushall", "client-pause", "redis-stop", "master-kill"):
            self.redis_fault(kind, events)
            return
        if kind == "calm":
            self.flag.unlink(missing_ok=True)
            return
        if kind == "redis-cont":
            self.flag.unlink(missing_ok=True)
            self.server.resume()
            self.close_window("redis")
            self.faults.append(f"SIGCONT Redis at {self.elapsed()}")
            return
        if kind.startswith("resume "):
            victim = kind.removeprefix("resume ")
            if running[victim]:
                self.procs[victim].send_signal(signal.SIGCONT)
                self.close_window(victim)
                self.faults.append(f"SIGCONT {victim} at {self.elapsed()}")
            return
        alive = sorted(n for n, up in running.items() if up and n not in self.open_windows)
        if not alive:
            return
        victim = self.rng.choice(alive)
        if kind == "kill":
            self.procs[victim].kill()
            self.faults.append(f"SIGKILL {victim} at {self.elapsed()}")
        else:
            self.open_windows[victim] = ("worker-stop", time.time_ns())
            self.procs[victim].send_signal(signal.SIGSTOP)
            self.faults.append(f"SIGSTOP {victim} at {self.elapsed()}")
            events.append((time.time() + self.plan.pause_seconds, f"resume {victim}"))
            events.sort()


def run_history(workdir: Path, server: RedisServerProcess | LocalSentinel, plan: Plan) -> Run:
    """Run ``plan`` against ``server`` (which it restarts, flushes, pauses and freezes; or a
    Sentinel deployment whose master it kills), and gather what the checker needs."""
    controller = _Controller(workdir, server, plan)
    controller.run()
    run = Run(plan, workdir, faults=controller.faults, windows=controller.windows)
    for path in sorted((workdir / "histories").glob("*.jsonl")):
        run.ops += read_history(path)
    for session in controller.sessions:
        run.finals[session] = read_files(controller.root, session)
    _read_views(run, controller.root, controller.sessions, server.url, controller.prefix)
    return run


def _process_of(owner: str) -> str | None:
    """The process a fault window concerns (``None``: Redis, so every process)."""
    return None if owner == "redis" else owner


# -- the final state ----------------------------------------------------------------------
def _paths(root: Path, session: str) -> SessionPaths:
    return SessionPaths.for_identity(root, resolve_identity(session))


def _valid_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects with a non-empty string ``tool_call_id``, read without the library."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        tool_call_id = line.get("tool_call_id") if isinstance(line, dict) else None
        if isinstance(tool_call_id, str) and tool_call_id:
            lines.append(line)
    return lines


def read_files(root: Path, session: str) -> SessionFinal:
    paths = _paths(root, session)
    return SessionFinal(journal=_valid_lines(paths.journal), claims=_valid_lines(paths.claims))


def _manager_view(manager: OffloadStateManager) -> View:
    return View.of(
        manager.confirmed_offload_ids,
        manager.deleted_offload_ids,
        manager.processed_tool_call_ids,
        manager.entry_count,
    )


def _redis_snapshot_view(registry: SessionRegistry, root: Path, session: str) -> View | None:
    """The snapshot Redis holds (deltas applied), when it claims to reflect both files whole."""
    snapshot = registry.tier.load(resolve_identity(session))
    if snapshot is None or snapshot.watermark is None:
        return None
    paths = _paths(root, session)
    claims_size = paths.claims.stat().st_size if paths.claims.exists() else 0
    claims_at = snapshot.claims_watermark.offset if snapshot.claims_watermark else 0
    if snapshot.watermark.offset != paths.journal.stat().st_size or claims_at != claims_size:
        return None  # lagging: readers catch up from the files, nothing to compare
    state = snapshot.state
    processed = set(state.processed) | snapshot.claimed
    return View.of(state.confirmed, state.deleted, processed, state.entry_count)


def _inspect(root: Path, sessions: list[str], url: str | None, prefix: str) -> dict[str, View]:
    args = [sys.executable, "-m", "offload_registry.cli.main", "--data-root", str(root)]
    if url is not None:
        args += ["--redis-url", url, "--key-prefix", prefix]
    done = subprocess.run(
        [*args, "inspect", "--json", *sessions], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"inspect failed ({done.returncode}): {done.stderr}")
    views = {}
    for line in done.stdout.splitlines():
        got = json.loads(line)
        views[got["session_key"]] = View.of(
            got["confirmed"], got["deleted"], got["processed"], got["entry_count"]
        )
    return views


def _read_views(run: Run, root: Path, sessions: list[str], url: str, prefix: str) -> None:
    def add(reader: str, session: str, view: View | None) -> None:
        if view is not None:
            run.finals[session].views[reader] = view

    with SessionRegistry(root, redis_url=url, key_prefix=prefix, read_only=True) as registry:
        for session in sessions:
            add("the Redis snapshot the workers left", session,
                _redis_snapshot_view(registry, root, session))  # fmt: skip
    for session, view in _inspect(root, sessions, url, prefix).items():
        add("inspect --json with Redis", session, view)
    with SessionRegistry(root, redis_url=url, key_prefix=prefix, max_cached=1) as registry:
        for session in sessions:
            manager = registry.resolve(session).manager
            run.sources[f"redis registry: {manager.source}"] += 1
            add("a new registry with Redis", session, _manager_view(manager))
        for session in sessions:
            add("the Redis snapshot after a new registry's resolve", session,
                _redis_snapshot_view(registry, root, session))  # fmt: skip
    with SessionRegistry(root, read_only=True, max_cached=1) as registry:
        for session in sessions:
            add("a new registry without Redis", session,
                _manager_view(registry.resolve(session).manager))  # fmt: skip
    for session, view in _inspect(root, sessions, None, prefix).items():
        add("inspect --json without Redis", session, view)
