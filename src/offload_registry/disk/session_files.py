"""One session's files on disk and the locked, blocking operations on them.

This is the journal tier: the durable truth. It knows nothing of Redis or caches; the async
and sync managers call it (the async one from a worker thread) and apply what it returns to
their in-memory state on their own thread, so live set views are never mutated behind a
reader's back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from offload_registry.changes import TierSnapshot
from offload_registry.disk import agent_files, layout, lease_files
from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
    FsyncPolicy,
    ensure_dir,
)
from offload_registry.disk.journal import StatusScan, Watermark, current_watermark, scan_journal
from offload_registry.disk.journal_mark import mark_journal
from offload_registry.disk.journal_write import append_entries_to_file
from offload_registry.disk.lease_files import RELEASED, LeaseRecord
from offload_registry.disk.locks import file_lock
from offload_registry.errors import InvalidSessionKeyError, JournalError, LeaseLostError
from offload_registry.jsjson import clean_json
from offload_registry.keys import SessionIdentity
from offload_registry.session_state import (
    SessionState,
    canonical_entry,
    canonical_tool_call_id,
    id_forms,
    normalize_id,
)

log = logging.getLogger(__name__)

JsonValue = Any
OffloadStatus = JsonValue  # True, "deleted", or any JSON value the caller chooses


@dataclass(frozen=True, slots=True)
class SessionPaths:
    """Where one session lives under the data root (every component already made safe)."""

    data_root: Path
    agent_dir: Path
    journal: Path
    claims: Path
    lease: Path

    @classmethod
    def for_identity(cls, data_root: Path, identity: SessionIdentity) -> SessionPaths:
        agent_dir = layout.agent_dir(data_root, identity.agent_name)
        journal = layout.journal_path(agent_dir, identity.session_id)
        claims = layout.claims_path(agent_dir, identity.session_id)
        lease = layout.lease_path(agent_dir, identity.session_id)
        paths = cls(data_root, agent_dir, journal, claims, lease)
        paths._check_inside_root()
        return paths

    def _check_inside_root(self) -> None:
        # Defence in depth: the keys module already guarantees single safe components.
        # Lexical, not resolve(): the data root itself may be a link. Links *below* it (an
        # agent directory, a journal) are refused when opened, by fsutil's safe-open layer.
        root = os.path.normpath(self.data_root)
        agent_dir = os.path.normpath(self.agent_dir)
        if (
            os.path.dirname(agent_dir) != root
            or os.path.dirname(os.path.normpath(self.journal)) != agent_dir
        ):
            raise InvalidSessionKeyError(str(self.journal), "resolves outside the data root")


@dataclass(slots=True)
class Rebuilt:
    """A session rebuilt from disk."""

    state: SessionState
    watermark: Watermark | None
    claimed: set[str]
    claims_watermark: Watermark | None
    corrupt: int
    invalid: int

    def snapshot(self) -> TierSnapshot:
        return TierSnapshot(self.state, self.claimed, self.watermark, self.claims_watermark)


@dataclass(slots=True)
class CatchUp:
    """What other writers added since our watermark (a full state when the file was replaced)."""

    added: SessionState = field(default_factory=SessionState)
    replaced: bool = False
    watermark: Watermark | None = None

    @classmethod
    def from_scan(cls, scan: StatusScan) -> CatchUp:
        return cls(SessionState.from_scan(scan.ids, scan.statuses), scan.replaced, scan.watermark)

    @property
    def changed(self) -> bool:
        return self.replaced or self.added.entry_count > 0

    def apply_to(self, state: SessionState) -> SessionState:
        if self.replaced:
            return self.added
        state.merge(self.added)
        return state

    def contains_id(self, state: SessionState, tool_call_id: str) -> bool:
        if self.replaced:
            return self.added.contains_id(tool_call_id)
        return state.contains_id(tool_call_id) or self.added.contains_id(tool_call_id)


@dataclass(slots=True)
class AppendResult:
    catch_up: CatchUp
    written: list[dict[str, Any]]
    watermark: Watermark | None


@dataclass(slots=True)
class ClaimResult:
    catch_up: CatchUp
    won: list[str]
    claimed_since: set[str]  # every id (with forms) newly found in or added to the record
    claims_base: Watermark | None  # the record's position before the won ids were added
    claims_watermark: Watermark | None


def _all_forms(ids: Iterable[str]) -> set[str]:
    return {form for tool_call_id in ids for form in id_forms(tool_call_id)}


class SessionFiles:
    """Blocking, locked operations on one session's journal and claims record.

    Not thread-safe by itself: the manager serializes calls with its own lock, and the
    journal's ``flock`` serializes processes. Files it creates get ``file_mode`` and
    directories the matching directory mode (owner-only by default); every open refuses a
    link or a non-regular file below the data root with ``UnsafePathError``.
    """

    def __init__(
        self,
        paths: SessionPaths,
        fsync: FsyncPolicy,
        read_only: bool,
        file_mode: int = DEFAULT_FILE_MODE,
        *,
        clock_ms: Callable[[], int] = lease_files.now_ms,
    ) -> None:
        self.paths = paths
        self.fsync = fsync
        self.read_only = read_only
        self.file_mode = file_mode
        self.clock_ms = clock_ms
        """The wall clock (ms) lease records expire by (injectable, like the registry's)."""

    # -- reads --------------------------------------------------------------------------
    def rebuild(self) -> Rebuilt:
        """Read the whole journal and claims record (shared lock; never creates a file)."""
        # One shared lock over both files: claims are written under the journal's lock.
        with file_lock(self.paths.journal, shared=True, create=False):
            read = scan_journal(self.paths.journal, lock=False)
            claims = scan_journal(self.paths.claims, lock=False)
        state = SessionState.from_scan(read.ids, read.statuses)
        claimed = _all_forms(claims.ids)
        return Rebuilt(
            state,
            read.watermark,
            claimed,
            claims.watermark,
            read.corrupt,
            read.invalid,
        )

    def catch_up(self, since: Watermark | None, *, locked: bool = False) -> CatchUp:
        """What the journal gained since ``since`` (reads only the new tail when it grew).

        ``locked=True`` when the caller already holds the journal's exclusive lock (a shared
        ``flock`` on a second descriptor would wait for it forever).
        """
        return CatchUp.from_scan(scan_journal(self.paths.journal, since, lock=not locked))

    def catch_up_claims(self, since: Watermark | None) -> tuple[set[str], Watermark | None, bool]:
        """Ids (with forms) claimed since ``since`` in the claims record, the new position, and
        whether the record was read in full (it was replaced or is new to us)."""
        with file_lock(self.paths.journal, shared=True, create=False):
            scan = scan_journal(self.paths.claims, since, lock=False)
        return _all_forms(scan.ids), scan.watermark, scan.replaced

    def positions(self) -> tuple[Watermark | None, Watermark | None]:
        """Where the journal and the claims record end now, without reading them (an
        ``fstat`` and a 64-byte read each; unlocked: a write in progress only makes a position
        differ from any taken after it, never match a wrong one)."""
        return current_watermark(self.paths.journal), current_watermark(self.paths.claims)

    def catch_up_all(
        self, since: Watermark | None, claims_since: Watermark | None
    ) -> tuple[CatchUp, set[str], Watermark | None]:
        """:meth:`catch_up` and :meth:`catch_up_claims` in one call (one thread hop)."""
        claimed, claims_watermark, _ = self.catch_up_claims(claims_since)
        return self.catch_up(since), claimed, claims_watermark

    # -- writes -------------------------------------------------------------------------
    def require_writable(self) -> None:
        if self.read_only:
            raise JournalError(str(self.paths.journal), "registry opened read-only")

    def _ensure_agent_dir(self) -> None:
        """Create the agent directory (and the data root) if missing; a link in its place
        raises ``UnsafePathError``."""
        ensure_dir(self.paths.agent_dir, mode=self.file_mode, fsync=self.fsync)

    def append(
        self,
        state: SessionState,
        since: Watermark | None,
        entries: Sequence[Mapping[str, Any]],
        fence: int | None = None,
    ) -> AppendResult:
        """Append the entries whose id (or normalized id) the journal does not hold yet.

        Each entry is first made what a reader gets back (:func:`canonical_entry`: its id
        canonical, unsafe characters gone); an entry without a valid id refuses the whole
        batch (:class:`InvalidToolCallIdError`) before anything is written. ``written`` holds
        the canonical entries.

        Durability and concurrency: runs under the journal's exclusive ``flock``; first
        checks ``fence`` (a lease token) against the lease record, then catches up with lines
        other processes appended, then writes all new lines in one ``write`` call, fsynced per
        the policy; a crash leaves the file without the batch or with it whole (a torn last
        line is isolated on its own line by the next append).
        """
        self.require_writable()
        canonical = [canonical_entry(entry) for entry in entries]
        self._ensure_agent_dir()
        with file_lock(self.paths.journal, mode=self.file_mode):
            self._check_fence(fence)
            catch_up = self.catch_up(since, locked=True)
            batch_forms: set[str] = set()
            fresh: list[dict[str, Any]] = []
            for entry in canonical:
                tool_call_id = entry["tool_call_id"]
                if catch_up.contains_id(state, tool_call_id):
                    continue
                forms = id_forms(tool_call_id)
                if tool_call_id in batch_forms or normalize_id(tool_call_id) in batch_forms:
                    continue
                batch_forms.update(forms)
                fresh.append(entry)
            watermark = catch_up.watermark
            if fresh:
                watermark = append_entries_to_file(
                    self.paths.journal, fresh, self.fsync, mode=self.file_mode
                )
            return AppendResult(catch_up, fresh, watermark)

    def mark(
        self, statuses: Mapping[str, OffloadStatus], fence: int | None = None
    ) -> tuple[Rebuilt, int]:
        """Set ``offloaded`` on the entries named in ``statuses`` (matched by normalized id).

        Only the named values change
        (:func:`~offload_registry.disk.journal_mark.mark_journal`): other lines keep their bytes
        and a mark that changes nothing writes nothing. Each id is canonical first and each
        status cleaned as the writer writes it; when two ids share a normalized form the later
        status wins. An id with no canonical form refuses the whole
        call (:class:`InvalidToolCallIdError`) before anything is written.

        Durability and concurrency: under the journal's exclusive ``flock`` (after checking
        ``fence`` against the lease record) the file is
        rewritten to a temp file, fsynced, renamed over the journal and the directory fsynced
        (per the policy); a crash leaves the old or the new journal, and an append racing the
        rewrite waits for the lock, so it is never lost.
        """
        self.require_writable()
        by_normalized = {
            normalize_id(canonical_tool_call_id(k)): clean_json(v) for k, v in statuses.items()
        }
        if not self.paths.journal.exists():
            if fence is not None:
                with file_lock(self.paths.journal, mode=self.file_mode):
                    self._check_fence(fence)
            rebuilt = self.rebuild()
            return rebuilt, 0
        with file_lock(self.paths.journal, mode=self.file_mode):
            self._check_fence(fence)
            marked = mark_journal(
                self.paths.journal, by_normalized, self.fsync, mode=self.file_mode
            )
            claims = scan_journal(self.paths.claims, lock=False)
            rebuilt = Rebuilt(
                SessionState.from_scan(marked.ids, marked.statuses),
                marked.watermark,
                _all_forms(claims.ids),
                claims.watermark,
                marked.corrupt,
                marked.invalid,
            )
            return rebuilt, marked.changed

    def claim(
        self,
        state: SessionState,
        claimed: AbstractSet[str],
        *,
        since: Watermark | None,
        claims_since: Watermark | None,
        ids: Iterable[str],
        owner: str,
        fence: int | None = None,
    ) -> ClaimResult:
        """Win each id that neither the journal nor the claims record holds yet.

        Ids are made canonical first (the record holds and ``won`` returns canonical ids); an
        id with no canonical form refuses the whole call before anything is written.

        Durability and concurrency: under the journal's exclusive ``flock`` the won ids are
        appended to the claims record and fsynced (per the policy) before this returns, so a
        won claim survives any crash and no two callers sharing the data root win one id.
        """
        self.require_writable()
        ids = [canonical_tool_call_id(i) for i in ids]
        self._ensure_agent_dir()
        with file_lock(self.paths.journal, mode=self.file_mode):
            self._check_fence(fence)
            catch_up = self.catch_up(since, locked=True)
            claims_read = scan_journal(self.paths.claims, claims_since, lock=False)
            taken = _all_forms(claims_read.ids)
            won: list[str] = []
            for tool_call_id in ids:
                forms = id_forms(tool_call_id)
                if catch_up.contains_id(state, tool_call_id) or any(
                    f in taken or f in claimed for f in forms
                ):
                    continue
                taken.update(forms)
                won.append(tool_call_id)
            claims_watermark = claims_read.watermark
            if won:
                stamp = time.time()
                records = [{"tool_call_id": i, "owner": owner, "claimed_at": stamp} for i in won]
                claims_watermark = append_entries_to_file(
                    self.paths.claims, records, self.fsync, mode=self.file_mode
                )
            return ClaimResult(catch_up, won, taken, claims_read.watermark, claims_watermark)

    # -- leases (the journal side; see lease_files) ------------------------------------------
    def _check_fence(self, fence: int | None) -> None:
        """Refuse a write whose lease token a newer grant superseded (caller holds the lock)."""
        if fence is None:
            return
        current = lease_files.current_token(self.paths.lease)
        if current > fence:
            raise LeaseLostError(
                str(self.paths.journal), fence, "a newer holder took the session", current
            )

    def lease_record(self) -> LeaseRecord | None:
        """The newest lease record (a lock-free read, as :meth:`lease_floor`)."""
        return lease_files.read_record(self.paths.lease)

    def lease_floor(self) -> int:
        """The highest token ever granted (a lock-free read: the record is replaced
        atomically); a Redis grant must exceed it."""
        return lease_files.current_token(self.paths.lease)

    def commit_lease(self, record: LeaseRecord) -> str:
        """Record a grant made by Redis: ``"ok"``, ``"behind"`` (the record already holds this
        token or a newer one: Redis went backwards) or ``"busy"`` (an unexpired lease granted
        without Redis by another holder).

        Durability and concurrency: under the journal's exclusive ``flock``, the record is
        replaced atomically and fsynced (per policy) before the grant is used; a crash before
        that leaves the old record, and the grant is never used.
        """
        self.require_writable()
        self._ensure_agent_dir()
        with file_lock(self.paths.journal, mode=self.file_mode):
            current = lease_files.read_record(self.paths.lease)
            if current is not None and current.token >= record.token:
                return "behind"
            if current is not None and current.held_by_other(record.holder, self.clock_ms()):
                return "busy"
            lease_files.write_record(self.paths.lease, record, self.fsync, mode=self.file_mode)
            return "ok"

    def grant_lease(self, holder: str, ttl_ms: int) -> LeaseRecord | None:
        """Grant the lease from the record alone (no Redis): the next token, or ``None``
        while another holder's lease is unexpired.

        Durability and concurrency: as :meth:`commit_lease` (locked, atomic, fsynced).
        """
        self.require_writable()
        self._ensure_agent_dir()
        with file_lock(self.paths.journal, mode=self.file_mode):
            current = lease_files.read_record(self.paths.lease)
            now = self.clock_ms()
            if current is not None and current.held_by_other(holder, now):
                return None
            token = 1 if current is None else current.token + 1
            record = LeaseRecord(token, holder, now + ttl_ms)
            lease_files.write_record(self.paths.lease, record, self.fsync, mode=self.file_mode)
            return record

    def renew_lease(self, record: LeaseRecord) -> bool:
        """Extend a held lease's expiry in the record; ``False`` (lost) when the record names
        a newer token, or this token released by its holder (a renewal racing the release
        never brings the lease back).

        Durability and concurrency: as :meth:`commit_lease` (locked, atomic, fsynced).
        """
        with file_lock(self.paths.journal, mode=self.file_mode):
            current = lease_files.read_record(self.paths.lease)
            if current is not None and (
                current.token > record.token
                or (current.token == record.token and current.holder != record.holder)
            ):
                return False
            lease_files.write_record(self.paths.lease, record, self.fsync, mode=self.file_mode)
            return True

    def release_lease(self, token: int, holder: str) -> None:
        """Mark the lease released in the record if it is still the newest (the token stays,
        so tokens keep growing; the holder is cleared, so no late renewal revives it).
        Durability and concurrency: as :meth:`commit_lease`."""
        with file_lock(self.paths.journal, mode=self.file_mode):
            current = lease_files.read_record(self.paths.lease)
            if current is not None and current.token == token and current.holder == holder:
                released = LeaseRecord(current.token, RELEASED, 0)
                lease_files.write_record(
                    self.paths.lease, released, self.fsync, mode=self.file_mode
                )

    def session_recorded(self, session_key: str, real_session_id: str | None) -> bool:
        """True when :meth:`record_session` would write nothing: read-only, or no real session
        id and ``state.json`` already names the key (:func:`agent_files.names_last_session`,
        an unlocked read of one small file, cheap enough to run on the event loop). With a
        real session id this answers ``False`` (``sessions-registry.json`` can be large)."""
        if self.read_only:
            return True
        return not real_session_id and agent_files.names_last_session(
            self.paths.agent_dir, session_key
        )

    def record_session(self, session_key: str, real_session_id: str | None) -> None:
        """Remember the last session key in ``state.json`` and, when the caller passed a real
        session id, the key's mapping in ``sessions-registry.json`` (both locked and atomic,
        written only when they change)."""
        if self.read_only:
            return
        agent_dir = self.paths.agent_dir
        agent_files.update_agent_state(  # creates the agent directory, safely, if missing
            agent_dir,
            lambda s: s if s.last_session_key == session_key else _with_last_key(s, session_key),
            self.fsync,
            mode=self.file_mode,
        )
        if real_session_id:
            session_id = layout.session_id_of(self.paths.journal.name)
            agent_files.register_session(
                agent_dir, session_key, session_id, self.fsync, mode=self.file_mode
            )


def _with_last_key(state: agent_files.AgentState, key: str) -> agent_files.AgentState:
    return replace(state, last_session_key=key)
