"""The deployment canary: it checks what it claims to check, and it cleans up after itself."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from offload_registry.disk.layout import claims_beside
from offload_registry.ops.canary import Canary, CanaryPlan
from offload_registry.sync import SessionRegistry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> SessionRegistry:
    with SessionRegistry(tmp_path, max_cached=8) as reg:
        yield reg


def canary(registry: SessionRegistry, clock: Clock, **plan: object) -> Canary:
    options = {"sessions": 2, "interval": 0.0, "bucket_seconds": 100, "verify_every": 1, **plan}
    return Canary(registry, CanaryPlan(**options), clock=clock, rng=random.Random(7))  # type: ignore[arg-type]


def test_rounds_write_under_the_canary_agent_and_every_check_holds(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    worker = canary(registry, Clock(1_000.0))
    for _ in range(6):
        worker.round()
    assert worker.stats.violations == 0 and worker.stats.errors == 0
    assert worker.stats.checks >= 6 * 4
    journals = sorted(p.name for p in (tmp_path / "offload-canary").glob("*.jsonl"))
    assert journals == ["offload-b10-s0.jsonl", "offload-b10-s1.jsonl"]
    assert list(tmp_path.iterdir()) == [tmp_path / "offload-canary"]  # nobody else's agent


def test_an_id_won_twice_in_the_claims_record_is_a_violation(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    worker = canary(registry, Clock(1_000.0), sessions=1)
    worker.round()
    assert worker.stats.violations == 0
    record = claims_beside(tmp_path / "offload-canary" / "offload-b10-s0.jsonl")
    first = record.read_text().splitlines()[0]
    with record.open("a") as f:  # another "winner" of the same id
        f.write(json.dumps({**json.loads(first), "owner": "elsewhere:1:0"}) + "\n")
    worker.round()
    assert worker.stats.violations >= 1


def test_an_acknowledged_id_missing_from_the_journal_is_a_violation(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    worker = canary(registry, Clock(1_000.0), sessions=1)
    worker.round()
    journal = tmp_path / "offload-canary" / "offload-b10-s0.jsonl"
    journal.write_text("")  # the acknowledged entry vanished from the durable log
    worker.round()
    assert worker.stats.violations >= 1


def test_sessions_of_old_buckets_are_deleted_and_the_current_ones_kept(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    clock = Clock(1_000.0)
    worker = canary(registry, clock, sessions=1, keep_buckets=2)
    worker.round()  # bucket 10
    clock.now = 1_100.0
    worker.round()  # bucket 11: 10 is still kept
    agent_dir = tmp_path / "offload-canary"
    assert (agent_dir / "offload-b10-s0.jsonl").exists()
    clock.now = 1_200.0
    worker.round()  # bucket 12: 10 is two behind, deleted with its claims and lock files
    names = sorted(p.name for p in agent_dir.iterdir())
    assert not [n for n in names if "b10-" in n], names
    assert "offload-b11-s0.jsonl" in names and "offload-b12-s0.jsonl" in names
    assert worker.stats.sessions_removed == 1
    assert registry.get("agent:offload-canary:b10-s0") is None


def test_run_stops_when_the_stop_event_is_set(registry: SessionRegistry) -> None:
    worker = canary(registry, Clock(1_000.0), interval=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_linked_canary_agent_directory_is_never_cleaned_through(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "offload-b1-s0.jsonl"
    victim.write_text('{"tool_call_id":"keep"}\n')
    (tmp_path / "offload-canary").symlink_to(elsewhere, target_is_directory=True)
    worker = canary(registry, Clock(1_000.0), sessions=1)
    worker.round()  # bucket 10: bucket 1 is long due for clean-up, but not through a link
    assert worker.stats.errors == 1  # the round's writes were refused too (a link below root)
    assert victim.read_text() == '{"tool_call_id":"keep"}\n'
    assert list(elsewhere.iterdir()) == [victim]
