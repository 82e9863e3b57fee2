"""Warm with several processes: each child opens its own tier and warms one disjoint
:class:`~offload_registry.ops.warm.Share` of the sessions; the parent sums their reports and
shows their progress as one.

Why processes: warm is CPU-bound Python (parsing, id sets, encoding, redis-py's packing),
so threads would share one interpreter lock; processes scale with cores. The children are
*spawned* (a fresh interpreter each: the parent may hold an event loop, threads and
sockets, none of which survive a ``fork`` safely), which costs each a fraction of a second
of start-up. Their log records, progress and results travel over one queue: the parent
logs the records with its own handlers, so a child's error reads like the parent's own.
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
from collections.abc import Sequence
from dataclasses import dataclass, fields
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from offload_registry.errors import OffloadRegistryError
from offload_registry.ops.discover import Unreadable
from offload_registry.ops.tier import TlsFiles, open_tier
from offload_registry.ops.warm import DEFAULT_BATCH, ProgressSink, Share, WarmReport, warm

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 0.2
"""Seconds between a child's progress messages."""
_DEAD_GRACE = 2.0
"""Seconds a child may be gone before its result (still in the queue's pipe) must arrive."""
_COUNTS = [f.name for f in fields(WarmReport) if f.name != "seconds"]


@dataclass(frozen=True, slots=True)
class TierSpec:
    """What a child process needs to open its own tier (a tier itself cannot be sent)."""

    url: str
    key_prefix: str
    tls: TlsFiles | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    """One child's work (sent to it when it is spawned)."""

    spec: TierSpec
    data_root: Path
    agents: Sequence[str] | None
    batch_size: int
    share: Share
    log_level: int


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
    """:func:`~offload_registry.ops.warm.warm` with ``processes`` worker processes, each
    warming the sessions of one share of ``processes`` (``processes=1``: in this process).
    The report sums the children's counts; ``seconds`` is this call's wall time. A child
    that fails raises its error here (the others are stopped).

    Durability and concurrency: each process applies warm's own rule (Redis only, each
    snapshot published with compare-and-set on the anchor read before its journal) to a
    disjoint share of the sessions, so no two processes ever write the same session and the
    result is the one a single process would leave.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, not {processes}")
    if processes == 1:
        async with open_tier(
            data_root, spec.url, key_prefix=spec.key_prefix, read_only=False, tls=spec.tls
        ) as tier:
            return await warm(
                tier,
                data_root,
                agents=agents,
                batch_size=batch_size,
                progress=progress,
                unreadable=unreadable,
            )
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    level = logging.getLogger("offload_registry").getEffectiveLevel()
    children = [
        context.Process(
            target=_child,
            args=(_Job(spec, data_root, agents, batch_size, Share(i, processes), level), messages),
            name=f"offload-registry-warm-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    stop = threading.Event()
    try:
        for child in children:
            child.start()
        reports, found = await asyncio.to_thread(_collect, messages, children, progress, stop)
    finally:
        stop.set()
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
        messages.close()
    if unreadable is not None:
        unreadable.found.extend(found)  # logged by the child that met them
    total = WarmReport(**{name: sum(getattr(r, name) for r in reports) for name in _COUNTS})
    total.seconds = time.perf_counter() - started
    return total


# --- the parent's side ----------------------------------------------------------------------


def _collect(
    messages: Any,
    children: Sequence[BaseProcess],
    progress: ProgressSink | None,
    stop: threading.Event,
) -> tuple[list[WarmReport], list[tuple[str, str]]]:
    """Read the children's messages until each has sent its report (blocking: run in a
    thread). Raises a child's error, or one naming a child that died without a word."""
    reports: dict[int, WarmReport] = {}
    found: list[tuple[str, str]] = []
    done: dict[int, tuple[int, int]] = {}
    gone_since: dict[int, float] = {}
    while len(reports) < len(children) and not stop.is_set():
        try:
            kind, index, payload = messages.get(timeout=_PROGRESS_EVERY)
        except queue_module.Empty:
            _check_alive(children, reports, gone_since)
            continue
        if kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif kind == "progress":
            done[index] = payload
            if progress is not None:
                progress.update(sum(d for d, _ in done.values()), sum(e for _, e in done.values()))
        elif kind == "done":
            reports[index], child_found = payload
            found.extend(child_found)
        else:  # "error"
            raise payload
    return [reports[i] for i in sorted(reports)], found


def _check_alive(
    children: Sequence[BaseProcess], reports: dict[int, WarmReport], gone_since: dict[int, float]
) -> None:
    now = time.monotonic()
    for index, child in enumerate(children):
        if index in reports or child.exitcode is None:
            continue
        first_seen = gone_since.setdefault(index, now)
        if now - first_seen > _DEAD_GRACE:
            raise OffloadRegistryError(
                f"warm process {index} of {len(children)} exited ({child.exitcode}) "
                "without a report"
            )


# --- the child's side -----------------------------------------------------------------------


class _Forward(logging.handlers.QueueHandler):
    """Sends each record to the parent, tagged with the child's share."""

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
        if now - self._last >= _PROGRESS_EVERY:
            self._last = now
            self._messages.put(("progress", self._index, (done, entries)))


def _child(job: _Job, messages: Any) -> None:
    """A child process's body: warm one share, send the report (or the error)."""
    index = job.share.index
    package = logging.getLogger("offload_registry")
    package.handlers[:] = [_Forward(messages, index)]
    package.setLevel(job.log_level)
    package.propagate = False
    if index:  # every child lists the same directories: one reports what it skips
        logging.getLogger("offload_registry.ops.discover").setLevel(logging.ERROR)
    unreadable = Unreadable(quiet=index != 0)
    try:
        report = asyncio.run(_warm_share(job, messages, unreadable))
    except BaseException as exc:  # every failure goes to the parent
        messages.put(("error", index, _sendable(exc)))
        return
    messages.put(("done", index, (report, unreadable.found if index == 0 else [])))


async def _warm_share(job: _Job, messages: Any, unreadable: Unreadable) -> WarmReport:
    spec = job.spec
    async with open_tier(
        job.data_root, spec.url, key_prefix=spec.key_prefix, read_only=False, tls=spec.tls
    ) as tier:
        return await warm(
            tier,
            job.data_root,
            agents=job.agents,
            batch_size=job.batch_size,
            progress=_ProgressForwarder(messages, job.share.index),
            unreadable=unreadable,
            share=job.share,
        )


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (its type then decides the parent's exit status),
    else an :class:`OffloadRegistryError` carrying its text."""
    try:
        sent: BaseException = pickle.loads(pickle.dumps(exc))
    except Exception:  # any pickling failure: send the text
        return OffloadRegistryError(f"{type(exc).__name__}: {exc}")
    return sent
