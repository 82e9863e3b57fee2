"""A stateful test of the registry against a pure model: random sequences of append, mark,
claim, agent turns under a lease, evict, refresh, Redis restarted empty or flushed, and a
worker killed, run by two workers (registries) on one data root and one real Redis.

The model is the seed's semantics, written out plainly: the canonical id is the id with the
unsafe characters stripped (an id with nothing left is refused, and the call writes
nothing); appends drop an id whose normalized form (``_`` removed) the journal holds;
claims win an id that neither the journal nor any earlier claim holds; a mark sets the
status of the journal entry with the same normalized id. After every step each live
worker's view must converge to the model within the staleness bound, and on demand a fresh
worker with Redis and one without must equal it at once. Tokens of successive leases grow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from offload_registry.errors import InvalidToolCallIdError
from offload_registry.jsjson import js_truthy, strip_unsafe
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from redis_fixtures import server_binary_or_fail

pytestmark = [pytest.mark.redis]

KEYS = ("agent:main:s1", "agent:main:s2")
ID_POOL = ("a", "a_", "_a", "b", "b\u200b", "c\ufeff", "c", "d_e", "de", "\u200b", "\x00f", "f")
STATUSES = (True, "deleted", False, "", "false", 0)
LIVE_BOUND_SECONDS = 5.0
"""How long a live worker may lag behind the model (the README's bound plus slack for a
busy machine); the test fails when a view is still wrong after it."""
INVALID_ID_ERRORS = (InvalidToolCallIdError,)

id_lists = st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=4)


def canonical(tool_call_id: str) -> str:
    return strip_unsafe(tool_call_id)


def forms(tool_call_id: str) -> set[str]:
    return {tool_call_id, tool_call_id.replace("_", "")}


@dataclass
class SessionModel:
    journal: dict[str, list[Any]] = field(default_factory=dict)  # normalized -> [id, status]
    claimed: set[str] = field(default_factory=set)  # forms of every id won
    tokens: list[int] = field(default_factory=list)

    def journal_forms(self) -> set[str]:
        return {f for tool_call_id, _ in self.journal.values() for f in forms(tool_call_id)}

    def processed(self) -> set[str]:
        return self.journal_forms() | self.claimed

    def confirmed(self) -> set[str]:
        return {f for i, s in self.journal.values() if js_truthy(s) for f in forms(i)}

    def deleted(self) -> set[str]:
        return {f for i, s in self.journal.values() if s == "deleted" for f in forms(i)}

    def append(self, ids: list[str]) -> None:
        for tool_call_id in ids:
            normalized = tool_call_id.replace("_", "")
            if forms(tool_call_id) & self.journal_forms():
                continue
            self.journal[normalized] = [tool_call_id, None]

    def claim(self, ids: list[str]) -> list[str]:
        won = []
        for tool_call_id in dict.fromkeys(ids):
            if forms(tool_call_id) & (self.processed()):
                continue
            self.claimed |= forms(tool_call_id)
            won.append(tool_call_id)
        return won

    def mark(self, statuses: dict[str, Any]) -> None:
        by_normalized = {i.replace("_", ""): s for i, s in statuses.items()}
        for normalized, entry in self.journal.items():
            if normalized in by_normalized:
                entry[1] = by_normalized[normalized]


def entry(tool_call_id: str) -> dict[str, Any]:
    return {"tool_call_id": tool_call_id, "summary": "s", "result_ref": "refs/x.md"}


def view(manager: Any) -> tuple[set[str], set[str], set[str], int]:
    return (
        set(manager.processed_tool_call_ids),
        set(manager.confirmed_offload_ids),
        set(manager.deleted_offload_ids),
        manager.entry_count,
    )


def expected(model: SessionModel) -> tuple[set[str], set[str], set[str], int]:
    return (model.processed(), model.confirmed(), model.deleted(), len(model.journal))


class RegistryMachine(RuleBasedStateMachine):
    server: RedisServerProcess  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="offload-stateful-"))
        self.prefix = f"st-{uuid.uuid4().hex[:12]}"
        self.models = {key: SessionModel() for key in KEYS}
        self.workers = [self._open(), self._open()]
        self.dead: list[SessionRegistry] = []

    def _open(self, *, redis: bool = True) -> SessionRegistry:
        url = self.server.url if redis else None
        return SessionRegistry(
            self.root, redis_url=url, key_prefix=self.prefix, fsync="never", max_cached=4
        )

    def _manager(self, worker: int, key: str) -> Any:
        return self.workers[worker].resolve(key).manager

    def _expect_refusal(self, raw: list[str]) -> bool:
        return any(canonical(i) == "" for i in raw)

    # -- writes -------------------------------------------------------------------------------
    @rule(worker=st.integers(0, 1), key=st.sampled_from(KEYS), raw=id_lists)
    def append(self, worker: int, key: str, raw: list[str]) -> None:
        manager = self._manager(worker, key)
        if self._expect_refusal(raw):
            with pytest.raises(INVALID_ID_ERRORS):
                manager.append_entries([entry(i) for i in raw])
            return
        manager.append_entries([entry(i) for i in raw])
        self.models[key].append([canonical(i) for i in raw])

    @rule(
        worker=st.integers(0, 1),
        key=st.sampled_from(KEYS),
        raw=st.sampled_from(ID_POOL),
        status=st.sampled_from(STATUSES),
    )
    def mark(self, worker: int, key: str, raw: str, status: Any) -> None:
        manager = self._manager(worker, key)
        if self._expect_refusal([raw]):
            with pytest.raises(INVALID_ID_ERRORS):
                manager.mark_offload_status({raw: status})
            return
        manager.mark_offload_status({raw: status})
        self.models[key].mark({canonical(raw): status})

    @rule(worker=st.integers(0, 1), key=st.sampled_from(KEYS), raw=id_lists)
    def claim(self, worker: int, key: str, raw: list[str]) -> None:
        manager = self._manager(worker, key)
        if self._expect_refusal(raw):
            with pytest.raises(INVALID_ID_ERRORS):
                manager.claim(raw)
            return
        won = manager.claim(raw)
        assert won == self.models[key].claim([canonical(i) for i in raw])

    @rule(worker=st.integers(0, 1), key=st.sampled_from(KEYS), raw=id_lists)
    def agent_turn_under_a_lease(self, worker: int, key: str, raw: list[str]) -> None:
        if self._expect_refusal(raw):
            return
        manager = self._manager(worker, key)
        model = self.models[key]
        with manager.lease(ttl=10.0, wait=5.0) as lease:
            assert not model.tokens or lease.token > model.tokens[-1]
            model.tokens.append(lease.token)
            won = manager.claim(raw, lease=lease)
            assert won == model.claim([canonical(i) for i in raw])
            manager.append_entries([entry(i) for i in won], lease=lease)
            model.append(won)

    # -- cache and process events ----------------------------------------------------------------
    @rule(worker=st.integers(0, 1), key=st.sampled_from(KEYS))
    def evict(self, worker: int, key: str) -> None:
        self.workers[worker].evict(key)

    @rule(worker=st.integers(0, 1), key=st.sampled_from(KEYS))
    def refresh(self, worker: int, key: str) -> None:
        self._manager(worker, key).refresh()

    @rule(worker=st.integers(0, 1))
    def kill_worker(self, worker: int) -> None:
        """The worker vanishes without closing (its leases expire, its cache is gone)."""
        self.dead.append(self.workers[worker])
        self.workers[worker] = self._open()

    # -- Redis faults --------------------------------------------------------------------------
    @rule()
    def redis_restarts_empty(self) -> None:
        self.server.restart()

    @rule()
    def redis_is_flushed(self) -> None:
        client = self.server.client()
        try:
            client.flushall()
        finally:
            client.close()

    # -- views -------------------------------------------------------------------------------
    @precondition(lambda self: True)
    @rule(with_redis=st.booleans())
    def a_fresh_worker_sees_the_model(self, with_redis: bool) -> None:
        with self._open(redis=with_redis) as fresh:
            for key in KEYS:
                assert view(fresh.resolve(key).manager) == expected(self.models[key]), key

    @invariant()
    def every_live_worker_converges_to_the_model(self) -> None:
        for index in range(len(self.workers)):
            for key in KEYS:
                want = expected(self.models[key])
                deadline = time.monotonic() + LIVE_BOUND_SECONDS
                got = view(self._manager(index, key))
                while got != want and time.monotonic() < deadline:
                    time.sleep(0.02)
                    got = view(self._manager(index, key))
                assert got == want, (index, key)

    def teardown(self) -> None:
        for registry in [*self.workers, *self.dead]:
            registry.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[RedisServerProcess]:
    with RedisServerProcess(binary=server_binary_or_fail()) as own:
        yield own


def run_machine(
    server: RedisServerProcess, examples: int, steps: int, *, shrink: bool = False
) -> None:
    """Run the machine; shrinking (slow with a real server) only where asked: a failure
    prints its step sequence either way."""
    RegistryMachine.server = server
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    run_state_machine_as_test(
        RegistryMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            phases=phases,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.timeout(600)
def test_random_histories_of_two_workers_match_the_model(server: RedisServerProcess) -> None:
    run_machine(
        server, examples=int(os.environ.get("OFFLOAD_REGISTRY_STATEFUL_EXAMPLES", "15")), steps=12
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_longer_random_histories_match_the_model(server: RedisServerProcess) -> None:
    run_machine(server, examples=60, steps=25, shrink=True)
