"""The history format: what each worker attempted and what came of it.

Each worker process appends to its own file, one JSON object per line, flushed and fsynced
before the call it describes is made (``invoke``) and after it returns (``ok``, with the
result) or raises (``fail`` for an error that guarantees no effect, such as a fenced write
refused; ``info`` for any other, whose effect is unknown). A process killed during
a call leaves an ``invoke`` with no completion: an indeterminate operation, which may or may
not have taken effect. The first line (``start``) names the process and its pid.

    {"type": "start", "process": "w1", "pid": 4242, "seed": 7}
    {"type": "invoke", "index": 3, "f": "claim", "session": "agent:h:s0",
     "args": {"ids": ["call_4", "call4"]}, "time": 1718000000123456789}
    {"type": "ok", "index": 3, "result": {"won": ["call_4"]}, "time": 1718000000125456789}

Times are wall-clock nanoseconds (``time.time_ns``), comparable across the processes of one
machine: an operation that completed before another was invoked certainly took effect first.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, INFO = "ok", "fail", "info"


@dataclass(frozen=True, slots=True)
class Op:
    """One attempted operation and its outcome (``None``: the process died during it)."""

    process: str
    index: int
    f: str
    session: str
    args: dict[str, Any]
    invoked: int
    outcome: str | None = OK
    result: Any = None
    completed: int | None = None
    pid: int = 0
    error: str | None = None

    @property
    def id(self) -> str:
        """Names the operation; appends tag the journal lines they write with it."""
        return f"{self.process}:{self.index}"

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def indeterminate(self) -> bool:
        return self.outcome != OK

    def precedes(self, other: Op) -> bool:
        """True when this operation certainly took effect (if at all) before ``other`` began."""
        return self.completed is not None and self.completed < other.invoked

    @property
    def done_by(self) -> float:
        """When an ``ok`` operation had certainly taken effect (infinity when unknown)."""
        return float(self.completed) if self.ok and self.completed is not None else float("inf")


class HistoryWriter:
    """Appends one process's records, each flushed and fsynced before the call goes on."""

    def __init__(self, path: Path, process: str, seed: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._next = 0
        self._write({"type": "start", "process": process, "pid": os.getpid(), "seed": seed})

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)

    @property
    def next_index(self) -> int:
        """The index the next ``invoke`` will get (names the operation before it starts)."""
        return self._next

    def invoke(self, f: str, session: str, args: dict[str, Any]) -> int:
        index, self._next = self._next, self._next + 1
        record = {"type": "invoke", "index": index, "f": f, "session": session, "args": args}
        self._write({**record, "time": time.time_ns()})
        return index

    def ok(self, index: int, result: Any) -> None:
        self._write({"type": OK, "index": index, "result": result, "time": time.time_ns()})

    def failed(self, index: int, error: BaseException, *, definite: bool) -> None:
        """The call raised: ``definite`` when the error guarantees it had no effect."""
        outcome = FAIL if definite else INFO
        self._write({"type": outcome, "index": index, "error": repr(error), "time": time.time_ns()})

    def close(self) -> None:
        os.close(self._fd)


@dataclass(slots=True)
class _Pending:
    record: dict[str, Any]
    completion: dict[str, Any] | None = field(default=None)


def read_history(path: Path) -> list[Op]:
    """The operations of one history file, in invocation order (a torn last line, left by a
    kill during the write, is ignored: its call had not been made yet, or had returned)."""
    process, pid = path.stem, 0
    pending: dict[int, _Pending] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["type"] == "start":
            process, pid = record["process"], record["pid"]
        elif record["type"] == "invoke":
            pending[record["index"]] = _Pending(record)
        elif record["index"] in pending:
            pending[record["index"]].completion = record
    ops = []
    for index, item in sorted(pending.items()):
        done = item.completion
        ops.append(
            Op(
                process=process,
                index=index,
                f=item.record["f"],
                session=item.record["session"],
                args=item.record["args"],
                invoked=item.record["time"],
                outcome=None if done is None else done["type"],
                result=None if done is None else done.get("result"),
                completed=None if done is None else done["time"],
                pid=pid,
                error=None if done is None else done.get("error"),
            )
        )
    return ops
