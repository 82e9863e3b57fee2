"""An agent worker that embeds offload-registry, as a deployment runs it.

It takes the same environment, ACL user and mounts as the deployed canary
(deploy/compose.yaml, deploy/k8s/worker-deployment.yaml):

    OFFLOAD_REGISTRY_DATA_ROOT   the shared data root (mounted at the same path everywhere)
    OFFLOAD_REGISTRY_REDIS_URL   redis://registry:<password>@redis:6379/0 (the `registry` user)
    OFFLOAD_REGISTRY_KEY_PREFIX  the prefix the ACL allows (offload-registry)

Each turn of the agent resolves its session, takes the session's lease (one writer per turn
across all workers), claims the tool calls it is about to offload (each tool call is
offloaded by exactly one worker, however many run), records them in the journal and marks
them offloaded. Run two at once on one session and each tool call is still handled once:

    python examples/agent_worker.py --session agent:main:demo --turns 5 &
    python examples/agent_worker.py --session agent:main:demo --turns 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from offload_registry import SessionRegistry
from offload_registry.errors import LeaseUnavailableError


def offload_entry(tool_call_id: str, summary: str) -> dict[str, Any]:
    """A journal entry in the seed's format (see SEED-SPEC.md, "Journal entries")."""
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "node_id": None,
        "tool_call": "search",
        "summary": summary,
        "result_ref": f"refs/{tool_call_id}.md",
        "tool_call_id": tool_call_id,
        "score": 5,
    }


async def agent_turn(
    registry: SessionRegistry, session_key: str, tool_call_ids: list[str]
) -> list[str]:
    """One turn: offload the tool results no worker has taken yet; returns the ids done here."""
    manager = (await registry.resolve(session_key)).manager
    try:
        async with manager.lease(ttl=10.0, wait=5.0) as lease:
            won = await manager.claim(tool_call_ids, lease=lease)
            entries = [offload_entry(i, f"summary of {i}") for i in won]
            await manager.append_entries(entries, lease=lease)
            await manager.mark_offload_status({i: True for i in won}, lease=lease)
            return won
    except LeaseUnavailableError:
        return []  # another worker holds the session for longer than we wait: next turn


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", default="agent:main:demo")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--calls-per-turn", type=int, default=4)
    args = parser.parse_args()
    async with SessionRegistry(
        os.environ.get("OFFLOAD_REGISTRY_DATA_ROOT"),
        redis_url=os.environ.get("OFFLOAD_REGISTRY_REDIS_URL"),
        key_prefix=os.environ.get("OFFLOAD_REGISTRY_KEY_PREFIX", "offload-registry"),
    ) as registry:
        done: list[str] = []
        for turn in range(args.turns):
            calls = [f"call_{turn}_{n}" for n in range(args.calls_per_turn)]
            done += await agent_turn(registry, args.session, calls)
        manager = (await registry.resolve(args.session)).manager
        print(json.dumps({"offloaded_here": done, "session_entries": manager.entry_count}))


if __name__ == "__main__":
    asyncio.run(main())
