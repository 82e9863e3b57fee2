"""``verify``: each kind of planted drift is found, ``--repair`` fixes all of it from the
journals (never writing them), and a clean deployment verifies clean."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from offload_registry import sync as sync_api
from offload_registry.changes import TierSnapshot
from offload_registry.keys import resolve_identity
from offload_registry.ops.batch import publish_many
from offload_registry.ops.tier import open_tier
from offload_registry.ops.verify import KINDS
from offload_registry.session_state import SessionState
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import cli_json, journal_truth, redis_view, unique_prefix, write_sessions

# one session per kind of drift, planted by plant() below
PLANTED = {
    "missing": "agent:a0:s00000",
    "stale_epoch": "agent:a1:s00001",
    "broken_deltas": "agent:a2:s00002",
    "undecodable": "agent:a0:s00003",
    "behind": "agent:a1:s00004",
    "sets_differ": "agent:a2:s00005",
}
GARBAGE_STRING = "agent:a0:s00006"  # a foreign value of another type: undecodable too
NO_FILES = "agent:ghost:nothing-on-disk"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def verify(capsys: Any, root: Path, url: str, prefix: str, *extra: str) -> tuple[int, Any]:
    return cli_json(
        capsys, "--data-root", str(root), "--redis-url", url, "--key-prefix", prefix,
        "verify", "--json", *extra,
    )  # fmt: skip


async def plant(root: Path, url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    async with open_tier(root, url, key_prefix=prefix, read_only=False) as tier:
        keys = {k: tier.keyspace.session_for(resolve_identity(k)) for k in PLANTED.values()}
        await client.delete(keys[PLANTED["missing"]].state)
        await client.hset(keys[PLANTED["stale_epoch"]].state, "epoch", "an-old-epoch")
        await client.hset(keys[PLANTED["broken_deltas"]].state, "deltas", 3)
        await client.hset(keys[PLANTED["undecodable"]].state, "snap", b"\xc1garbage")
        garbage = tier.keyspace.session_for(resolve_identity(GARBAGE_STRING))
        await client.delete(garbage.state)
        await client.set(garbage.state, b"not a hash")
        # sets_differ: the right positions, a wrong set
        wrong = await tier.load(resolve_identity(PLANTED["sets_differ"]))
        assert wrong is not None
        wrong.state.confirmed.add("never_confirmed")
        extra = TierSnapshot(SessionState(entry_count=1), {"x"}, None)
        ghost = tier.keyspace.session_for(resolve_identity(NO_FILES))
        sets_key = keys[PLANTED["sets_differ"]]
        await publish_many(
            tier, [(sets_key, wrong, "always"), (ghost, extra, "always")], announce=False
        )
    await client.aclose()
    # behind: a write Redis never saw (a worker without Redis)
    with sync_api.SessionRegistry(root) as journal_only:
        journal_only.resolve(PLANTED["behind"]).manager.append_entries([{"tool_call_id": "late"}])


def test_verify_finds_each_kind_of_planted_drift_and_repair_fixes_it_all(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 30, 4, damaged_every=7)
    prefix, url = unique_prefix(), redis_server.url
    args = ("--data-root", str(tmp_path), "--redis-url", url, "--key-prefix", prefix)
    assert cli_json(capsys, *args, "warm", "--json")[0] == 0
    status, clean = verify(capsys, tmp_path, url, prefix)
    assert status == 0 and clean["drift"] == 0 and clean["sessions"] == 30

    asyncio.run(plant(tmp_path, url, prefix))
    before = tree(tmp_path)
    status, report = verify(capsys, tmp_path, url, prefix)
    assert status == 1 and "by_kind" in report, report
    assert report["by_kind"] == {
        **{kind: 1 for kind in KINDS},
        "undecodable": 2,
        "unreadable": 0,  # every file is readable here (test_cli_errors covers the others)
    }
    found = {(d["kind"], d["session"]) for d in report["differences"]}
    for kind, key in PLANTED.items():
        assert (kind, key) in found  # the key itself: pasteable back into any command

    status, repaired = verify(capsys, tmp_path, url, prefix, "--repair")
    assert status == 0, repaired
    assert repaired["repaired"] == repaired["drift"] == 8 and repaired["unrepaired"] == 0
    status, after = verify(capsys, tmp_path, url, prefix)
    assert status == 0 and after["drift"] == 0, after
    assert tree(tmp_path) == before  # journals are never written
    view = redis_view(tmp_path, url, prefix, keys)
    truth = journal_truth(tmp_path, keys)
    assert view == {k: {**v, "source": "redis"} for k, v in truth.items()}


def test_verify_named_keys_checks_only_those_sessions(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 5, 2)
    prefix, url = unique_prefix(), redis_server.url
    status, report = verify(capsys, tmp_path, url, prefix, keys[0], keys[1])
    assert status == 1 and report["sessions"] == 2
    assert report["by_kind"]["missing"] == 2 and report["drift"] == 2
    # a session with no files and no copy is not drift, but nothing was checked: exit 1
    status, report = verify(capsys, tmp_path, url, prefix, "agent:nobody:nothing")
    assert status == 1 and report["drift"] == 0 and report["sessions"] == 0
    assert report["not_found"] == ["agent:nobody:nothing"]
