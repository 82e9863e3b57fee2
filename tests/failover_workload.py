"""A continuous writer/claimer workload for failover tests, and the invariant checks after it.

Each :class:`Worker` (one ``SessionRegistry``) loops over a few sessions: it appends one new
entry and claims a few ids drawn from a pool shared by every worker (so workers compete for
the same ids), and records what it was acknowledged. Calls made while a :class:`Window` is
open are counted apart: the figures of the failover itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload_registry import SessionRegistry
from session_helpers import described, entry, truth

CLAIM_POOL = 300
"""Candidate claim ids per session, shared by every worker."""


@dataclass
class Window:
    """Counts the calls made while it is open (the failover)."""

    open: bool = False
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    slowest: float = 0.0
    opened_at: float = 0.0
    seconds: float = 0.0

    def start(self) -> None:
        self.open, self.opened_at = True, time.monotonic()

    def stop(self) -> None:
        self.open, self.seconds = False, time.monotonic() - self.opened_at


@dataclass
class Worker:
    name: str
    reg: SessionRegistry
    sessions: list[str]
    seed: int
    appended: dict[str, list[str]] = field(default_factory=dict)
    won: dict[str, list[str]] = field(default_factory=dict)
    window_ids: list[tuple[str, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0
    slowest: float = 0.0

    async def step(self, rng: random.Random, window: Window) -> None:
        key = rng.choice(self.sessions)
        self.calls += 1
        tool_call_id = f"{self.name}_{self.calls:05d}"
        claims = [f"call_{rng.randrange(CLAIM_POOL):03d}" for _ in range(3)]
        in_window = window.open
        started = time.monotonic()
        if in_window:
            window.attempted += 2
        try:
            manager = (await self.reg.resolve(key)).manager
            assert await manager.append_entries([entry(tool_call_id)]) == 1
            self.appended.setdefault(key, []).append(tool_call_id)
            if in_window:
                window.acknowledged += 1
                self.window_ids.append((key, tool_call_id))
            won = await manager.claim(claims)
            self.won.setdefault(key, []).extend(won)
            if in_window:
                window.acknowledged += 1
        except Exception as exc:  # a worker must ride through: count, never stop
            self.errors.append(exc)
            if in_window:
                window.failed += 1
        elapsed = time.monotonic() - started
        self.slowest = max(self.slowest, elapsed)
        if in_window:
            window.slowest = max(window.slowest, elapsed)

    async def run(self, stop: asyncio.Event, window: Window) -> None:
        rng = random.Random(self.seed)
        while not stop.is_set():
            await self.step(rng, window)
            await asyncio.sleep(0.002)


def won_twice(workers: list[Worker]) -> list[tuple[str, str]]:
    """(session, id) pairs that more than one claim call won."""
    counts: Counter[tuple[str, str]] = Counter(
        (key, i) for worker in workers for key, ids in worker.won.items() for i in ids
    )
    return [pair for pair, n in counts.items() if n > 1]


async def check_after(
    root: Path, url: str, prefix: str, workers: list[Worker], sessions: list[str]
) -> dict[str, int]:
    """Every acknowledged append and claim is in the journal and seen by a fresh registry;
    a second fresh registry then finds Redis itself equal to the journal. Returns figures."""
    found = 0
    window_ids = {pair for worker in workers for pair in worker.window_ids}
    async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as fresh:
        for key in sessions:
            manager = (await fresh.resolve(key)).manager
            want = await truth(root, key)
            assert described(manager) == want, key
            processed = set(manager.processed_tool_call_ids)
            for worker in workers:
                assert set(worker.appended.get(key, [])) <= processed, (worker.name, key)
                assert set(worker.won.get(key, [])) <= processed, (worker.name, key)
            found += sum(1 for k, i in window_ids if k == key and i in processed)
    async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as second:
        for key in sessions:
            manager = (await second.resolve(key)).manager
            assert manager.source == "redis", key
            stored = await second.tier.load(manager.identity)  # type: ignore[attr-defined]
            assert stored is not None, key
            want = await truth(root, key)
            assert sorted(stored.state.processed | stored.claimed) == want["processed"], key
            assert stored.state.entry_count == want["entry_count"], key
    return {"window_appends_found": found, "window_appends": len(window_ids)}


def report(title: str, window: Window, workers: list[Worker], extra: dict[str, Any]) -> str:
    twice = len(won_twice(workers))
    claims = sum(len(ids) for worker in workers for ids in worker.won.values())
    figures = {
        "calls attempted during failover": window.attempted,
        "acknowledged during failover": window.acknowledged,
        "failed during failover": window.failed,
        "failover window (s)": round(window.seconds, 2),
        "slowest call during failover (s)": round(window.slowest, 3),
        "appends acknowledged in total": sum(len(v) for w in workers for v in w.appended.values()),
        "claims won in total": claims,
        "claims won twice": twice,
        **extra,
    }
    lines = [f"== {title}"] + [f"   {name}: {value}" for name, value in figures.items()]
    text = "\n".join(lines)
    print(text)
    return text
