"""``stats`` and ``evict``, and what every operator command shares: ``--help`` with an
example, exit 2 with one line for bad usage, ``--json`` shapes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from offload_registry import sync as sync_api
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import cli_json, redis_view, run_cli, unique_prefix, write_sessions
from session_helpers import wait_until

COMMANDS = ["warm", "verify", "stats", "evict"]


def ops(capsys: Any, root: Path, url: str, prefix: str, *args: str) -> tuple[int, Any]:
    return cli_json(
        capsys, "--data-root", str(root), "--redis-url", url, "--key-prefix", prefix, *args
    )


def test_every_operator_command_has_help_with_an_example() -> None:
    for command in COMMANDS:
        done = run_cli(command, "--help")
        assert done.returncode == 0 and "Example:" in done.stdout, command


@pytest.mark.parametrize("command", COMMANDS)
def test_an_operator_command_without_a_redis_exits_2_with_one_line(
    command: str, tmp_path: Path
) -> None:
    args = [command, "--idle-for", "1h"] if command == "evict" else [command]
    done = run_cli("--data-root", str(tmp_path), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "needs a Redis" in done.stderr


@pytest.mark.parametrize(
    "args",
    [["evict"], ["evict", "--idle-for", "5x"], ["evict", "--idle-for", "1h", "agent:a:b"]],
)
def test_evict_bad_usage_exits_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    done = run_cli("--data-root", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_stats_counts_sessions_memory_and_damaged_lines(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sessions(tmp_path, 20, 5, damaged_every=10)
    prefix = unique_prefix()
    assert ops(capsys, tmp_path, redis_server.url, prefix, "warm", "--json")[0] == 0
    capsys.readouterr()
    status, result = ops(capsys, tmp_path, redis_server.url, prefix, "stats", "--json")
    assert status == 0
    assert result["redis"]["sessions"] == result["redis"]["sampled"] == 20
    assert result["redis"]["bytes_per_session"] > 0 and result["redis"]["bytes_per_entry"] > 0
    assert isinstance(result["redis"]["maxmemory_policy"], str)
    disk = result["disk"]
    assert (disk["sessions"], disk["journals"], disk["entries"]) == (20, 20, 100)
    assert (disk["corrupt"], disk["invalid"]) == (4, 2)
    assert disk["journal_bytes"] == sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl"))


def test_evict_by_key_drops_the_copy_and_tells_live_workers(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 4, 3)
    prefix, url = unique_prefix(), redis_server.url
    assert ops(capsys, tmp_path, url, prefix, "warm", "--json")[0] == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.jsonl")}
    with sync_api.SessionRegistry(tmp_path, redis_url=url, key_prefix=prefix) as live:
        cached = live.resolve(keys[0]).manager
        # The listener's confirmed subscription marks the copy stale once; from then on every
        # announcement reaches it. Revalidate, so that only the eviction can mark it again.
        wait_until(
            "the live worker's listener subscribed",
            lambda: live.tier.hears(cached.identity) and cached.stale,
        )
        assert live.resolve(keys[0]).manager is cached and not cached.stale
        status, report = ops(capsys, tmp_path, url, prefix, "evict", "--json", *keys[:2])
        assert status == 0 and report == {
            "scanned": 2,
            "evicted": 2,
            "rule": "keys",
            "not_found": [],
        }
        wait_until("the live worker told of the eviction", lambda: cached.stale)
    view = redis_view(tmp_path, url, prefix, keys)
    assert [view[k]["source"] for k in keys] == ["journal", "journal", "redis", "redis"]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.jsonl")} == before


def test_evict_idle_for_drops_only_sessions_nobody_used_for_that_long(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 6, 2)
    prefix, url = unique_prefix(), redis_server.url
    assert ops(capsys, tmp_path, url, prefix, "warm", "--json")[0] == 0
    capsys.readouterr()
    time.sleep(3.2)  # OBJECT IDLETIME counts whole seconds
    redis_view(tmp_path, url, prefix, keys[:1])  # a worker reads one session: not idle
    status, report = ops(capsys, tmp_path, url, prefix, "evict", "--idle-for", "2s", "--json")
    assert status == 0 and report == {
        "scanned": 6,
        "evicted": 5,
        "rule": "idletime",
        "not_found": [],
    }
    view = redis_view(tmp_path, url, prefix, keys)
    assert [view[k]["source"] for k in keys] == ["redis"] + ["journal"] * 5


def test_evict_idle_for_falls_back_to_the_ttl_under_an_lfu_policy(
    tmp_path: Path, private_redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = private_redis_server.url
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "allkeys-lfu")
    client.close()
    write_sessions(tmp_path, 3, 2)
    prefix = unique_prefix()
    assert ops(capsys, tmp_path, url, prefix, "warm", "--json")[0] == 0
    capsys.readouterr()
    status, report = ops(capsys, tmp_path, url, prefix, "evict", "--idle-for", "1h", "--json")
    assert status == 0 and report == {"scanned": 3, "evicted": 0, "rule": "ttl", "not_found": []}
    time.sleep(1.2)
    status, report = ops(capsys, tmp_path, url, prefix, "evict", "--idle-for", "1s", "--json")
    assert status == 0 and report == {"scanned": 3, "evicted": 3, "rule": "ttl", "not_found": []}


def test_bench_warm_runs_end_to_end_and_reports_both_rates() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_warm.py"
    done = subprocess.run(
        [sys.executable, str(script), "--sessions", "40", "--entries", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entries"] == 200 and result["second_warm_skipped"] == 40
    assert result["parse_only_entries_per_second"] > 0 and result["warm_entries_per_second"] > 0
