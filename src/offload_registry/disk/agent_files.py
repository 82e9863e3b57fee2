"""The agent-level files of the data root: ``state.json`` and ``sessions-registry.json``.

Both files are shared by every session (and every worker process) of one agent. The seed
read-modified-wrote them with no lock, so the last writer silently dropped the other's
update; here every write is a read-modify-write under an exclusive ``flock`` on the file's
sibling lock file, finished by an atomic replace, so concurrent writers serialize and a
crash leaves the old or the new file, never a torn one.

Read and written in the project's one JSON dialect (:mod:`offload_registry.jsjson`), as the
seed's ``JSON.parse`` and ``JSON.stringify(obj, null, 2)`` do: the bytes written have no
trailing newline and camelCase keys in the seed's order. Keys this module does not know are
carried over untouched, so data written by newer seeds is not lost; a file that cannot be
parsed is copied to ``<name>.corrupt-<unix ms>`` before it is replaced.

Every open goes through :mod:`offload_registry.disk.fsutil`'s safe-open layer: a link or a
non-regular file in the place of one of these files (or of the agent directory) raises
:class:`~offload_registry.errors.UnsafePathError`; nothing is followed out of the data root.
New files get the caller's ``mode`` (owner-only by default).

Everything here is blocking POSIX I/O; async callers run it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
    FILE_DEPTH,
    FsyncPolicy,
    opened_dir,
    read_file_bytes,
    safe_open,
)
from offload_registry.disk.json_file import (
    ensure_agent_dir,
    is_lossy,
    keep_corrupt_copy,
    parse_object,
    read_for_update,
    write_json,
)
from offload_registry.disk.layout import journal_name, mmds_dir, registry_path, state_path
from offload_registry.disk.locks import file_lock
from offload_registry.errors import JournalError, UnsafePathError
from offload_registry.jsjson import parse_json_line

__all__ = [
    "AgentState",
    "JSONScalar",
    "SessionRecord",
    "allocate_mmd_number",
    "format_iso_ms",
    "next_mmd_number",
    "read_agent_state",
    "read_session_registry",
    "register_session",
    "update_agent_state",
]

logger = logging.getLogger(__name__)

JSONScalar: TypeAlias = str | int | float | bool | None
"""A JSON value that is not an array or an object."""

# "<number>-<label>.mmd"; ASCII digits only (``\d`` would also take other scripts' digits)
# and ``\Z`` so that a name ending in a newline does not match.
_MMD_NAME = re.compile(r"([0-9]+)-.*\.mmd\Z", re.DOTALL)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- state.json


@dataclass(frozen=True, slots=True)
class AgentState:
    """The fields of an agent's ``state.json``, with the seed's defaults.

    ``last_l2_trigger_time`` keeps whatever JSON scalar the file held (the seed stores a
    clock value; its type is not fixed).
    """

    active_mmd_file: str | None = None
    active_mmd_id: str | None = None
    mmd_counter: int = 0
    last_session_key: str | None = None
    last_offloaded_tool_call_id: str | None = None
    last_l2_trigger_time: JSONScalar = None
    estimated_system_overhead: int | float | None = None

    def to_json_dict(self) -> dict[str, JSONScalar]:
        """The camelCase JSON object, keys in the seed's order."""
        return {json_key: getattr(self, attr) for attr, json_key, _, _ in _STATE_FIELDS}

    @classmethod
    def from_json_dict(cls, d: Mapping[str, object]) -> AgentState:
        """Build a state from a parsed ``state.json`` object, tolerantly.

        A missing key, or a value of the wrong type, gives that field's default (logged at
        DEBUG); unknown keys are ignored here (``update_agent_state`` preserves them).
        """
        values: dict[str, JSONScalar] = {}
        for attr, json_key, valid, default in _STATE_FIELDS:
            if json_key not in d:
                continue
            value = d[json_key]
            if valid(value):
                values[attr] = _normalize(attr, value)
            else:
                logger.debug(
                    "state.json field %s has an unusable value %r; using the default %r",
                    json_key,
                    value,
                    default,
                    extra={"field": json_key},
                )
        return cls(**values)  # type: ignore[arg-type]  # each value passed its field's check


def _is_optional_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_counter(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    # JavaScript has one number type; an integral float such as 3.0 is the integer 3.
    return isinstance(value, float) and value.is_integer() and value >= 0


def _is_optional_number(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def _is_scalar(value: object) -> bool:
    return (value is None or isinstance(value, str | bool | int)) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _normalize(attr: str, value: object) -> JSONScalar:
    if attr == "mmd_counter" and isinstance(value, float):
        return int(value)
    return value  # type: ignore[return-value]  # checked by the field's validator


# (attribute, JSON key, validator, default), in the seed's key order.
_STATE_FIELDS: tuple[tuple[str, str, Callable[[object], bool], JSONScalar], ...] = (
    ("active_mmd_file", "activeMmdFile", _is_optional_str, None),
    ("active_mmd_id", "activeMmdId", _is_optional_str, None),
    ("mmd_counter", "mmdCounter", _is_counter, 0),
    ("last_session_key", "lastSessionKey", _is_optional_str, None),
    ("last_offloaded_tool_call_id", "lastOffloadedToolCallId", _is_optional_str, None),
    ("last_l2_trigger_time", "lastL2TriggerTime", _is_scalar, None),
    ("estimated_system_overhead", "estimatedSystemOverhead", _is_optional_number, None),
)


def _strict_values(state: AgentState) -> tuple[tuple[type, JSONScalar], ...]:
    """The field values with their types, so ``1``, ``1.0`` and ``True`` compare unequal."""
    return tuple((type(v), v) for v in (getattr(state, f[0]) for f in _STATE_FIELDS))


def read_agent_state(agent_dir: Path) -> AgentState:
    """Read ``agent_dir/state.json`` without locking (writers replace it atomically).

    A missing file gives the defaults; an unreadable or corrupt one (not UTF-8, not JSON,
    not an object) gives the defaults and a WARNING. Never raises for the file's content; a
    link or non-regular file in its place raises :class:`UnsafePathError`.
    """
    path = state_path(agent_dir)
    try:
        raw = read_file_bytes(path)
    except FileNotFoundError:
        return AgentState()
    except UnsafePathError:
        raise
    except OSError as exc:
        logger.warning(
            "cannot read %s (%s); using the default state",
            path,
            exc,
            extra={"path": str(path)},
        )
        return AgentState()
    obj = parse_object(path, raw)
    return AgentState() if obj is None else AgentState.from_json_dict(obj)


_QUICK_CHECK_BYTES = 64 * 1024
"""The most of ``state.json`` :func:`names_last_session` reads (the seed's file is a few
hundred bytes): it runs on the event loop, so a bloated file must not stall it."""


def names_last_session(agent_dir: Path, session_key: str) -> bool:
    """True when ``state.json`` already holds ``session_key`` as ``lastSessionKey``, read
    without locking: then recording that key would write nothing, so a cold resolve can skip
    the locked read-modify-write (and its thread hop).

    Exactly :func:`update_agent_state`'s no-write condition for that update, read from one
    version of the file (writers replace it atomically; a torn in-place write by another
    tool does not parse, or does not hold the key). Quiet and never raising: a missing,
    unreadable, unsafe, non-UTF-8 or corrupt file gives ``False``, and the locked update then
    reports it as before; so does a file over ``_QUICK_CHECK_BYTES`` (it is read and parsed in
    the locked update's worker thread instead, never on the event loop).
    """
    try:
        with os.fdopen(safe_open(state_path(agent_dir), os.O_RDONLY), "rb") as f:
            raw = f.read(_QUICK_CHECK_BYTES + 1)
        if len(raw) > _QUICK_CHECK_BYTES:
            return False
        obj = parse_json_line(raw.decode("utf-8-sig"), any_depth=False)
    except (OSError, JournalError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("lastSessionKey") == session_key


def update_agent_state(
    agent_dir: Path,
    update: Callable[[AgentState], AgentState],
    fsync: FsyncPolicy,
    *,
    now: Callable[[], datetime] = _utc_now,
    mode: int = DEFAULT_FILE_MODE,
) -> AgentState:
    """Apply ``update`` to the agent's state and persist the result; returns the new state.

    Durability and concurrency: the read, ``update`` and the write all run under an exclusive
    lock on ``state.json`` (so concurrent updaters in any process serialize and none is
    lost), the file is replaced atomically (fsynced with its directory under
    ``FsyncPolicy.ALWAYS``), and a crash leaves the old or the new file, never a mix.

    Nothing is written when the new state equals the one read (values and JSON types).
    Keys the file holds that this module does not know, and the raw values of known keys
    the update did not change, are written back as they were. A corrupt file (or one not
    valid UTF-8) is copied to ``state.json.corrupt-<unix ms of now()>`` before it is replaced.
    ``agent_dir`` is created when missing. Raises ``JournalError`` when the file exists but
    cannot be read, or cannot be written (:class:`UnsafePathError` when it is a link or not a
    regular file). New files get ``mode``.
    """
    path = state_path(agent_dir)
    ensure_agent_dir(agent_dir, fsync, mode)
    with file_lock(path, mode=mode):
        raw = read_for_update(path)
        obj = None if raw is None else parse_object(path, raw)
        old = AgentState() if obj is None else AgentState.from_json_dict(obj)
        new = update(old)
        if _strict_values(new) == _strict_values(old):
            return new
        if raw is not None and (obj is None or is_lossy(raw)):
            # Unparseable, or decoded with U+FFFD: the rewrite would lose bytes, keep them.
            keep_corrupt_copy(path, raw, fsync, _unix_ms(now()), mode)
        write_json(path, _merge_state(obj or {}, old, new), fsync, mode)
        return new


def _merge_state(raw: Mapping[str, object], old: AgentState, new: AgentState) -> dict[str, object]:
    """The object to write: known keys in the seed's order, then the file's other keys.

    A known key the update left unchanged keeps its raw value from the file (even one that
    ``from_json_dict`` rejected), so an update never rewrites what it did not touch.
    """
    out: dict[str, object] = {}
    for attr, json_key, _, _ in _STATE_FIELDS:
        old_value = getattr(old, attr)
        new_value = getattr(new, attr)
        unchanged = type(old_value) is type(new_value) and old_value == new_value
        out[json_key] = raw[json_key] if unchanged and json_key in raw else new_value
    for key, value in raw.items():
        if key not in out:
            out[key] = value
    return out


# ------------------------------------------------------------------------------- MMD numbers


def next_mmd_number(agent_dir: Path, state: AgentState) -> int:
    """One more than the larger of ``state.mmd_counter`` and the highest ``<number>`` of the
    ``<number>-<label>.mmd`` names in ``agent_dir/mmds``; a missing or unreadable directory
    counts as empty (a link in its place raises :class:`UnsafePathError`). Reads only;
    callers that use the number should hold the state lock, as ``allocate_mmd_number`` does.
    """
    highest = state.mmd_counter
    mmds = mmds_dir(agent_dir)
    try:
        with opened_dir(mmds, FILE_DEPTH) as fd:
            names = os.listdir(fd)
    except FileNotFoundError:
        names = []
    except UnsafePathError:
        raise
    except OSError as exc:
        logger.warning(
            "cannot list %s (%s); counting no MMD files", mmds, exc, extra={"path": str(mmds)}
        )
        names = []
    for name in names:
        match = _MMD_NAME.match(name)
        if match is not None:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def allocate_mmd_number(
    agent_dir: Path,
    fsync: FsyncPolicy,
    *,
    now: Callable[[], datetime] = _utc_now,
    mode: int = DEFAULT_FILE_MODE,
) -> int:
    """Reserve the next MMD number: ``next_mmd_number`` stored as ``mmdCounter`` and returned.

    Durability and concurrency: the ``mmds/`` scan and the counter write happen under the
    exclusive ``state.json`` lock, so no two callers in any process get the same number; the
    write is an atomic replace (fsynced under ``FsyncPolicy.ALWAYS``), and a crash before it
    returns leaves the old counter, so an unreturned number may be handed out again.
    """
    allocated = 0

    def take(state: AgentState) -> AgentState:
        nonlocal allocated
        allocated = next_mmd_number(agent_dir, state)
        return dataclasses.replace(state, mmd_counter=allocated)

    update_agent_state(agent_dir, take, fsync, now=now, mode=mode)
    return allocated


# ------------------------------------------------------------------- sessions-registry.json


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One entry of ``sessions-registry.json`` (JSON keys ``sessionId``, ``offloadFile``,
    ``updatedAt``)."""

    session_id: str
    offload_file: str
    updated_at: str

    def to_json_dict(self) -> dict[str, str]:
        """The camelCase JSON object, keys in the seed's order."""
        return {
            "sessionId": self.session_id,
            "offloadFile": self.offload_file,
            "updatedAt": self.updated_at,
        }


def read_session_registry(agent_dir: Path) -> dict[str, SessionRecord]:
    """Read ``agent_dir/sessions-registry.json`` without locking (writers replace it
    atomically), in file order.

    A missing file gives ``{}``; an unreadable or corrupt one gives ``{}`` and a WARNING.
    An entry without a non-empty string ``sessionId`` is skipped; a missing or non-string
    ``offloadFile`` is derived from the session id, a missing ``updatedAt`` reads as ``""``
    (each logged at DEBUG). Never raises for the file's content (a link or non-regular file
    in its place raises :class:`UnsafePathError`).
    """
    path = registry_path(agent_dir)
    try:
        raw = read_file_bytes(path)
    except FileNotFoundError:
        return {}
    except UnsafePathError:
        raise
    except OSError as exc:
        logger.warning(
            "cannot read %s (%s); using an empty session registry",
            path,
            exc,
            extra={"path": str(path)},
        )
        return {}
    obj = parse_object(path, raw)
    if obj is None:
        return {}
    records: dict[str, SessionRecord] = {}
    for key, entry in obj.items():
        record = _parse_record(entry)
        if record is None:
            logger.debug(
                "%s: entry %r has no usable sessionId; skipped",
                path,
                key,
                extra={"path": str(path), "session_key": key},
            )
        else:
            records[key] = record
    return records


def _parse_record(entry: object) -> SessionRecord | None:
    if not isinstance(entry, dict):
        return None
    session_id = entry.get("sessionId")
    if not isinstance(session_id, str) or not session_id:
        return None
    offload_file = entry.get("offloadFile")
    updated_at = entry.get("updatedAt")
    if not isinstance(offload_file, str) or not isinstance(updated_at, str):
        logger.debug(
            "session registry entry for %r lacks offloadFile or updatedAt",
            session_id,
            extra={"session_id": session_id},
        )
    return SessionRecord(
        session_id=session_id,
        offload_file=(offload_file if isinstance(offload_file, str) else journal_name(session_id)),
        updated_at=updated_at if isinstance(updated_at, str) else "",
    )


def register_session(
    agent_dir: Path,
    session_key: str,
    session_id: str,
    fsync: FsyncPolicy,
    now: Callable[[], datetime] = _utc_now,
    *,
    mode: int = DEFAULT_FILE_MODE,
) -> None:
    """Record ``session_key -> {sessionId, offloadFile, updatedAt}`` in the agent's registry.

    Durability and concurrency: the read-modify-write runs under an exclusive lock on
    ``sessions-registry.json`` (concurrent registrations in any process are all kept), the
    file is replaced atomically (fsynced with its directory under ``FsyncPolicy.ALWAYS``),
    and a crash leaves the old or the new file, never a mix.

    No write happens when the key already maps to the same ``sessionId`` and ``offloadFile``
    (``updatedAt`` is not refreshed on its own). Other keys, and unknown fields of the
    entry, are kept. ``updatedAt`` is ``now()`` in UTC as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (a
    naive ``now()`` is taken as UTC). A corrupt file is copied to
    ``sessions-registry.json.corrupt-<unix ms>`` (WARNING) and replaced by a fresh registry;
    one that is not valid UTF-8 is copied too, and kept with U+FFFD for the bad bytes.
    ``session_id`` must be a safe session id (``keys.resolve_identity``; it names the journal).
    ``agent_dir`` is created when missing. Raises ``JournalError`` when the file exists but
    cannot be read, or cannot be written (:class:`UnsafePathError` when it is a link or not a
    regular file). New files get ``mode``.
    """
    path = registry_path(agent_dir)
    offload_file = journal_name(session_id)
    ensure_agent_dir(agent_dir, fsync, mode)
    with file_lock(path, mode=mode):
        raw = read_for_update(path)
        obj = None if raw is None else parse_object(path, raw)
        registry: dict[str, object] = dict(obj) if obj is not None else {}
        current = registry.get(session_key)
        if (
            isinstance(current, dict)
            and current.get("sessionId") == session_id
            and current.get("offloadFile") == offload_file
        ):
            return
        entry: dict[str, object] = {
            "sessionId": session_id,
            "offloadFile": offload_file,
            "updatedAt": format_iso_ms(now()),
        }
        if isinstance(current, dict):
            entry.update((k, v) for k, v in current.items() if k not in entry)
        registry[session_key] = entry
        if raw is not None and (obj is None or is_lossy(raw)):
            # Unparseable, or decoded with U+FFFD: the rewrite would lose bytes, keep them.
            keep_corrupt_copy(path, raw, fsync, _unix_ms(now()), mode)
        write_json(path, registry, fsync, mode)


def format_iso_ms(moment: datetime) -> str:
    """``moment`` in UTC as JavaScript's ``Date.toISOString()`` writes it:
    ``2026-11-25T21:31:20.953Z`` (milliseconds truncated; a naive datetime is taken as UTC).
    """
    utc = _as_utc(moment)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


# ---------------------------------------------------------------------------- shared helpers


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _unix_ms(moment: datetime) -> int:
    return (_as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)
