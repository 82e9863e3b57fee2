"""Warm with several processes: this process lists the sessions once and deals their batches
out over a queue; it and ``processes - 1`` spawned children each take the next batch when
done with the last, and warm it exactly as :func:`~offload_registry.ops.warm.warm` would.
The report sums theirs; the progress shown is theirs together.

Why processes: warm is CPU-bound Python (parsing, id sets, encoding, redis-py's packing),
so threads would share one interpreter lock; processes scale with cores. Why a queue rather
than fixed shares: the children are *spawned* (a fresh interpreter each: the parent may hold
an event loop, threads and sockets, none of which survive a ``fork`` safely), and their
start-up (~0.3 s of imports each) would leave a fixed share late; pulling batches, the
parent works while they start and a process slowed by a busy core simply takes fewer. Log
records, progress and results travel back over a second queue, and the parent logs the
records with its own handlers, so a child's error reads like the parent's own.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import multiprocessing
import pickle
import queue as queue_module
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from offload_registry.errors import OffloadRegistryError
from offload_registry.ops.discover import DiskSession, Unreadable, batched, iter_sessions
from offload_registry.ops.tier import TierTlsFiles, open_tier
from offload_registry.ops.warm import (
    DEFAULT_BATCH,
    ProgressSink,
    WarmReport,
    warm,
    warm_batches,
)
from offload_registry.store.urls import redact

log = logging.getLogger(__name__)

_POLL = 0.2
"""Seconds between checks of a stop flag while waiting on a queue (and between a child's
progress messages)."""
_DEAD_GRACE = 2.0
"""Seconds a child may be gone before its result (still in the queue's pipe) must arrive."""
_COUNTS = [f.name for f in fields(WarmReport) if f.name != "seconds"]

Names = list[tuple[str, str]]
"""A batch as it travels to a child: each session's agent and session names."""


@dataclass(frozen=True, slots=True)
class TierSpec:
    """What a child process needs to open its own tier (a tier itself cannot be sent).
    Its ``repr`` shows the URL redacted, as every other holder of a Redis URL does."""

    url: str
    key_prefix: str
    tls: TierTlsFiles | None = None

    def __repr__(self) -> str:
        return (
            f"TierSpec(url={redact(self.url)!r}, key_prefix={self.key_prefix!r}, tls={self.tls!r})"
        )


async def warm_processes(
    spec: TierSpec,
    data_root: Path,
    *,
    processes: int,
    agents: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressSink | None = None,
    unreadable: Unreadable | None = None,
) -> WarmReport:
    """:func:`~offload_registry.ops.warm.warm` with ``processes`` processes: this one and
    ``processes - 1`` spawned children (``processes=1``: this one only, the same as
    ``warm``). The report sums every process's counts; ``seconds`` is this call's wall time.
    A child that fails raises its error here (the others are stopped).

    Durability and concurrency: each session is dealt to exactly one process, which applies
    warm's own rule to it (Redis only, its snapshot published with compare-and-set on the
    anchor read before its journal), so no two processes write the same session and the
    result is the one a single process would leave.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, not {processes}")
    async with open_tier(
        data_root, spec.url, key_prefix=spec.key_prefix, read_only=False, tls=spec.tls
    ) as tier:
        if processes == 1:
            return await warm(
                tier,
                data_root,
                agents=agents,
                batch_size=batch_size,
                progress=progress,
                unreadable=unreadable,
            )
        started = time.perf_counter()
        fan_out = _FanOut(spec, data_root, processes, _Totals(progress))
        try:
            fan_out.start(agents, batch_size, unreadable)
            collected = asyncio.ensure_future(asyncio.to_thread(fan_out.collect))
            try:
                own = await warm_batches(tier, fan_out.next_batch, progress=fan_out.totals.sink(0))
                reports = [own, *await collected]
            except BaseException:
                fan_out.stop.set()  # every loop, the listing and the reader end
                raise
        finally:
            fan_out.close()
    if fan_out.error is not None:
        raise fan_out.error
    total = WarmReport(**{name: sum(getattr(r, name) for r in reports) for name in _COUNTS})
    total.seconds = time.perf_counter() - started
    return total


class _Totals:
    """Every process's latest progress, summed into one :class:`ProgressSink` (thread-safe:
    the parent's loop and its message reader both report)."""

    def __init__(self, progress: ProgressSink | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._latest: dict[int, tuple[int, int]] = {}

    def update(self, index: int, done: int, entries: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            self._latest[index] = (done, entries)
            latest = self._latest.values()
            self._progress.update(sum(d for d, _ in latest), sum(e for _, e in latest))

    def sink(self, index: int) -> ProgressSink:
        return _IndexedSink(self, index)


@dataclass(slots=True)
class _IndexedSink:
    totals: _Totals
    index: int

    def update(self, done: int, entries: int) -> None:
        self.totals.update(self.index, done, entries)


class _FanOut:
    """The parent's side: the children, the listing thread that deals batches, and the
    reader of the children's messages."""

    def __init__(self, spec: TierSpec, data_root: Path, processes: int, totals: _Totals) -> None:
        context = multiprocessing.get_context("spawn")
        self.data_root = data_root
        self.processes = processes
        self.totals = totals
        self.stop = threading.Event()
        """Set on a failure: the listing, the parent's loop and the reader stop."""
        self.error: BaseException | None = None
        """What the listing raised (raised once every process has finished)."""
        self.work: Any = context.Queue(maxsize=2 * processes)
        self.messages: Any = context.Queue()
        level = logging.getLogger("offload_registry").getEffectiveLevel()
        self.children: list[BaseProcess] = [
            context.Process(
                target=_child,
                args=(_Job(spec, data_root, i, level), self.work, self.messages),
                name=f"offload-registry-warm-{i}",
                daemon=True,
            )
            for i in range(1, processes)
        ]
        self._dealer: threading.Thread | None = None

    def start(
        self, agents: Sequence[str] | None, batch_size: int, unreadable: Unreadable | None
    ) -> None:
        """Start the children and the listing; a failure (a child that cannot start: too
        many open files, say) sets ``stop``, so :meth:`close` ends the children started."""
        try:
            for child in self.children:
                child.start()
            self._dealer = threading.Thread(
                target=self._deal, args=(agents, batch_size, unreadable), daemon=True
            )
            self._dealer.start()
        except BaseException:
            self.stop.set()
            raise

    def _deal(
        self, agents: Sequence[str] | None, batch_size: int, unreadable: Unreadable | None
    ) -> None:
        """List the sessions and queue their batches, then one end mark per process."""
        try:
            for batch in batched(iter_sessions(self.data_root, agents, unreadable), batch_size):
                if not self._put([(s.agent_name, s.session_id) for s in batch]):
                    return
        except BaseException as exc:  # raised by the parent once every process stops
            self.error = exc
        for _ in range(self.processes):
            if not self._put(None):
                return

    def _put(self, item: Names | None) -> bool:
        while not self.stop.is_set():
            try:
                self.work.put(item, timeout=_POLL)
            except queue_module.Full:
                continue
            return True
        return False

    async def next_batch(self) -> list[DiskSession]:
        """The parent's own next batch (empty: no more, or stopped)."""
        names = await asyncio.to_thread(_take, self.work, self.stop)
        return [DiskSession.named(self.data_root, a, s) for a, s in names]

    def collect(self) -> list[WarmReport]:
        """The children's reports, reading their messages meanwhile (blocking: run in a
        thread). Raises a child's error, or one naming a child that died without a word."""
        reports: dict[int, WarmReport] = {}
        gone_since: dict[int, float] = {}
        try:
            while len(reports) < len(self.children) and not self.stop.is_set():
                try:
                    kind, index, payload = self.messages.get(timeout=_POLL)
                except queue_module.Empty:
                    self._check_alive(reports, gone_since)
                    continue
                if kind == "log":
                    logging.getLogger(payload.name).handle(payload)
                elif kind == "progress":
                    self.totals.update(index, *payload)
                elif kind == "done":
                    reports[index] = payload
                else:  # "error"
                    raise payload
        except BaseException:
            self.stop.set()  # the parent's own loop then ends at its next batch
            raise
        return [reports[i] for i in sorted(reports)]

    def _check_alive(self, reports: dict[int, WarmReport], gone_since: dict[int, float]) -> None:
        now = time.monotonic()
        for index, child in enumerate(self.children, start=1):
            if index in reports or child.exitcode is None:
                continue
            if now - gone_since.setdefault(index, now) > _DEAD_GRACE:
                raise OffloadRegistryError(
                    f"warm process {index} of {self.processes} exited ({child.exitcode}) "
                    "without a report"
                )

    def close(self) -> None:
        """Wait for the listing and the children (stopped at once after a failure: a
        session a child was warming is left whole or untouched, as by any killed warm)."""
        if self._dealer is not None:
            self._dealer.join()
        for child in self.children:
            if child.pid is None:  # never started (start() failed first)
                continue
            if self.stop.is_set() and child.is_alive():
                child.terminate()
            child.join()
        for q in (self.work, self.messages):
            q.close()
            q.cancel_join_thread()


def _take(work: Any, stop: threading.Event | None) -> Names:
    """The next batch's names from ``work``; empty at the end mark or once ``stop`` is set."""
    while stop is None or not stop.is_set():
        try:
            item: Names | None = work.get(timeout=_POLL)
        except queue_module.Empty:
            continue
        return item or []
    return []


# --- the child's side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    """What one child is started with."""

    spec: TierSpec
    data_root: Path
    index: int
    log_level: int


class _Forward(logging.handlers.QueueHandler):
    """Sends each record to the parent, tagged with the child's index."""

    def __init__(self, messages: Any, index: int) -> None:
        super().__init__(messages)
        self._messages = messages
        self._index = index

    def enqueue(self, record: logging.LogRecord) -> None:
        self._messages.put(("log", self._index, record))


class _ProgressForwarder:
    """A :class:`ProgressSink` that sends the child's counts to the parent (rate-limited)."""

    def __init__(self, messages: Any, index: int) -> None:
        self._messages = messages
        self._index = index
        self._last = 0.0

    def update(self, done: int, entries: int) -> None:
        now = time.monotonic()
        if now - self._last >= _POLL:
            self._last = now
            self._messages.put(("progress", self._index, (done, entries)))


def _child(job: _Job, work: Any, messages: Any) -> None:
    """A child process's body: warm the batches it takes, then send its report (or error)."""
    package = logging.getLogger("offload_registry")
    package.handlers[:] = [_Forward(messages, job.index)]
    package.setLevel(job.log_level)
    package.propagate = False
    try:
        report = asyncio.run(_warm_taken(job, work, messages))
    except BaseException as exc:  # every failure goes to the parent
        messages.put(("error", job.index, _sendable(exc)))
        return
    messages.put(("done", job.index, report))


async def _warm_taken(job: _Job, work: Any, messages: Any) -> WarmReport:
    spec = job.spec
    async with open_tier(
        job.data_root, spec.url, key_prefix=spec.key_prefix, read_only=False, tls=spec.tls
    ) as tier:
        return await warm_batches(
            tier,
            _taker(work, job.data_root),
            progress=_ProgressForwarder(messages, job.index),
        )


def _taker(work: Any, data_root: Path) -> Callable[[], Awaitable[list[DiskSession]]]:
    async def next_batch() -> list[DiskSession]:
        names = await asyncio.to_thread(_take, work, None)
        return [DiskSession.named(data_root, a, s) for a, s in names]

    return next_batch


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (its type then decides the parent's exit status),
    else an :class:`OffloadRegistryError` carrying its text."""
    try:
        sent: BaseException = pickle.loads(pickle.dumps(exc))
    except Exception:  # any pickling failure: send the text
        return OffloadRegistryError(f"{type(exc).__name__}: {exc}")
    return sent
