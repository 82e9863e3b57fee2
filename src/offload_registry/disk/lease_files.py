"""The journal side of session leases: the highest fencing token ever granted, on disk.

Redis hands out lease tokens with a counter, but a counter in Redis goes backwards when Redis
restarts empty or fails over to a replica that missed the last grant. So every grant is also
committed here, under the journal's ``flock``, before the holder may use it: the file
``offload-<session-id>.lease`` (one JSON object, replaced atomically) holds the newest token,
its holder and when it expires. Writers that carry a token check it against this record under
the same lock, so the journal itself refuses a write from a superseded holder; and a grant
from a Redis that went backwards is detected here and re-issued above the recorded token.

When no Redis is reachable, the record alone arbitrates (expiry by the wall clock of the
hosts sharing the data root). The seed never reads this file: its name does not end in
``.jsonl``.

All functions are blocking and expect the caller to hold the journal's exclusive lock,
except :func:`read_record` (atomic replacement makes a lock-free read consistent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
    FsyncPolicy,
    atomic_write_bytes,
    read_file_bytes,
)
from offload_registry.errors import JournalError, UnsafePathError

RELEASED = ""
"""The holder of a record whose lease was released (its token still counts)."""

MAX_TOKEN = 2**63 - 1
"""The largest lease token: a signed 64-bit integer. Tokens are exact integers end to end
(decimal strings in Redis, compared digit by digit in the scripts, never through a Lua
double); a record holding anything else is damaged, and no larger token is ever written."""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The newest lease of a session: its fencing token, holder and expiry (wall clock, ms)."""

    token: int
    holder: str
    expires_ms: int

    def held_by_other(self, holder: str, now_ms: int) -> bool:
        return self.holder != holder and self.expires_ms > now_ms


def now_ms() -> int:
    """The wall clock, in ms: the default clock of lease records (``SessionFiles`` and the
    lease keeper take another as ``clock_ms``, so a test expires a record without sleeping)."""
    return time.time_ns() // 1_000_000


def read_record(path: Path) -> LeaseRecord | None:
    """The record, or ``None`` when no lease was ever granted.

    A record that cannot be decoded raises :class:`JournalError`: guessing would risk handing
    out a token that was already used, which is exactly what fencing must never do. A link or
    non-regular file in its place raises :class:`UnsafePathError`.
    """
    try:
        raw = read_file_bytes(path)
    except FileNotFoundError:
        return None
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(str(path), f"cannot read the lease record: {exc}") from exc
    try:
        data = orjson.loads(raw)
        token, holder, expires_ms = data["token"], data["holder"], data["expires_ms"]
        # Exact integers only: a float, a string or a bool was never written by us.
        if type(token) is not int or not 0 <= token <= MAX_TOKEN:
            raise ValueError(f"token {token!r} is not an integer from 0 to {MAX_TOKEN}")
        if type(expires_ms) is not int or type(holder) is not str:
            raise ValueError("holder or expires_ms has the wrong type")
        record = LeaseRecord(token, holder, expires_ms)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise JournalError(str(path), _damaged(exc)) from exc
    return record


def _damaged(exc: Exception) -> str:
    return (
        f"the lease record is damaged ({exc}); restore it from a backup, or, with every worker"
        ' of this session stopped, write {"token": T, "holder": "", "expires_ms": 0} where T'
        " is the highest token this session ever used (its Redis fence key, the lease tokens"
        f" in your logs) plus one: an integer from 1 to {MAX_TOKEN}, kept as small as that"
        " allows (removing the file would let old tokens win)"
    )


def write_record(
    path: Path, record: LeaseRecord, fsync: FsyncPolicy, *, mode: int = DEFAULT_FILE_MODE
) -> None:
    """Replace the record atomically (temp file with ``mode``, fsync per policy, rename,
    directory fsync); the caller holds the journal's exclusive lock, so grants and fenced
    writes serialize. A write that fails raises :class:`JournalError` and leaves the old
    record (a link or non-regular file in its place: :class:`UnsafePathError`); a token
    outside 0..:data:`MAX_TOKEN` is refused the same way, nothing written."""
    if type(record.token) is not int or not 0 <= record.token <= MAX_TOKEN:
        raise JournalError(
            str(path), f"refusing lease token {record.token!r}: tokens end at {MAX_TOKEN}"
        )
    data = {"token": record.token, "holder": record.holder, "expires_ms": record.expires_ms}
    try:
        atomic_write_bytes(path, orjson.dumps(data) + b"\n", fsync, mode=mode)
    except UnsafePathError:
        raise
    except OSError as exc:  # the old record stays, whole (and no temp file is left)
        raise JournalError(str(path), f"cannot write the lease record: {exc}") from exc


def current_token(path: Path) -> int:
    """The highest token ever granted for the session (0 when none)."""
    record = read_record(path)
    return 0 if record is None else record.token
