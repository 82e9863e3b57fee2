# GENERATED from src/offload_registry/_async/manager.py by scripts/unasync.py. Do not edit.
"""OffloadStateManager: one session's offload state and every operation the seed offers on it.

Reads are answered from memory. Every write goes to the files first (journal or claims
record: locked, fsynced per policy), then to this object's sets, then to the shared tier
(best effort), so the files are always at least as new as anything a reader can see. A
claim asks Redis's claim filter before the files, but the filter can only make a caller
lose sooner: the claims record decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from offload_registry._sync._primitives import (
    Lock,
    Thunk,
    run_blocking,
    run_to_completion,
)
from offload_registry._sync.lease import Lease, LeaseKeeper
from offload_registry._sync.loader import load_session
from offload_registry._sync.tier import SharedTier
from offload_registry.changes import APPEND, CLAIMS, SessionChange, TierSnapshot
from offload_registry.disk import agent_files
from offload_registry.disk.agent_files import AgentState
from offload_registry.disk.journal import Watermark
from offload_registry.disk.session_files import CatchUp, OffloadStatus, SessionFiles
from offload_registry.errors import LeaseLostError, LeaseUnavailableError
from offload_registry.freshness import CopyFreshness
from offload_registry.keys import SessionIdentity
from offload_registry.session_state import (
    SessionState,
    SetView,
    approx_set_bytes,
    canonical_tool_call_id,
    id_forms,
)
from offload_registry.stats import RegistryStats

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(AgentState))


class OffloadStateManager(CopyFreshness):
    """The per-session state of the seed's ``OffloadStateManager``, shared through the journal.

    The three id sets are read-only live views; each holds ids and their normalized forms.

    Every method that takes or tests a tool call id works on its canonical form
    (:func:`~offload_registry.session_state.canonical_tool_call_id`: the id a reader of the
    journal gets back, without unsafe characters), in memory, in the shared tier and on disk
    alike; an id with no canonical form raises :class:`InvalidToolCallIdError` (a
    ``ValueError``) and the call does nothing. Ids read from an existing journal are kept as
    read, as the seed reads them.
    """

    def __init__(
        self,
        identity: SessionIdentity,
        files: SessionFiles,
        tier: SharedTier,
        *,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
        stats: RegistryStats | None = None,
        on_resize: Callable[[], None] | None = None,
    ) -> None:
        """``clock`` (monotonic seconds) times the session's leases; lease records expire by
        ``files.clock_ms``. A registry passes its own ``clock_ns`` (wall clock, ns: when a
        copy must be revalidated), its ``stats`` (shared by its sessions) and ``on_resize``
        (called when the copy grew or shrank, so the near cache re-weighs it)."""
        self.identity = identity
        self._files = files
        self._tier = tier
        self._lock = Lock()
        self._state = SessionState()
        self._watermark: Watermark | None = None
        self._claimed: set[str] = set()
        self._claims_watermark: Watermark | None = None
        # Whether this copy was read from the files by this process; a copy from the shared
        # tier is rebuilt from them at its first claim (see _claim).
        self._from_disk = True
        self._runtime_processed: set[str] = set()
        self._pending: dict[str, Any] = {}
        self._pending_forms: set[str] = set()  # every form of the buffered ids
        self._pending_lock = threading.Lock()  # the sync twin's threads share a manager
        self._l1_lock = threading.Lock()
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self.source = "new"
        self._init_freshness(clock_ns)  # see offload_registry.freshness
        self.writer_id = uuid.uuid4().hex[:12]  # names this copy in invalidation messages
        self.corrupt_lines = 0
        self.invalid_lines = 0
        self._leases = LeaseKeeper(identity, files, tier, clock=clock)
        self.on_resize = on_resize
        self.stats = stats if stats is not None else RegistryStats()

    # -- identity and state ---------------------------------------------------------------
    @property
    def agent_name(self) -> str:
        return self.identity.agent_name

    @property
    def session_id(self) -> str:
        return self.identity.session_id

    @property
    def session_key(self) -> str:
        return self.identity.session_key

    @property
    def agent_dir(self) -> Path:
        return self._files.paths.agent_dir

    @property
    def journal_path(self) -> Path:
        return self._files.paths.journal

    @property
    def entry_count(self) -> int:
        """Valid entries in the journal (the seed's entry counter)."""
        return self._state.entry_count

    @property
    def confirmed_offload_ids(self) -> SetView:
        """Ids whose ``offloaded`` is truthy by JavaScript rules, with normalized forms."""
        return SetView(self._state.confirmed)

    @property
    def deleted_offload_ids(self) -> SetView:
        """Ids whose ``offloaded`` is exactly ``"deleted"``, with normalized forms."""
        return SetView(self._state.deleted)

    @property
    def processed_tool_call_ids(self) -> SetView:
        """Ids in the journal, claimed by any worker, or taken from the pending buffer here."""
        return SetView(self._state.processed, self._claimed, self._runtime_processed)

    def approx_bytes(self) -> int:
        """Approximate memory this copy holds (O(1); the near cache's byte bound uses it)."""
        runtime = approx_set_bytes(len(self._claimed) + len(self._runtime_processed))
        return 1024 + self._state.approx_bytes() + runtime

    def _resized(self) -> None:
        if self.on_resize is not None:
            self.on_resize()

    def is_processed(self, tool_call_id: str) -> bool:
        """True when the canonical id or its normalized form is processed (journal, claims or
        runtime; an id another tool wrote with stripped characters counts by its canonical
        form)."""
        state = self._state
        return any(
            form in s
            for form in id_forms(canonical_tool_call_id(tool_call_id))
            for s in (state.processed, state.foreign, self._claimed, self._runtime_processed)
        )

    # -- loading --------------------------------------------------------------------------
    def load(self, then: Callable[[], object] | None = None) -> None:
        """Fill the state from the shared tier, caught up with the files, or rebuild it from
        the journal and publish it (the policy is ``loader.load_session``'s; ``then``,
        blocking, runs in the thread that reads the files' positions)."""
        # Timed before reading anything; a mark since the copy was made (the registry
        # watches before loading) keeps it stale.
        self._trust(self._trust_deadline(), 0)
        loaded = load_session(
            self.identity,
            self._files,
            self._tier,
            writer=self.writer_id,
            stats=self.stats,
            then=then,
        )
        self._install(loaded.snapshot)
        self.source = loaded.source
        self._from_disk = not loaded.from_tier
        self.corrupt_lines, self.invalid_lines = loaded.corrupt_lines, loaded.invalid_lines
        if not self._tier.hears(self.identity):
            # Nobody could tell this copy of a later write: revalidate it on every resolve
            # until the invalidation stream is back (which marks it stale once more).
            self.mark_stale()

    def revalidate(self) -> None:
        """Catch up with the journal's new tail because this copy was marked stale (or has
        not been checked for ``TRUST_SECONDS``).

        Under the manager's lock, so a concurrent resolver waits for the catch-up instead of
        answering from the old copy; a stale mark is cleared only when no invalidation arrived
        meanwhile and the tier can hear the next one (otherwise the next resolve catches up
        again: while the invalidation stream is down, every resolve reads the journal's tail).
        """
        with self._lock:
            with self._trust_lock:  # one reading of both: a mark between them is never lost
                seen, was_stale = self._invalidations, self.stale
            trusted_until = self._trust_deadline()  # before reading the journal
            self.stats.revalidations += 1
            self._catch_up_files()
            if not was_stale or self._tier.hears(self.identity):
                self._trust(trusted_until, seen)

    def refresh(self) -> None:
        """Catch up with what other processes wrote to the journal and the claims record since
        this copy was made (reads only their new tails; re-reads a replaced journal)."""
        with self._lock:
            self._catch_up_files()

    def _catch_up_files(self) -> bool:
        catch_up, claimed, claims_watermark = run_blocking(
            self._files.catch_up_all, self._watermark, self._claims_watermark
        )
        self._apply_catch_up(catch_up)
        self._claimed |= claimed
        self._claims_watermark = claims_watermark
        changed = catch_up.changed or bool(claimed)
        if changed:
            self._resized()
        return changed

    def snapshot(self) -> TierSnapshot:
        """The state as a shared tier stores it (live sets, not copies)."""
        return TierSnapshot(self._state, self._claimed, self._watermark, self._claims_watermark)

    def _install(self, snapshot: TierSnapshot) -> None:
        self._state = snapshot.state
        self._claimed = snapshot.claimed
        self._watermark = snapshot.watermark
        self._claims_watermark = snapshot.claims_watermark

    def _apply_catch_up(self, catch_up: CatchUp) -> None:
        self._state = catch_up.apply_to(self._state)
        self._watermark = catch_up.watermark

    # -- writes ---------------------------------------------------------------------------
    def append_entries(
        self, entries: Sequence[Mapping[str, Any]], *, lease: Lease | None = None
    ) -> int:
        """Append entries whose id (or normalized id) is new; returns how many were written.

        Each entry is stored as a reader gets it back: its id canonical, every string without
        unsafe characters. One entry without a valid id refuses the whole batch
        (:class:`InvalidToolCallIdError`), before anything is written.

        Durability and concurrency: when this returns, the written lines are in the journal,
        fsynced per the registry's policy, appended under the journal's inter-process lock
        after catching up with other writers; a crash before that leaves none of the batch.
        The shared tier is updated after the journal, best effort (a reader catches up from
        the journal if it missed this write; a full snapshot that lands after a later
        writer's is refused, never replacing it). With ``lease``, the write is refused
        (:class:`LeaseLostError`, nothing written) when a newer lease was granted.
        """
        fence = self._fence(lease)
        return self._fenced(lease, lambda: self._append(entries, fence))

    def _append(self, entries: Sequence[Mapping[str, Any]], fence: int | None) -> int:
        with self._lock:
            result = run_blocking(
                self._files.append, self._state, self._watermark, entries, fence
            )
            base = result.catch_up.watermark
            self._apply_catch_up(result.catch_up)
            self._state.apply_entries(result.written)
            self._watermark = result.watermark
            if result.written:
                change = SessionChange(
                    APPEND,
                    [e["tool_call_id"] for e in result.written],
                    base,
                    result.watermark,
                    [(e["tool_call_id"], e.get("offloaded")) for e in result.written],
                )
                self._tier.publish_change(
                    self.identity, change, self.snapshot(), self.writer_id, fence
                )
                self._resized()
            return len(result.written)

    def mark_offload_status(
        self, statuses: Mapping[str, OffloadStatus], *, lease: Lease | None = None
    ) -> int:
        """Set ``offloaded`` for the named ids (``True``, ``"deleted"``, ...); returns how many
        journal entries changed. Ids are matched by their canonical form; one id without one
        refuses the whole call (:class:`InvalidToolCallIdError`) before anything is written.

        Durability and concurrency: the journal is rewritten atomically (temp file, fsync,
        rename, directory fsync per policy) under its inter-process lock; a crash leaves the
        old or the new file, and appends racing the rewrite wait for the lock. The shared
        tier then gets the whole new state, after the lock is released: a mark whose publish
        lands after a later writer's is refused there (``lua/_order.lua``), so Redis never
        goes back along the journal. With ``lease``, refused as in ``append_entries``.
        """
        fence = self._fence(lease)
        return self._fenced(lease, lambda: self._mark(statuses, fence))

    def _mark(self, statuses: Mapping[str, OffloadStatus], fence: int | None) -> int:
        with self._lock:
            rebuilt, changed = run_blocking(self._files.mark, statuses, fence)
            self._install(rebuilt.snapshot())
            self._from_disk = True
            self._tier.publish(self.identity, self.snapshot(), self.writer_id, fence)
            self._resized()
            return changed

    def claim(self, ids: Iterable[str], *, lease: Lease | None = None) -> list[str]:
        """The ids this caller won, in their canonical form: across every process sharing the
        data root each canonical id (with its normalized form) is won once, and an id already
        in the journal is never won. One id without a canonical form refuses the whole call
        (:class:`InvalidToolCallIdError`) before anything is claimed.

        Durability and concurrency: Redis's claim filter (``lua/claim.lua``, one atomic
        script) first drops ids another worker committed or is committing; the rest are
        decided and appended to the session's claims record, fsynced (per policy), under the
        journal's inter-process lock before this returns. The record, not Redis, is the
        commit point, so a claim survives Redis losing it and the filter can only make a
        caller lose sooner, never win twice (a copy loaded from Redis is rebuilt from the
        files at its first claim). A caller cancelled
        meanwhile does not stop the claim: its ids stay won, and are not handed out again.
        With ``lease``, refused as in ``append_entries``.
        """
        wanted = list(dict.fromkeys([canonical_tool_call_id(i) for i in ids]))
        fence = self._fence(lease)
        if not wanted:
            return []
        won = self._fenced(lease, lambda: self._claim(wanted, fence))
        self.stats.claims_won += len(won)
        self.stats.claims_lost += len(wanted) - len(won)
        return won

    def _claim(self, wanted: list[str], fence: int | None) -> list[str]:
        with self._lock:
            if not self._from_disk:
                # The copy came from the shared tier: positions that match the files do not
                # prove it holds every id of the journal and the claims record (a stale or
                # damaged copy may lack one). The files decide claims, so the copy is rebuilt
                # from them once, under their shared lock (claimers elsewhere are not held
                # up); later claims read only what was added since.
                self._install((run_blocking(self._files.rebuild)).snapshot())
                self._from_disk = True
                self._resized()
            # Ids this copy already knows to be taken are lost without asking anyone; then
            # Redis drops the ids it knows were committed; the journal decides the rest.
            wanted = [i for i in wanted if not self._known_taken(i)]
            if not wanted:
                return []
            groups = [list(id_forms(i)) for i in wanted]
            open_groups = self._tier.claim_filter(self.identity, "filter", groups)
            candidates = wanted if open_groups is None else [wanted[i] for i in open_groups]
            if not candidates:
                return []
            result = run_blocking(
                self._files.claim,
                self._state,
                self._claimed,
                since=self._watermark,
                claims_since=self._claims_watermark,
                ids=candidates,
                owner=self._owner,
                fence=fence,
            )
            self._apply_catch_up(result.catch_up)
            self._claimed |= result.claimed_since
            self._claims_watermark = result.claims_watermark
            if result.catch_up.changed or result.claimed_since:
                self._resized()
            # Committed: what follows only informs Redis, and must never turn a won claim
            # into an error for the caller.
            try:
                if open_groups is not None:  # (no point when Redis did not answer)
                    settled = [form for i in candidates for form in id_forms(i)]
                    self._tier.claim_filter(self.identity, "commit", [settled])
                if result.won:
                    change = SessionChange(
                        CLAIMS, result.won, result.claims_base, result.claims_watermark
                    )
                    self._tier.publish_change(
                        self.identity, change, self.snapshot(), self.writer_id, fence
                    )
            except Exception:
                log.exception("claims committed, but telling the shared tier failed")
            return result.won

    def _known_taken(self, tool_call_id: str) -> bool:
        state = self._state
        return any(
            form in self._claimed or form in state.processed or form in state.foreign
            for form in id_forms(tool_call_id)
        )

    # -- leases ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, ttl: float = 30.0, *, wait: float = 0.0) -> Iterator[Lease]:
        """Hold the session's lease for the block: one holder across every worker.

        ``ttl`` seconds without a renewal end it (it renews itself every ``ttl / 3``);
        ``wait`` is how long to wait for another holder to let go before raising
        :class:`LeaseUnavailableError`. Pass the lease to writes (``lease=lease``) to have
        them fenced: refused once a newer holder exists. ``lease.lost`` and
        ``lease.check()`` tell the holder when it lost the lease.

        Durability and concurrency: each grant is committed to the journal's lease record
        (locked, atomic, fsynced per policy) before the block starts, so its token is never
        reused, even after Redis restarts empty; the block's end releases the lease.
        """
        held = self.acquire_lease(ttl, wait=wait)
        try:
            yield held
        finally:
            self.release_lease(held)

    def acquire_lease(self, ttl: float = 30.0, *, wait: float = 0.0) -> Lease:
        """Take the lease without a ``with`` block (pair with :meth:`release_lease`)."""
        try:
            held = self._leases.acquire(ttl, wait)
        except LeaseUnavailableError:
            self.stats.leases_unavailable += 1
            raise
        self.stats.leases_granted += 1
        return held

    def release_lease(self, held: Lease) -> None:
        """Give the lease up (it stops renewing; its token is never granted again)."""
        self._leases.release(held)

    def release_leases(self) -> None:
        """Release every lease still held through this manager (its registry is closing)."""
        self._leases.release_all()

    def _fenced(self, held: Lease | None, work: Thunk[_T]) -> _T:
        """Run a write to completion; a write refused for a stale token also marks the
        lease lost, so its holder stops trusting it at once."""
        try:
            return run_to_completion(work)
        except LeaseLostError as exc:
            if held is not None:
                held._lose(exc.reason)
            raise

    def _fence(self, held: Lease | None) -> int | None:
        if held is None:
            return None
        if held.identity.session_id != self.session_id or (
            held.identity.agent_name != self.agent_name
        ):
            raise ValueError(f"{held!r} is not a lease of {self.session_key!r}")
        held.check()
        return held.token

    # -- runtime-only state (per process, as in the seed) ----------------------------------
    def add_pending_tool_pair(self, tool_call_id: str, pair: Any) -> bool:
        """Buffer a tool call/result pair under its canonical id; refused (``False``) when the
        id is processed or already buffered (in any spelling the id sets treat as the same:
        its normalized form)."""
        tool_call_id = canonical_tool_call_id(tool_call_id)
        with self._pending_lock:
            if self.is_processed(tool_call_id) or any(
                form in self._pending_forms for form in id_forms(tool_call_id)
            ):
                return False
            self._pending[tool_call_id] = pair
            self._pending_forms.update(id_forms(tool_call_id))
            return True

    @property
    def pending_tool_pairs(self) -> list[Any]:
        with self._pending_lock:
            return list(self._pending.values())

    def take_pending_tool_pairs(self) -> list[Any]:
        """Return the buffered pairs and mark their ids processed (never buffered again)."""
        with self._pending_lock:
            taken, self._pending = self._pending, {}
            self._pending_forms = set()
            for tool_call_id in taken:
                self._runtime_processed.update(id_forms(tool_call_id))
            return list(taken.values())

    def try_acquire_l1_lock(self) -> bool:
        """Take the seed's in-process L1 lock without waiting; ``False`` when already held."""
        return self._l1_lock.acquire(blocking=False)

    def release_l1_lock(self) -> None:
        if self._l1_lock.locked():
            self._l1_lock.release()

    @property
    def is_l1_locked(self) -> bool:
        return self._l1_lock.locked()

    # -- agent-level state (state.json, shared by the agent's sessions) -----------------------
    def get_agent_state(self) -> AgentState:
        """The agent's ``state.json`` fields (defaults when missing or unreadable)."""
        return run_blocking(agent_files.read_agent_state, self.agent_dir)

    def update_agent_state(self, **changes: Any) -> AgentState:
        """Set ``state.json`` fields by their snake_case names.

        Durability and concurrency: locked read-modify-write with an atomic replace (fsynced
        per policy), so concurrent updates of other fields are never lost.
        """
        unknown = set(changes) - _STATE_FIELDS
        if unknown:
            raise TypeError(f"unknown agent state fields: {sorted(unknown)}")
        self._files.require_writable()
        return run_blocking(
            agent_files.update_agent_state,
            self.agent_dir,
            lambda state: dataclasses.replace(state, **changes),
            self._files.fsync,
            mode=self._files.file_mode,
        )

    def compare_and_set_agent_state(
        self, expected: Mapping[str, Any], **changes: Any
    ) -> bool:
        """Set ``changes`` only if every field in ``expected`` still has that value; ``True``
        when applied. Lets many workers update ``state.json`` fields without lost updates.

        Durability and concurrency: the comparison and the write happen under the
        ``state.json`` lock, as one locked read-modify-write with an atomic replace (fsynced
        per policy); a crash leaves the old or the new file.
        """
        unknown = (set(changes) | set(expected)) - _STATE_FIELDS
        if unknown:
            raise TypeError(f"unknown agent state fields: {sorted(unknown)}")
        self._files.require_writable()
        applied = False

        def swap(state: AgentState) -> AgentState:
            nonlocal applied
            applied = all(getattr(state, name) == value for name, value in expected.items())
            return dataclasses.replace(state, **changes) if applied else state

        run_blocking(
            agent_files.update_agent_state,
            self.agent_dir,
            swap,
            self._files.fsync,
            mode=self._files.file_mode,
        )
        return applied

    def next_mmd_number(self) -> int:
        """The number the next Mermaid map would get (read only; see ``allocate_mmd_number``)."""
        state = self.get_agent_state()
        return run_blocking(agent_files.next_mmd_number, self.agent_dir, state)

    def allocate_mmd_number(self) -> int:
        """Reserve the next MMD number: no two callers sharing the data root get the same one.

        Durability and concurrency: ``mmdCounter`` is raised under the ``state.json`` lock and
        replaced atomically (fsynced per policy) before the number is returned.
        """
        self._files.require_writable()
        return run_blocking(
            agent_files.allocate_mmd_number,
            self.agent_dir,
            self._files.fsync,
            mode=self._files.file_mode,
        )

    def set_active_mmd(self, mmd_file: str | None, mmd_id: str | None) -> AgentState:
        """Record the active Mermaid map (same durability as ``update_agent_state``)."""
        return self.update_agent_state(active_mmd_file=mmd_file, active_mmd_id=mmd_id)

    def __repr__(self) -> str:
        return (
            f"OffloadStateManager(agent_name={self.agent_name!r}, session_id={self.session_id!r},"
            f" entry_count={self.entry_count}, source={self.source!r})"
        )
