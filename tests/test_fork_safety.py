"""A registry created before a fork never shares cached copies or connections with the child."""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

from offload_registry import SessionRegistry as AsyncSessionRegistry
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from session_helpers import entry

KEY = "agent:main:forked"


def in_child(check: Any) -> int:
    """Fork, run ``check`` in the child, and return the child's exit status (0 = passed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with a listener thread
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os._exit(0 if check() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_starts_with_an_empty_near_cache_and_its_own_connections(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"fork{uuid.uuid4().hex[:10]}"
    with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        parent_manager = reg.resolve(KEY).manager
        parent_manager.append_entries([entry("call_1")])

        def check() -> bool:
            fresh = reg.size == 0 and reg.get(KEY) is None
            manager = reg.resolve(KEY).manager
            manager.append_entries([entry("call_2")])
            return fresh and manager is not parent_manager and manager.entry_count == 2

        assert in_child(check) == 0
        # The parent's copy and connections still work, and it learns of the child's write.
        parent_manager.refresh()
        assert reg.resolve(KEY).manager.entry_count == 2


async def test_an_asyncio_registry_forked_while_connected_uses_new_connections_in_the_child(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"fork{uuid.uuid4().hex[:10]}"
    async with AsyncSessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        parent_manager = (await reg.resolve(KEY)).manager
        await parent_manager.append_entries([entry("call_1")])
        tier: Any = reg.tier
        parent_client = tier._client

        def check() -> bool:
            async def in_new_loop() -> bool:
                manager = (await reg.resolve(KEY)).manager
                await manager.append_entries([entry("call_2")])
                return (
                    tier._client is not parent_client
                    and manager.source == "redis"
                    and manager.entry_count == 2
                    and tier.stats.errors == 0
                )

            return asyncio.new_event_loop().run_until_complete(in_new_loop())

        assert in_child(check) == 0
        # The parent's connections were neither used nor closed by the child.
        assert tier._client is parent_client
        assert await parent_client.ping()
        await parent_manager.refresh()
        assert parent_manager.entry_count == 2
        assert tier.stats.errors == 0
