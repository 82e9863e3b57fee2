"""examples/: the agent worker runs as written, with the deployment's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_worker.py"


def test_two_agent_workers_on_one_session_offload_each_tool_call_once(
    redis_server: RedisServerProcess, tmp_path: Path
) -> None:
    prefix = f"t-example-{os.getpid()}"
    env = {
        **os.environ,
        "OFFLOAD_REGISTRY_DATA_ROOT": str(tmp_path),
        "OFFLOAD_REGISTRY_REDIS_URL": redis_server.url,
        "OFFLOAD_REGISTRY_KEY_PREFIX": prefix,
    }
    command = [sys.executable, str(EXAMPLE), "--session", "agent:main:demo", "--turns", "4"]
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr[-2000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    done = Counter(i for report in reports for i in report["offloaded_here"])
    assert set(done) == {f"call_{t}_{n}" for t in range(4) for n in range(4)}
    assert max(done.values()) == 1  # each tool call offloaded by exactly one worker
    with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = reg.resolve("agent:main:demo").manager
        assert set(manager.confirmed_offload_ids) >= set(done)
        assert manager.entry_count == 16
