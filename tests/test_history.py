"""Many workers, one truth: randomized multi-process histories under faults, checked.

Four or more worker processes share three sessions on one data root and one Redis, each with
a near cache of two sessions, running seeded random traffic (``history.worker``) while the
controller restarts Redis empty and SIGKILLs workers, some exactly between a write's journal
step and its Redis step (``history.faults``). Every attempt is recorded before it is made and
every outcome after; ``history.checker`` then checks the invariants over the histories and
the final state, files and fresh readers alike.

Replay a failure with the seed it prints: ``OFFLOAD_HISTORY_SEED=<seed> pytest
tests/test_history.py``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from history.checker import check
from history.run import Plan, run_history
from offload_registry.embedded_server import RedisServerProcess

SEED_ENV = "OFFLOAD_HISTORY_SEED"
FIXED_SEEDS = [1, 2, 3]


def seeds() -> list[int]:
    if os.environ.get(SEED_ENV):
        return [int(os.environ[SEED_ENV])]
    return [*FIXED_SEEDS, random.SystemRandom().randrange(1 << 31)]


def run_and_check(tmp_path: Path, server: RedisServerProcess, plan: Plan) -> None:
    run = run_history(tmp_path, server, plan)
    print(run.summary())
    assert run.ops, "the workers recorded nothing"
    assert any(op.ok and op.f == "claim" and op.result["won"] for op in run.ops)
    assert any(op.ok and op.f == "append" and op.result["written"] for op in run.ops)
    violations = check(run.ops, run.finals)
    replay = f"replay: {SEED_ENV}={plan.seed} pytest tests/test_history.py"
    assert not violations, f"seed {plan.seed} ({replay}):\n" + "\n".join(violations[:40])


@pytest.mark.redis
@pytest.mark.parametrize("seed", seeds())
def test_workers_sharing_sessions_under_redis_restarts_and_kills_keep_every_invariant(
    seed: int, tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    run_and_check(tmp_path, private_redis_server, Plan(seed=seed))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", seeds()[:1])
def test_a_longer_run_with_more_workers_and_faults_keeps_every_invariant(
    seed: int, tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    plan = Plan(
        seed=seed, seconds=60, workers=6, sessions=3, redis_restarts=8, random_kills=10,
        pauses=6, crash_points=5, pool=600,
    )  # fmt: skip
    run_and_check(tmp_path, private_redis_server, plan)
