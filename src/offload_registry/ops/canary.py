"""The canary: a long-lived worker that runs agent-like traffic on the real data root and
checks the registry's guarantees while it does, for deployments.

Every replica works in one agent namespace of its own (``--agent``, default
``offload-canary``) on the mounted data root and the deployment's Redis, so it exercises
exactly the paths an agent worker takes (journal locks across hosts, Redis, invalidations)
without touching any real agent's sessions. Replicas share the canary sessions on purpose:
their claims contend, and each replica checks what the others wrote.

Sessions rotate: the keys of a round are ``agent:<agent>:b<bucket>-s<n>`` with
``bucket = wall clock // bucket_seconds``. A session whose bucket is ``keep_buckets`` or more
behind the current one is nobody's to write any more (replicas agree on the bucket up to
their clock skew, which must stay far below ``bucket_seconds``); the canary deletes its
files and drops its Redis copy. Redis copies also expire by themselves (the tier's idle TTL).

Each round, on one session: append an entry with a fresh id and check it is visible; claim
ids drawn from a small shared range and check the claims record holds each won id once
and under this replica; mark the entry and check its status; every ``verify_every`` rounds,
re-read the journal from disk and check every id this replica acknowledged is there and the
manager knows every id the journal holds. A broken check is a *violation*: logged at ERROR
with the session key, counted in the metrics, and never fatal (a deployment must see it in
its dashboards, not in a crash loop); ``run`` returns the count.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload_registry.disk import layout
from offload_registry.disk.journal import read_journal
from offload_registry.disk.locks import file_lock
from offload_registry.errors import ConfigurationError, OffloadRegistryError, UnsafePathError
from offload_registry.keys import resolve_identity
from offload_registry.session_state import normalize_id

log = logging.getLogger(__name__)

SESSION_PREFIX = "b"


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    """What the canary does; every field has the CLI option of the same name."""

    agent: str = "offload-canary"
    sessions: int = 3
    interval: float = 1.0
    """Seconds between two rounds."""
    bucket_seconds: int = 600
    """How long one set of canary sessions is written before the next bucket starts."""
    keep_buckets: int = 2
    """Buckets kept on disk (the current one included); older ones are deleted."""
    claim_range: int = 50
    """Ids per session that claims are drawn from (small, so replicas contend)."""
    verify_every: int = 10
    """Rounds between two full re-reads of a session's journal."""
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


@dataclass(slots=True)
class CanaryStats:
    """Counters a scrape reads (plain ints: written by the canary thread only)."""

    rounds: int = 0
    appends: int = 0
    claims_won: int = 0
    claims_lost: int = 0
    marks: int = 0
    checks: int = 0
    violations: int = 0
    errors: int = 0
    """Rounds that raised (Redis down is not one: the registry rides it out on the journals)."""
    sessions_removed: int = 0
    last_round_ok_unix: float = 0.0


class Canary:
    """Runs rounds on a blocking :class:`~offload_registry.sync.SessionRegistry` until
    ``stop`` is set. Not thread-safe: one thread runs it; others only read ``stats``."""

    def __init__(
        self,
        registry: Any,
        plan: CanaryPlan,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if resolve_identity(f"agent:{plan.agent}:s").agent_name != plan.agent or ":" in plan.agent:
            # Its clean-up deletes files under <root>/<agent>: the agent must be exactly the
            # one directory a key names, never a path ('..', '/', ...) or a renamed one.
            raise ConfigurationError(
                f"the canary's agent must be a plain agent name (one directory in the data "
                f"root), not {plan.agent!r}"
            )
        self.registry = registry
        self.plan = plan
        self.stats = CanaryStats()
        self._clock = clock
        self._rng = rng or random.Random()
        self._acknowledged: dict[str, set[str]] = {}  # session key -> ids this replica wrote
        self._removed_through = -1  # every bucket up to this one has been cleaned

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, max_seconds: float | None = None) -> int:
        """Run rounds every ``plan.interval`` seconds until ``stop`` is set (or
        ``max_seconds`` passed); returns the number of violations seen."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not stop.is_set():
            self.round()
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(self.plan.interval)
        return self.stats.violations

    def round(self) -> None:
        """One round on the next session: write, check, and clean up old buckets."""
        bucket = self.bucket()
        key = self.session_key(bucket, self.stats.rounds % self.plan.sessions)
        self.stats.rounds += 1
        try:
            self._exercise(key)
        except OffloadRegistryError as exc:
            self.stats.errors += 1
            log.warning("canary round on %s failed: %s", key, exc, extra={"session_key": key})
        else:
            self.stats.last_round_ok_unix = self._clock()
        try:
            self._remove_old_buckets(bucket)
        except OffloadRegistryError as exc:
            log.warning("canary clean-up failed: %s", exc)

    def bucket(self) -> int:
        return int(self._clock() // self.plan.bucket_seconds)

    def session_key(self, bucket: int, n: int) -> str:
        return f"agent:{self.plan.agent}:{SESSION_PREFIX}{bucket}-s{n}"

    # -- one session ------------------------------------------------------------------------
    def _exercise(self, key: str) -> None:
        manager = self.registry.resolve(key).manager
        tool_call_id = f"{self.plan.replica}-r{self.stats.rounds}"
        manager.append_entries([_entry(tool_call_id, self.plan.replica)])
        self.stats.appends += 1
        self._acknowledged.setdefault(key, set()).add(tool_call_id)
        self._check(key, manager.is_processed(tool_call_id), f"appended {tool_call_id!r} unseen")

        wanted = [f"claim-{self._rng.randrange(self.plan.claim_range)}" for _ in range(3)]
        won = manager.claim(wanted)
        self.stats.claims_won += len(won)
        self.stats.claims_lost += len(set(wanted)) - len(won)
        self._check_claims(key, manager, won)

        manager.mark_offload_status({tool_call_id: True})
        self.stats.marks += 1
        self._check(
            key, tool_call_id in manager.confirmed_offload_ids, f"mark of {tool_call_id!r} unseen"
        )
        if self.stats.rounds % self.plan.verify_every == 0:
            self._check_journal(key, manager)

    def _check(self, key: str, holds: bool, violation: str) -> None:
        self.stats.checks += 1
        if not holds:
            self.stats.violations += 1
            log.error("canary violation on %s: %s", key, violation, extra={"session_key": key})

    def _check_claims(self, key: str, manager: Any, won: list[str]) -> None:
        """The claims record (the commit point) holds every id once, and each id won here
        under this replica's owner."""
        # Claims are written under the journal's lock: read the record under it, shared.
        with file_lock(manager.journal_path, shared=True, create=False):
            records = read_journal(layout.claims_beside(manager.journal_path), lock=False).entries
        mine = f"{os.uname().nodename}:{os.getpid()}:"  # the managers' owner prefix here
        owners: dict[str, list[str]] = {}
        for record in records:
            owners.setdefault(normalize_id(record["tool_call_id"]), []).append(
                str(record.get("owner", ""))
            )
        twice = sorted(i for i, holders in owners.items() if len(holders) > 1)
        self._check(key, not twice, f"ids won more than once: {twice[:5]}")
        for tool_call_id in won:
            holders = owners.get(normalize_id(tool_call_id), [])
            self._check(
                key,
                len(holders) == 1 and holders[0].startswith(mine),
                f"won {tool_call_id!r} but the claims record says {holders}",
            )

    def _check_journal(self, key: str, manager: Any) -> None:
        """Every id acknowledged here is on disk, and the manager knows every id on disk."""
        manager.refresh()
        on_disk = {e["tool_call_id"] for e in read_journal(manager.journal_path).entries}
        lost = sorted(self._acknowledged.get(key, set()) - on_disk)
        self._check(key, not lost, f"acknowledged ids missing from the journal: {lost[:5]}")
        unknown = sorted(i for i in on_disk if not manager.is_processed(i))
        self._check(key, not unknown, f"journal ids the worker does not see: {unknown[:5]}")

    # -- clean-up ---------------------------------------------------------------------------
    def _remove_old_buckets(self, bucket: int) -> None:
        """Delete the sessions of every bucket ``keep_buckets`` or more behind ``bucket``.

        Durability and concurrency: each session's files are unlinked under its journal's
        exclusive lock (the lock file last), so no replica is mid-write in them; nobody
        writes an old bucket again, so nothing acknowledged is lost that a check still needs.
        """
        newest_old = bucket - self.plan.keep_buckets
        if newest_old <= self._removed_through:
            return
        agent_dir = Path(self.registry.data_root) / self.plan.agent
        if agent_dir.is_symlink():  # never delete through a link planted in the data root
            raise UnsafePathError(str(agent_dir), "refused: it is a symbolic link", "a link")
        for journal in _canary_journals(agent_dir):
            session_bucket = _bucket_of(journal)
            if session_bucket is not None and session_bucket <= newest_old:
                key = f"agent:{self.plan.agent}:{layout.session_id_of(journal.name)}"
                self._remove_session(key, journal)
        self._removed_through = newest_old

    def _remove_session(self, key: str, journal: Path) -> None:
        self.registry.evict(key)
        self._acknowledged.pop(key, None)
        drop = getattr(self.registry.tier, "drop_sessions", None)
        if drop is not None:  # a Redis tier: drop the copy now rather than at its idle TTL
            keyspace = self.registry.tier.keyspace
            try:
                drop([keyspace.session_for(resolve_identity(key))])
            except Exception as exc:  # Redis down: the idle TTL removes it later
                log.info("canary: cannot drop %s from Redis now: %s", key, exc)
        with file_lock(journal):
            for path in _session_files(journal):
                path.unlink(missing_ok=True)
        layout.lock_path(journal).unlink(missing_ok=True)
        self.stats.sessions_removed += 1
        log.info("canary: removed old session %s", key, extra={"session_key": key})


def _session_files(journal: Path) -> Iterator[Path]:
    claims, lease = layout.claims_beside(journal), layout.lease_beside(journal)
    yield from (journal, claims, lease)
    for sibling in (claims, lease):
        yield layout.lock_path(sibling)


def _canary_journals(agent_dir: Path) -> list[Path]:
    try:
        return sorted(agent_dir.glob(layout.journal_name(f"{SESSION_PREFIX}*-s*")))
    except OSError:
        return []


def _bucket_of(journal: Path) -> int | None:
    stem = layout.session_id_of(journal.name).removeprefix(SESSION_PREFIX)
    digits = stem.split("-", 1)[0]
    return int(digits) if digits.isdigit() else None


def _entry(tool_call_id: str, replica: str) -> dict[str, Any]:
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "node_id": None,
        "tool_call": "canary",
        "summary": f"canary entry of {replica}",
        "result_ref": layout.ref_name(tool_call_id),
        "tool_call_id": tool_call_id,
        "score": 1,
    }
