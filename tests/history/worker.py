"""One worker process: seeded random traffic over shared sessions, every call recorded.

Run as ``python -m history.worker CONFIG.json`` (``tests`` on ``PYTHONPATH``). The worker
opens the blocking ``SessionRegistry`` with a small near cache, so sessions are evicted and
reloaded often, and until the deadline picks a session and an operation at random:

* ``resolve``; ``read`` (which of its own acknowledged ids it sees); ``view`` (every id its
  resolve shows, normalized: the live view the checker holds to the staleness bound);
  ``refresh``; ``evict``;
* ``append`` of 1-4 entries: fresh ids of its own, or ids of a pool shared with every other
  worker, spelled in several forms that normalize alike (``call_7``, ``call7``, ``ca_ll_7``);
* ``mark`` of 1-3 ids as ``True`` or ``"deleted"``;
* ``claim`` of 1-4 pool ids, sometimes an id together with its normalized form;
* a ``lease`` (acquire, 1-2 appends fenced by it, release) when the manager offers leases.

Errors that guarantee the call had no effect (the lease is held by another worker, a write's
lease was lost, so it was fenced off) are recorded as ``fail``; any other as ``info``.

Each journal entry carries the id of the operation that wrote it (``op``), which lets the
checker tie every line back to its append.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from history.faults import die_after
from history.record import HistoryWriter
from offload_registry.config import TierOptions
from offload_registry.sync import OffloadStateManager, SessionRegistry

OPERATIONS = ("resolve", "read", "append", "mark", "claim", "evict", "refresh", "lease", "view")
WEIGHTS = (2, 2, 5, 2, 5, 1, 1, 1, 2)
WRITES = ("append", "mark", "claim", "lease")
HINTED = 0.15  # the share of writes sent to quiet sessions while the fault flag exists
SPELLINGS = ("call_{}", "call{}", "ca_ll_{}")
SOCKET_TIMEOUT = 0.5
DEFINITE_ERRORS = ("LeaseUnavailableError", "LeaseLostError")  # refused, nothing done


@dataclass
class WorkerConfig:
    name: str
    data_root: str
    redis_url: str | None
    key_prefix: str
    sessions: list[str]
    seed: int
    deadline: float  # wall-clock seconds (time.time())
    history: str
    max_cached: int = 2
    pool: int = 40
    crash_target: str | None = None  # die right after this function's crash_call-th call
    crash_call: int = 0
    lease_ttl: float = 1.0
    lease_wait: float = 0.2
    quiet: list[str] | None = None  # sessions written rarely (read as often as the others)
    quiet_weight: float = 0.03  # a quiet session's share of writes, against 1 for the others
    fault_flag: str | None = None  # exists while a Redis fault is on or just healed
    socket_timeout: float = SOCKET_TIMEOUT

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


def leases_available() -> bool:
    return hasattr(OffloadStateManager, "lease")


class Worker:
    def __init__(self, config: WorkerConfig, registry: SessionRegistry) -> None:
        self.config = config
        self.registry = registry
        self.rng = random.Random(config.seed)
        self.history = HistoryWriter(Path(config.history), config.name, config.seed)
        self.fresh = 0
        self.mine: dict[str, list[str]] = defaultdict(list)  # ids acknowledged to us

    # -- arguments ------------------------------------------------------------------------
    def pool_id(self) -> str:
        return self.rng.choice(SPELLINGS).format(self.rng.randrange(self.config.pool))

    def new_id(self) -> str:
        self.fresh += 1
        return f"{self.config.name}_n{self.fresh}"

    def entries(self, op: str, token: int | None = None) -> list[dict[str, Any]]:
        batch = []
        for _ in range(self.rng.randint(1, 4)):
            tool_call_id = self.new_id() if self.rng.random() < 0.5 else self.pool_id()
            entry: dict[str, Any] = {"tool_call_id": tool_call_id, "summary": "s", "op": op}
            status = self.rng.choice([None, True, "deleted"])
            if status is not None:
                entry["offloaded"] = status
            if token is not None:
                entry["lease_token"] = token
            batch.append(entry)
        return batch

    def claim_ids(self) -> list[str]:
        ids = [self.pool_id() for _ in range(self.rng.randint(1, 4))]
        if self.rng.random() < 0.3:
            ids.append(ids[0].replace("_", "") if "_" in ids[0] else f"call_{ids[0][4:]}")
        return ids

    def mark_statuses(self, session: str) -> dict[str, Any]:
        known = self.mine[session]
        statuses: dict[str, Any] = {}
        for _ in range(self.rng.randint(1, 3)):
            tool_call_id = (
                self.rng.choice(known) if known and self.rng.random() < 0.6 else self.pool_id()
            )
            statuses[tool_call_id] = self.rng.choice([True, "deleted"])
        return statuses

    # -- operations -----------------------------------------------------------------------
    def record(self, f: str, session: str, args: dict[str, Any], call: Any) -> Any:
        index = self.history.invoke(f, session, args)
        try:
            result = call()
        except Exception as exc:
            definite = type(exc).__name__ in DEFINITE_ERRORS
            self.history.failed(index, exc, definite=definite)
            if not definite:
                logging.getLogger("history.worker").warning("%s failed: %r", f, exc)
            return None
        self.history.ok(index, result)
        return result

    def manager(self, session: str) -> OffloadStateManager:
        return self.registry.resolve(session).manager

    def append(self, session: str, lease: Any = None) -> None:
        op = f"{self.config.name}:{self.history.next_index}"
        token = None if lease is None else int(lease.token)
        entries = self.entries(op, token)
        args: dict[str, Any] = {"entries": entries}
        fenced: dict[str, Any] = {}
        if lease is not None and _accepts(OffloadStateManager.append_entries, "lease"):
            args["token"], fenced["lease"] = token, lease

        def call() -> dict[str, int]:
            return {"written": self.manager(session).append_entries(entries, **fenced)}

        if self.record("append", session, args, call) is not None:
            self.mine[session] += [e["tool_call_id"] for e in entries]

    def step(self) -> None:
        session = self.rng.choice(self.config.sessions)
        f = self.rng.choices(OPERATIONS, WEIGHTS)[0]
        quiet = self.config.quiet or []
        if quiet and f in WRITES:
            # Quiet sessions go seconds without a write: a write whose announcement was lost
            # is not papered over by the next one, so the live view can see it missing. Half
            # writes go to them around a Redis fault, when announcements get lost.
            flag = self.config.fault_flag
            if flag and os.path.exists(flag) and self.rng.random() < HINTED:
                session = self.rng.choice(quiet)
            else:
                weights = [
                    self.config.quiet_weight if s in quiet else 1.0 for s in self.config.sessions
                ]
                session = self.rng.choices(self.config.sessions, weights)[0]
        if f == "resolve":
            self.record("resolve", session, {}, lambda: self.resolve(session))
        elif f == "read":
            known = self.mine[session]
            probe = self.rng.sample(known, min(4, len(known)))
            self.record("read", session, {"probe": probe}, lambda: self.read(session, probe))
        elif f == "append":
            self.append(session)
        elif f == "mark":
            statuses = self.mark_statuses(session)
            self.record(
                "mark",
                session,
                {"statuses": statuses},
                lambda: {"changed": self.manager(session).mark_offload_status(statuses)},
            )
        elif f == "claim":
            ids = self.claim_ids()
            result = self.record(
                "claim", session, {"ids": ids}, lambda: {"won": self.manager(session).claim(ids)}
            )
            if result is not None:
                self.mine[session] += result["won"]
        elif f == "evict":
            self.record("evict", session, {}, lambda: {"evicted": self.registry.evict(session)})
        elif f == "refresh":
            self.record("refresh", session, {}, lambda: self.manager(session).refresh())
        elif f == "lease" and leases_available():
            self.lease(session)
        elif f == "view":
            self.record("view", session, {}, lambda: self.view(session))

    def resolve(self, session: str) -> dict[str, Any]:
        manager = self.manager(session)
        return {"entry_count": manager.entry_count, "source": manager.source}

    def view(self, session: str) -> dict[str, list[str]]:
        processed = self.manager(session).processed_tool_call_ids
        return {"processed": sorted({i.replace("_", "") for i in processed})}

    def read(self, session: str, probe: list[str]) -> dict[str, list[str]]:
        manager = self.manager(session)
        return {"unseen": [i for i in probe if not manager.is_processed(i)]}

    def lease(self, session: str) -> None:
        ttl, wait = self.config.lease_ttl, self.config.lease_wait
        with contextlib.ExitStack() as stack:
            held: list[Any] = []

            def acquire() -> dict[str, int]:
                manager: Any = self.manager(session)
                options = {"wait": wait} if _accepts(manager.lease, "wait") else {}
                held.append(stack.enter_context(manager.lease(ttl=ttl, **options)))
                return {"token": int(held[0].token)}

            acquire_id = f"{self.config.name}:{self.history.next_index}"
            if self.record("lease-acquire", session, {"ttl": ttl}, acquire) is None:
                return
            for _ in range(self.rng.randint(1, 2)):
                self.append(session, held[0])
            self.record("lease-release", session, {"acquire": acquire_id}, stack.close)


def _accepts(function: Any, parameter: str) -> bool:
    return parameter in inspect.signature(function).parameters


def main(argv: list[str]) -> int:
    config = WorkerConfig(**json.loads(Path(argv[1]).read_text(encoding="utf-8")))
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {config.name} %(levelname)s %(name)s: %(message)s",
    )
    if config.crash_target:
        die_after(config.crash_target, config.crash_call)
    timeout = config.socket_timeout
    options = TierOptions(
        key_prefix=config.key_prefix, socket_timeout=timeout, connect_timeout=timeout
    )
    with SessionRegistry(
        config.data_root,
        redis_url=config.redis_url,
        redis_options=options,
        max_cached=config.max_cached,
    ) as registry:
        worker = Worker(config, registry)
        while time.time() < config.deadline:
            worker.step()
        worker.history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
