"""Whatever Redis holds, it may make a caller lose sooner, never win twice: the on-disk claims
record decides every claim, and lease tokens are exact integers end to end (Lua numbers are
doubles, exact only below 2^53). Real Redis where its behaviour matters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.changes import APPEND, SessionChange
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.lease_files import MAX_TOKEN, LeaseRecord, read_record, write_record
from offload_registry.errors import JournalError, LeaseUnavailableError
from offload_registry.session_state import SessionState
from offload_registry.testing.server import RedisServerProcess
from session_helpers import entry

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

KEY = "agent:main:s1"
BIG = 2**53 + 1  # the first integer a double cannot hold


def opened(root: Path, url: str, prefix: str) -> SessionRegistry:
    return SessionRegistry(root, redis_url=url, key_prefix=prefix)


# --------------------------------------------------------------------------------------------
# claims: the record on disk decides
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url_kind", ["memory", "real"])
async def test_a_snapshot_missing_a_claimed_id_at_the_files_positions_never_lets_it_be_won_again(
    tmp_path: Path, redis_server: RedisServerProcess, url_kind: str
) -> None:
    url = "memory://" if url_kind == "memory" else redis_server.url
    prefix = f"t{uuid4().hex[:12]}"
    async with opened(tmp_path, url, prefix) as first:
        manager = (await first.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        assert await manager.claim(["call_1", "call_2"]) == ["call_1", "call_2"]
        # Redis now holds a copy at the files' exact positions whose claimed set lacks an id
        # (a stale or damaged writer's snapshot), and its claim filter forgot it too.
        tier: Any = first.tier
        stored = await tier.load(manager.identity)
        assert stored is not None and "call_1" in stored.claimed
        stored.claimed.discard("call_1")
        stored.claimed.discard("call1")
        await tier.publish(manager.identity, stored)
        await tier.client.delete(tier.keyspace.session_for(manager.identity).claims)
    async with opened(tmp_path, url, prefix) as second:
        other = (await second.resolve(KEY)).manager
        assert other.source == "redis"  # the damaged copy was taken: positions match
        assert await other.claim(["call_1", "call_3"]) == ["call_3"]
        assert await other.claim(["call1"]) == []  # nor its normalized form
        assert "call_1" in other.processed_tool_call_ids  # and the copy is repaired


@pytest.mark.parametrize("url_kind", ["memory", "real"])
async def test_a_snapshot_missing_a_journal_id_at_the_files_positions_never_lets_it_be_won(
    tmp_path: Path, redis_server: RedisServerProcess, url_kind: str
) -> None:
    url = "memory://" if url_kind == "memory" else redis_server.url
    prefix = f"t{uuid4().hex[:12]}"
    async with opened(tmp_path, url, prefix) as first:
        manager = (await first.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1"), entry("toolu_2")])
        tier: Any = first.tier
        stored = await tier.load(manager.identity)
        assert stored is not None and "toolu_1" in stored.state.processed
        stored.state = SessionState.from_scan(["toolu_2"], {})  # lacks toolu_1
        await tier.publish(manager.identity, stored)
    async with opened(tmp_path, url, prefix) as second:
        other = (await second.resolve(KEY)).manager
        assert other.source == "redis"
        assert await other.claim(["toolu_1", "call_9"]) == ["call_9"]
        assert "toolu_1" in other.processed_tool_call_ids


# --------------------------------------------------------------------------------------------
# lease tokens: exact integers
# --------------------------------------------------------------------------------------------


def lease_path(root: Path) -> Path:
    return root / "main" / "offload-s1.lease"


@pytest.mark.parametrize("url_kind", ["memory", "real"])
async def test_a_lease_above_2_53_is_granted_renewed_and_exclusive(
    tmp_path: Path, redis_server: RedisServerProcess, url_kind: str
) -> None:
    url = "memory://" if url_kind == "memory" else redis_server.url
    prefix = f"t{uuid4().hex[:12]}"
    lease_path(tmp_path).parent.mkdir(parents=True)
    write_record(lease_path(tmp_path), LeaseRecord(BIG, "", 0), FsyncPolicy.NEVER)
    async with (
        opened(tmp_path, url, prefix) as reg,
        opened(tmp_path, url, prefix) as rival,
    ):
        manager = (await reg.resolve(KEY)).manager
        async with manager.lease(ttl=0.6) as lease:
            assert lease.token == BIG + 1  # exactly one above the record
            assert not await lease.wait_lost(1.5)  # several renewals went through
            assert await manager.append_entries([entry("toolu_1")], lease=lease) == 1
            other = (await rival.resolve(KEY)).manager
            with pytest.raises(LeaseUnavailableError):
                await other.acquire_lease(ttl=5)
        async with manager.lease(ttl=5) as again:
            assert again.token == BIG + 2
    assert read_record(lease_path(tmp_path)) == LeaseRecord(BIG + 2, "", 0)


async def test_the_scripts_fence_a_token_one_below_the_fence_above_2_53(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with opened(tmp_path, redis_server.url, prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_0")])
        tier: Any = reg.tier
        keys = tier.keyspace.session_for(manager.identity)
        await tier.client.set(keys.fence, str(BIG))  # a newer holder has token 2^53 + 1
        snapshot = manager.snapshot()
        change = SessionChange(APPEND, [], snapshot.watermark, snapshot.watermark)
        await tier.publish_change(manager.identity, change, snapshot, "-", BIG - 1)
        await tier.publish(manager.identity, snapshot, "-", BIG - 1)
        assert tier.stats.fenced == 2
        fenced = tier.stats.snapshots_published
        await tier.publish(manager.identity, snapshot, "-", BIG)  # the newest holder writes
        assert tier.stats.fenced == 2 and tier.stats.snapshots_published == fenced + 1


@pytest.mark.parametrize("token", [2**64, 2**63, -1, 1.5, 1e20, "12", True, None], ids=repr)
def test_a_lease_record_whose_token_is_not_an_exact_integer_in_range_is_damaged(
    tmp_path: Path, token: Any
) -> None:
    path = tmp_path / "offload-s1.lease"
    path.write_text(json.dumps({"token": token, "holder": "", "expires_ms": 0}))
    with pytest.raises(JournalError) as raised:
        read_record(path)
    message = str(raised.value)
    # The way out it names is a bounded one, never "any token above ...".
    assert "above any" not in message
    assert str(MAX_TOKEN) in message


def test_no_token_beyond_the_bound_is_ever_written(tmp_path: Path) -> None:
    path = tmp_path / "offload-s1.lease"
    write_record(path, LeaseRecord(MAX_TOKEN, "h", 0), FsyncPolicy.NEVER)
    assert read_record(path) == LeaseRecord(MAX_TOKEN, "h", 0)
    with pytest.raises(JournalError):
        write_record(path, LeaseRecord(MAX_TOKEN + 1, "h", 0), FsyncPolicy.NEVER)
    assert read_record(path) == LeaseRecord(MAX_TOKEN, "h", 0)
