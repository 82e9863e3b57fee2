"""``warm --processes N``: N processes leave Redis exactly as one does, their report adds up,
each session is warmed by exactly one of them, and a failure is one error line. Real Redis
servers only (the ``redis_server`` fixture)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from offload_registry import sync as sync_api
from offload_registry.codec import decode_snapshot
from offload_registry.ops.warm_processes import TierSpec, warm_processes
from offload_registry.store.keyspace import Keyspace
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import (
    journal_truth,
    redis_view,
    run_cli,
    unique_prefix,
    warm_json,
    write_sessions,
)

COUNTS = ("published", "skipped", "raced", "failed")


warm = warm_json  # the command, as the tests below call it


def session_values(root: Path, url: str, prefix: str) -> dict[str, Any]:
    """Every session key of ``prefix`` (named without the prefix) and its value; snapshots
    decoded, since the order of a run's strings follows the process's string hashing; the
    epoch, each prefix's own, checked to be one and left out."""
    base = Keyspace.for_data_root(prefix, root).base
    client = redis.Redis.from_url(url)
    out: dict[str, Any] = {}
    epochs: set[bytes] = set()
    try:
        for key in client.scan_iter(match=f"{base}:{{*}}:*", count=1000):
            name = key.decode()[len(base) :]
            kind = client.type(key).decode()
            if kind == "hash":
                fields = client.hgetall(key)
                epochs.add(fields.pop(b"epoch"))
                snap = decode_snapshot(fields.pop(b"snap"))
                state = snap.state
                out[name] = (
                    fields,
                    sorted(state.processed),
                    sorted(state.confirmed),
                    sorted(state.deleted),
                    state.entry_count,
                    sorted(snap.claimed),
                    snap.watermark,
                    snap.version,
                )
            elif kind == "list":
                out[name] = client.lrange(key, 0, -1)
            else:
                out[name] = client.get(key)
    finally:
        client.close()
    assert len(epochs) <= 1
    return out


def with_claims(root: Path) -> list[str]:
    keys = ["agent:a0:claimed", "agent:a1:claimed"]
    with sync_api.SessionRegistry(root) as writer:  # journal only: nothing in Redis
        for key in keys:
            manager = writer.resolve(key).manager
            manager.append_entries([{"tool_call_id": "call_1", "offloaded": "deleted"}])
            assert manager.claim(["call_2", "call_3"]) == ["call_2", "call_3"]
    return keys


@pytest.mark.parametrize("processes", [2, 3])
def test_warm_with_processes_leaves_redis_as_one_process_does_and_adds_up(
    processes: int,
    tmp_path: Path,
    redis_server: RedisServerProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = write_sessions(tmp_path, 600, 4, damaged_every=50) + with_claims(tmp_path)
    one, many = unique_prefix(), unique_prefix()
    single = warm(capsys, tmp_path, redis_server.url, one)
    report = warm(
        capsys, tmp_path, redis_server.url, many, "--processes", str(processes), "--batch", "16"
    )
    assert set(report) == set(single)  # the same JSON fields
    assert report["sessions"] == sum(report[k] for k in COUNTS) == 602
    for field in ("sessions", "published", "entries", "corrupt", "invalid"):
        assert report[field] == single[field], field
    values = session_values(tmp_path, redis_server.url, many)
    assert len(values) >= 602
    assert values == session_values(tmp_path, redis_server.url, one)
    sample = keys[::41] + keys[-2:]
    assert redis_view(tmp_path, redis_server.url, many, sample) == {
        k: {**v, "source": "redis"} for k, v in journal_truth(tmp_path, sample).items()
    }

    again = warm(capsys, tmp_path, redis_server.url, many, "--processes", str(processes))
    assert again["sessions"] == again["skipped"] == 602
    assert again["published"] == again["entries"] == 0


def test_warm_with_processes_takes_only_the_named_agents(
    tmp_path: Path, redis_server: RedisServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write_sessions(tmp_path, 90, 2)
    prefix = unique_prefix()
    report = warm(capsys, tmp_path, redis_server.url, prefix, "--processes", "2", "--agent", "a1")
    assert report["sessions"] == report["published"] == 30
    view = redis_view(tmp_path, redis_server.url, prefix, keys[:6])
    assert {k: v["source"] for k, v in view.items()} == {
        k: "redis" if k.startswith("agent:a1:") else "journal" for k in keys[:6]
    }


def test_warm_with_processes_and_redis_down_exits_1_with_one_line(tmp_path: Path) -> None:
    write_sessions(tmp_path, 4, 1)
    done = run_cli(
        "--data-root", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0",
        "warm", "--processes", "2",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_warm_processes_must_be_positive(tmp_path: Path) -> None:
    done = run_cli(
        "--data-root", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0",
        "warm", "--processes", "0",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr


def spawned_children(pid: int) -> list[int]:
    """The warm children of ``pid`` (spawned interpreters, not the resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def test_warm_with_processes_whose_child_dies_exits_1_naming_it_and_resumes(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    keys = write_sessions(tmp_path, 3000, 3)
    prefix = unique_prefix()
    args = ["--data-root", str(tmp_path), "--redis-url", redis_server.url]
    args += ["--key-prefix", prefix, "warm", "--json", "--batch", "5", "--processes", "3"]
    parent = subprocess.Popen(
        [sys.executable, "-m", "offload_registry.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children := spawned_children(parent.pid)) < 2:
            assert parent.poll() is None, parent.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # let them start work
        os.kill(children[0], signal.SIGKILL)
        out, err = parent.communicate(timeout=60)
    finally:
        parent.kill()
    assert parent.returncode == 1, (out, err)
    assert len(err.strip().splitlines()) == 1 and "exited" in err, err
    assert not out
    for child in children:  # none left behind
        assert (
            not Path(f"/proc/{child}").exists()
            or b"zombie" in Path(f"/proc/{child}/status").read_bytes().lower()
        )
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["skipped"] + report["published"] == 3000 and report["failed"] == 0
    sample = keys[::97]
    assert redis_view(tmp_path, redis_server.url, prefix, sample) == {
        k: {**v, "source": "redis"} for k, v in journal_truth(tmp_path, sample).items()
    }


def test_warm_processes_api_reports_progress_summed_over_processes(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    write_sessions(tmp_path, 300, 2)
    seen: list[tuple[int, int]] = []

    class Recorder:
        def update(self, done: int, entries: int) -> None:
            seen.append((done, entries))

    spec = TierSpec(redis_server.url, unique_prefix())
    report = asyncio.run(
        warm_processes(spec, tmp_path, processes=2, batch_size=5, progress=Recorder())
    )
    assert report.sessions == report.published == 300 and report.entries == 600
    assert seen and seen == sorted(seen)  # each process's counts only grow
    assert all(done <= 300 and entries == 2 * done for done, entries in seen)
