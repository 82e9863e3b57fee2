"""Adversarial review of the deployment canary's clean-up: it must delete nothing outside
its own agent directory inside the data root."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from offload_registry.errors import ConfigurationError, UnsafePathError
from offload_registry.ops.canary import Canary, CanaryPlan
from offload_registry.sync import SessionRegistry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _canary(registry: SessionRegistry, clock: Clock, agent: str) -> Canary:
    plan = CanaryPlan(agent=agent, sessions=1, interval=0.0, bucket_seconds=100, verify_every=1)
    return Canary(registry, plan, clock=clock, rng=random.Random(7))


def _victim(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    victim = directory / "offload-b1-s0.jsonl"
    victim.write_text('{"tool_call_id":"precious"}\n')
    return victim


@pytest.mark.parametrize("agent", ["../victim", "a/../../victim", "..", ".", "x:y", ""])
def test_the_canary_never_deletes_outside_the_data_root_whatever_its_agent_name(
    tmp_path: Path, agent: str
) -> None:
    root = tmp_path / "root"
    victim = _victim(tmp_path / "victim")
    with SessionRegistry(root) as registry, pytest.raises(ConfigurationError):
        _canary(registry, Clock(1_000.0), agent=agent)
    assert victim.exists(), f"deleted {victim} (outside {root})"


def test_a_symlinked_canary_agent_dir_deletes_nothing_behind_the_link(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    victim = _victim(tmp_path / "victim")
    (root / "offload-canary").symlink_to(tmp_path / "victim")
    with SessionRegistry(root) as registry:
        worker = _canary(registry, Clock(1_000.0), agent="offload-canary")
        worker.round()
        assert worker.stats.errors == 1  # the link is refused, loudly
        with pytest.raises(UnsafePathError):  # even if the clean-up ran on its own
            worker._remove_old_buckets(10)
    assert victim.exists()
