"""Adversarial review: a data root restored from a backup, in place (same path, same
``.offload-registry-id``, so the same Redis keys), while Redis still holds copies of the
sessions as they were after the backup. The journal is the truth: Redis "can only make a
caller lose sooner, never win twice, and never make an id unwinnable" (README, Exactly-once
claims)."""

from __future__ import annotations

import shutil
from pathlib import Path
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from session_helpers import entry

KEY = "agent:main:s1"


async def _restored(tmp_path: Path, url: str, prefix: str) -> Path:
    root, backup = tmp_path / "root", tmp_path / "backup"
    async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("before_backup")])
        assert await manager.claim(["c_before"]) == ["c_before"]
    shutil.copytree(root, backup)
    async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert await manager.claim(["c_after"]) == ["c_after"]
        assert await manager.append_entries([entry("after_backup")]) == 1
    shutil.rmtree(root)
    shutil.copytree(backup, root)  # the restore, in place
    return root


async def test_a_data_root_restored_in_place_serves_the_journal_not_the_redis_copy(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    """Held: the entries come from the restored journal, not from Redis's later copy."""
    prefix = f"t{uuid4().hex[:12]}"
    root = await _restored(tmp_path, redis_server.url, prefix)
    async with SessionRegistry(root, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert manager.source == "redis"  # the copy made after the backup was found
        assert "before_backup" in manager.processed_tool_call_ids
        assert "after_backup" not in manager.processed_tool_call_ids


@pytest.mark.xfail(
    strict=True,
    reason="after an in-place restore (same path and id file, so the same Redis keys) the"
    " claim filter and the Redis snapshot's claimed set still hold ids won after the backup;"
    " the restored claims record does not, so those ids are unwinnable (until the idle TTL)",
)
async def test_an_id_won_after_the_backup_is_winnable_again_after_an_in_place_restore(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    root = await _restored(tmp_path, redis_server.url, prefix)
    async with SessionRegistry(root, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        assert "after_backup" not in manager.processed_tool_call_ids
        assert await manager.claim(["c_before"]) == []
        assert await manager.claim(["c_after"]) == ["c_after"]
