"""``warm``: every journal lands in Redis exactly, idempotently, resumably, and never over a
live worker's newer write. Real Redis servers only (the ``redis_server`` fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from offload_registry import sync as sync_api
from offload_registry.disk.layout import data_root_id
from offload_registry.store.keyspace import Keyspace
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import (
    cli_json,
    journal_truth,
    redis_view,
    run_cli,
    unique_prefix,
    warm_json,
    write_sessions,
)

warm = warm_json  # the command, as the tests below call it


def test_after_warm_every_sample_session_is_answered_by_redis_with_the_expected_sets(
    sample_root: Path,
    sample_expected: list[dict[str, Any]],
    redis_server: RedisServerProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = unique_prefix()
    report = warm(capsys, sample_root, redis_server.url, prefix)
    assert report["sessions"] == report["published"] == 8
    assert report["corrupt"] > 0  # the sample's damaged journal is reported, not fatal
    for want in sample_expected:
        args = ["--data-root", str(sample_root), "--redis-url", redis_server.url]
        args += ["--key-prefix", prefix, "inspect", "--json", want["session_key"]]
        if want["real_session_id"]:
            args += ["--real-session-id", want["real_session_id"]]
        status, got = cli_json(capsys, *args)
        assert status == 0
        expected = {k: v for k, v in want.items() if k != "real_session_id"}
        journal = sample_root / want["agent_name"] / f"offload-{want['session_id']}.jsonl"
        # a session with no journal has nothing to warm: it is rebuilt (empty) on resolve
        source = "redis" if journal.exists() else "journal"
        assert got == {**expected, "source": source}, want["session_key"]


def test_warm_loads_damaged_journals_exactly_and_a_second_run_skips_every_session(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 1500, 4, damaged_every=50)
    prefix = unique_prefix()
    first = warm(capsys, tmp_path, redis_server.url, prefix, "--batch", "100")
    assert first["sessions"] == first["published"] == 1500
    assert (first["corrupt"], first["invalid"]) == (60, 30)  # torn last lines are corrupt too
    assert first["entries"] == 1500 * 4 and first["failed"] == 0
    sample = keys[::37]
    view = redis_view(tmp_path, redis_server.url, prefix, sample)
    truth = journal_truth(tmp_path, sample)
    assert {k: {**v, "source": "redis"} for k, v in truth.items()} == view

    second = warm(capsys, tmp_path, redis_server.url, prefix)
    assert second["skipped"] == second["sessions"] == 1500
    assert second["published"] == second["entries"] == 0


def test_warm_includes_claims_records_and_only_the_named_agents(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    with sync_api.SessionRegistry(tmp_path) as writer:  # journal only: nothing in Redis
        for key in ("agent:main:s1", "agent:other:s2"):
            manager = writer.resolve(key).manager
            manager.append_entries([{"tool_call_id": "call_1", "offloaded": True}])
            assert manager.claim(["call_2", "call_3"]) == ["call_2", "call_3"]
    prefix = unique_prefix()
    report = warm(capsys, tmp_path, redis_server.url, prefix, "--agent", "main")
    assert report["sessions"] == report["published"] == 1
    view = redis_view(tmp_path, redis_server.url, prefix, ["agent:main:s1", "agent:other:s2"])
    assert view["agent:main:s1"]["source"] == "redis"
    assert view["agent:main:s1"]["processed"] == ["call1", "call2", "call3", "call_1", "call_2",
                                                  "call_3"]  # fmt: skip
    assert view["agent:other:s2"]["source"] == "journal"  # not warmed
    with sync_api.SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        # a claim warmed from the record is never won again
        assert reg.resolve("agent:main:s1").manager.claim(["call_2", "call_4"]) == ["call_4"]


def test_warm_killed_midway_finishes_on_the_next_run_without_redoing_done_sessions(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    keys = write_sessions(tmp_path, 3000, 3)
    data_root_id(tmp_path, create=True)  # the deployment's name, before warm makes it
    prefix = unique_prefix()
    args = ["--data-root", str(tmp_path), "--redis-url", redis_server.url]
    args += ["--key-prefix", prefix, "warm", "--json", "--batch", "5"]
    child = subprocess.Popen(
        [sys.executable, "-m", "offload_registry.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(redis_server.url)
    pattern = Keyspace.for_data_root(prefix, tmp_path).state_pattern()
    try:
        deadline = time.monotonic() + 60
        while sum(1 for _ in client.scan_iter(match=pattern, count=1000)) < 200:
            assert child.poll() is None, "warm finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_before = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    finally:
        child.kill()
        client.close()
    assert 200 <= done_before < 3000
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["skipped"] >= done_before and report["failed"] == report["raced"] == 0
    assert report["skipped"] + report["published"] == 3000
    sample = keys[::97]
    assert redis_view(tmp_path, redis_server.url, prefix, sample) == {
        k: {**v, "source": "redis"} for k, v in journal_truth(tmp_path, sample).items()
    }


def test_warm_racing_a_live_writer_never_overwrites_its_newer_state(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sessions(tmp_path, 400, 3)
    live = "agent:a0:s00000"
    prefix = unique_prefix()
    stop = threading.Event()
    written: list[str] = []

    def worker() -> None:
        with sync_api.SessionRegistry(
            tmp_path, redis_url=redis_server.url, key_prefix=prefix
        ) as reg:
            manager = reg.resolve(live).manager
            i = 0
            while not stop.is_set() or i < 20:
                manager.append_entries([{"tool_call_id": f"live_{i}"}])
                if i % 5 == 0:
                    manager.mark_offload_status({f"live_{i}": "deleted"})
                written.append(f"live_{i}")
                i += 1

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for _ in range(3):
            warm(capsys, tmp_path, redis_server.url, prefix, "--batch", "7")
    finally:
        stop.set()
        thread.join()
    view = redis_view(tmp_path, redis_server.url, prefix, [live])[live]
    assert view["source"] == "redis"
    assert {k: v for k, v in view.items() if k != "source"} == journal_truth(tmp_path, [live])[live]
    assert set(written) <= set(view["processed"])
    # Redis itself (not only the journal catch-up on resolve) holds the final state.
    with sync_api.SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as r:
        identity = r.resolve(live).manager.identity
        stored = r.tier.load(identity)  # type: ignore[attr-defined]
    assert stored is not None and stored.state.entry_count == 3 + len(written)


@pytest.mark.parametrize(
    ("args", "needs_root"),
    [
        (["warm"], True),  # no Redis configured
        (["--redis-url", "memory://", "warm"], True),
        (["--redis-url", "redis://127.0.0.1:1/0", "warm", "--agent", "nope"], True),
        (["--redis-url", "redis://127.0.0.1:1/0", "warm", "--batch", "0"], True),
        (["--redis-url", "redis://127.0.0.1:1/0", "warm"], False),  # no data root
    ],
)
def test_warm_bad_usage_exits_2_with_one_line(
    args: list[str], needs_root: bool, tmp_path: Path
) -> None:
    root = tmp_path if needs_root else tmp_path / "missing"
    env_free = [a for a in args]
    done = run_cli("--data-root", str(root), *env_free)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_warm_with_redis_down_exits_1_with_one_line(tmp_path: Path) -> None:
    write_sessions(tmp_path, 2, 1)
    done = run_cli("--data-root", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0", "warm")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert os.listdir(tmp_path)  # untouched journals still there
