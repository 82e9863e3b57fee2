"""The claim filter: Redis answers contested claims fast, the on-disk claims record decides.

Each id (with its normalized form) is won once whatever Redis says: the filter can only make
a caller lose sooner (an id committed or being committed by another worker), never win twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.disk.journal import scan_journal
from offload_registry.testing.server import RedisServerProcess

KEY = "agent:main:s1"


@pytest.fixture(params=["memory", "real"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    prefix = f"t{uuid4().hex[:12]}"
    if request.param == "memory":
        return "memory://", prefix
    return request.getfixturevalue("redis_server").url, prefix


def opened(root: Path, backend: tuple[str, str]) -> SessionRegistry:
    return SessionRegistry(root, redis_url=backend[0], key_prefix=backend[1])


def claimed_on_disk(root: Path) -> list[str]:
    return scan_journal(root / "main" / "offload-s1.claims").ids


def forget_claims(manager: Any) -> None:
    """Make the copy one that has never read the claims record (as before its first catch-up),
    so only Redis or the record itself can tell it an id is taken."""
    manager._claimed = set()
    manager._claims_watermark = None


async def filter_state(reg: SessionRegistry, manager: Any) -> dict[str, str]:
    tier: Any = reg.tier
    keys = tier.keyspace.session_for(manager.identity)
    raw = await tier._client.hgetall(keys.claims)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_committed_claim_is_refused_by_redis_without_touching_the_journal(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        winner = (await a.resolve(KEY)).manager
        loser = (await b.resolve(KEY)).manager
        assert await winner.claim(["call_1", "call_2"]) == ["call_1", "call_2"]
        assert await filter_state(a, winner) == {
            "call_1": "c",
            "call1": "c",
            "call_2": "c",
            "call2": "c",
        }
        lock = tmp_path / "main" / ".offload-s1.jsonl.lock"
        before = lock.stat().st_mtime_ns, (tmp_path / "main" / "offload-s1.claims").read_bytes()
        # The loser's copy has not caught up; Redis answers for the journal.
        forget_claims(loser)
        assert await loser.claim(["call_1", "call2"]) == []
        after = lock.stat().st_mtime_ns, (tmp_path / "main" / "offload-s1.claims").read_bytes()
        assert after == before
    assert claimed_on_disk(tmp_path) == ["call_1", "call_2"]


async def test_the_journal_decides_when_redis_forgot_a_claim(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    backend = (private_redis_server.url, "claims")
    async with opened(tmp_path, backend) as a:
        assert await (await a.resolve(KEY)).manager.claim(["call_1"]) == ["call_1"]
    private_redis_server.restart()  # the filter is empty now
    async with opened(tmp_path, backend) as b:
        manager = (await b.resolve(KEY)).manager
        forget_claims(manager)  # even a copy that never saw the claim
        assert await manager.claim(["call_1", "call1", "call_2"]) == ["call_2"]
    assert claimed_on_disk(tmp_path) == ["call_1", "call_2"]


async def test_an_id_in_the_journal_is_never_won(tmp_path: Path, backend: tuple[str, str]) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        writer = (await a.resolve(KEY)).manager
        stale = (await b.resolve(KEY)).manager  # loaded before the append below
        await writer.append_entries([{"tool_call_id": "toolu_1", "summary": "x"}])
        assert await writer.claim(["toolu_1", "toolu1"]) == []
        stale._state = type(stale._state)()  # a copy from before the append, whatever arrived
        assert await stale.claim(["toolu_1", "toolu1", "toolu_2"]) == ["toolu_2"]
    assert claimed_on_disk(tmp_path) == ["toolu_2"]


async def test_a_claimer_whose_journal_step_failed_leaves_the_id_winnable(
    tmp_path: Path, backend: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        failing = (await a.resolve(KEY)).manager
        other = (await b.resolve(KEY)).manager

        def broken_disk(*args: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(failing._files, "claim", broken_disk)
        with pytest.raises(OSError, match="disk full"):
            await failing.claim(["call_1"])
        # Redis holds only what the journal made durable: nothing here.
        assert await filter_state(a, failing) == {}
        assert await other.claim(["call_1"]) == ["call_1"]
    assert claimed_on_disk(tmp_path) == ["call_1"]


async def test_a_won_claim_is_returned_even_when_telling_redis_fails(
    tmp_path: Path, backend: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(tmp_path, backend) as reg:
        manager = (await reg.resolve(KEY)).manager
        tier: Any = reg.tier
        real_filter = tier.claim_filter

        async def commit_fails(identity: Any, op: str, groups: Any) -> Any:
            if op == "commit":
                raise RuntimeError("the shared tier broke after the journal step")
            return await real_filter(identity, op, groups)

        monkeypatch.setattr(tier, "claim_filter", commit_fails)
        assert await manager.claim(["call_1"]) == ["call_1"]
        assert await manager.claim(["call_1"]) == []
    assert claimed_on_disk(tmp_path) == ["call_1"]


async def test_contending_workers_win_each_id_exactly_once(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    ids = [f"call_{i}" for i in range(40)]
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        managers = [(await reg.resolve(KEY)).manager for reg in (a, b)]
        results = await asyncio.gather(
            *(m.claim(ids[i::3] + ids[::-1][:10]) for i in range(3) for m in managers)
        )
    won = [tool_call_id for result in results for tool_call_id in result]
    assert sorted(won) == sorted(set(won))
    assert sorted(claimed_on_disk(tmp_path)) == sorted(won)
