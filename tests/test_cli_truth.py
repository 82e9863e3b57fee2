"""Every command tells the truth: a check that checked nothing does not say OK, the names
printed for sessions can be pasted back as input, and numbers mean what they say. Each test
runs the real CLI in a subprocess and asserts its exit status and output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis

from offload_registry import __version__
from offload_registry import sync as sync_api
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import run_cli, unique_prefix, write_sessions


def cli(root: Path, url: str, prefix: str, *args: str) -> tuple[int, str, str]:
    done = run_cli("--data-root", str(root), "--redis-url", url, "--key-prefix", prefix, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def warmed(tmp_path: Path, redis_server: RedisServerProcess) -> tuple[Path, str, str, list[str]]:
    keys = write_sessions(tmp_path, 4, 3)
    prefix = unique_prefix()
    status, _, err = cli(tmp_path, redis_server.url, prefix, "warm")
    assert status == 0, err
    return tmp_path, redis_server.url, prefix, keys


def test_verify_of_an_unknown_session_exits_1_with_the_reason(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    root, url, prefix, _ = warmed
    status, out, err = cli(root, url, prefix, "verify", "agent:nosuch:abc")
    assert status == 1
    assert "0 differences" not in out
    assert "no session agent:nosuch:abc" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["verify", "evict"])
@pytest.mark.parametrize("word", ["notakey", "a1/s00001"])
def test_a_string_that_is_not_a_session_key_exits_2(
    warmed: tuple[Path, str, str, list[str]], command: str, word: str
) -> None:
    root, url, prefix, _ = warmed
    status, out, err = cli(root, url, prefix, command, word)
    assert status == 2 and out == ""
    assert "not a session key" in err and err.count("\n") == 1
    if "/" in word:
        assert "did you mean agent:a1:s00001?" in err


def test_evict_of_an_unknown_session_exits_1_and_a_known_one_without_copy_says_so(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    root, url, prefix, keys = warmed
    status, out, err = cli(root, url, prefix, "evict", "agent:nosuch:abc")
    assert status == 1 and "no session agent:nosuch:abc" in err
    assert cli(root, url, prefix, "evict", keys[0])[0] == 0
    status, out, _ = cli(root, url, prefix, "evict", keys[0])
    assert status == 0
    assert out.strip() == "evict: 0 of 1 sessions dropped (keys); 1 had no Redis copy"


def test_verify_prints_keys_that_paste_back_and_positions_a_person_can_read(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    root, url, prefix, keys = warmed
    journal = root / "a1" / "offload-s00001.jsonl"
    with journal.open("a") as f:
        f.write('{"tool_call_id":"call_new","summary":"s"}\n')
    status, out, _ = cli(root, url, prefix, "verify")
    assert status == 1
    line = next(x for x in out.splitlines() if x.startswith("behind: "))
    printed = line.removeprefix("behind: ").split(" ")[0]
    assert printed == keys[1] == "agent:a1:s00001"
    assert "('" not in line and "journal byte " in line, line
    # the printed name is accepted back by every command
    assert cli(root, url, prefix, "verify", printed)[0] == 1
    assert cli(root, url, prefix, "verify", "--repair", printed)[0] == 0
    status, out, _ = cli(root, url, prefix, "verify", printed)
    assert status == 0 and "verify: 1 sessions, 0 differences" in out
    status, out, _ = cli(root, url, prefix, "inspect", "--json", printed)
    assert status == 0 and json.loads(out)["entry_count"] == 4


def test_a_worker_suffixed_session_is_printed_as_the_key_that_reaches_it(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    key = "agent:main:swebench-w3-task"
    (tmp_path / "main-w3").mkdir()
    (tmp_path / "main-w3" / "offload-swebench-w3-task.jsonl").write_text(
        '{"tool_call_id":"c1","summary":"s"}\n'
    )
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "offload-a..b.jsonl").write_text('{"tool_call_id":"c2"}\n')
    prefix = unique_prefix()
    status, out, _ = cli(tmp_path, redis_server.url, prefix, "verify")
    assert status == 1
    assert f"missing: {key}" in out.splitlines()
    assert "missing: main/offload-a..b (no key resolves to this file)" in out.splitlines()


def test_sessions_lists_pasteable_keys_with_what_redis_holds_of_each(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    root, url, prefix, keys = warmed
    assert cli(root, url, prefix, "evict", keys[0])[0] == 0
    status, out, _ = cli(root, url, prefix, "sessions", "--json")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(keys)
    by_key = {r["key"]: r for r in rows}
    assert by_key[keys[0]]["redis"] == "missing" and by_key[keys[0]]["entries"] is None
    for key in keys[1:]:
        row = by_key[key]
        assert row["redis"] == "ok" and row["entries"] == 3
        assert row["redis_bytes"] > 0 and row["idle_seconds"] >= 0
    status, out, _ = cli(root, url, prefix, "sessions", "--agent", "a1")
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("agent:a1:s00001  journal=")
    assert "redis=ok entries=3 size=" in lines[0]
    assert lines[-1] == f"sessions: 1 under {root}, 1 held by Redis"
    # every listed key is accepted back
    assert cli(root, url, prefix, "inspect", lines[0].split()[0])[0] == 0
    status, out, _ = cli(root, "", prefix, "sessions")  # no Redis: the disk only
    assert status == 0 and out.splitlines()[-1] == f"sessions: 4 under {root} (no Redis asked)"


def test_version_and_global_options_after_the_command(tmp_path: Path) -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"offload-registry {__version__}"
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "offload-s1.jsonl").write_text('{"tool_call_id":"c1"}\n')
    done = run_cli("inspect", "--data-root", str(tmp_path), "--json", "agent:main:s1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entry_count"] == 1
    # after the command wins over before it
    done = run_cli("--data-root", "/nonexistent", "sessions", "--data-root", str(tmp_path))
    assert done.returncode == 0 and done.stdout.startswith("agent:main:s1  journal=")


def test_inspect_with_a_missing_data_root_exits_2(tmp_path: Path) -> None:
    done = run_cli("--data-root", str(tmp_path / "nope"), "inspect", "agent:main:s1")
    assert done.returncode == 2 and done.stdout == ""
    assert "is not a directory" in done.stderr and done.stderr.count("\n") == 1


def test_stats_measures_memory_exactly_and_says_when_there_is_nothing_to_measure(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    root, url, prefix, _ = warmed
    status, out, _ = cli(root, url, prefix, "stats", "--json")
    assert status == 0
    reported = json.loads(out)["redis"]
    client = redis.Redis.from_url(url)
    try:
        exact = 0
        for key in client.scan_iter(match=f"{prefix}:*"):
            if not key.endswith((b":state", b":deltas")):
                continue
            exact += client.memory_usage(key, samples=0) or 0
    finally:
        client.close()
    assert reported["sessions"] == reported["sampled"] == 4
    assert reported["bytes_per_session"] == round(exact / 4, 1)
    status, out, _ = cli(root, url, unique_prefix(), "stats")
    assert status == 0 and "None" not in out
    assert "redis: no sessions under the key prefix" in out
    for bad in ("-5", "0"):
        status, out, err = cli(root, url, prefix, "stats", "--sample", bad)
        assert status == 2 and out == "" and "must be at least 1" in err


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_simulate_refuses_a_duration_that_is_not_positive(seconds: str) -> None:
    done = run_cli("simulate", "--no-redis", "--seconds", seconds)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("after_the_command", [False, True])
def test_simulate_against_an_unreachable_redis_exits_1(after_the_command: bool) -> None:
    # after the command: as `scripts/run-demo.sh --redis-url URL` passes it
    url = ["--redis-url", "redis://127.0.0.1:1/0"]
    args = ["simulate", *url] if after_the_command else [*url, "simulate"]
    done = run_cli(*args, "--seconds", "0.5")
    assert done.returncode == 1 and done.stdout == ""
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr
    assert "Traceback" not in done.stderr


def test_simulate_without_redis_does_not_claim_redis_agrees() -> None:
    done = run_cli("simulate", "--no-redis", "--workers", "1", "--sessions", "1", "--seconds", "1")
    assert done.returncode == 0, done.stderr
    assert "Redis agrees" not in done.stdout and "no Redis in this run" in done.stdout
    assert done.stdout.startswith("simulate: 1 worker process, 1 shared session, ")


def test_simulate_report_is_consistent_and_names_the_server_it_started() -> None:
    done = run_cli("simulate", "--workers", "2", "--sessions", "2", "--seconds", "2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "(embedded: /" in report["shared_tier"]
    assert "restarted empty after" in done.stderr and "on purpose" in done.stderr
    staleness = report["staleness_ms"]
    assert staleness["p50"] <= staleness["p99"] <= staleness["max"]
    assert report["redis_sessions_compared"] is not None


def test_a_data_root_recreated_at_the_same_path_gets_a_keyspace_of_its_own(
    warmed: tuple[Path, str, str, list[str]],
) -> None:
    # The deployment is named by the data root's id file, not its path: a root deleted and
    # made again is a new deployment, so nothing of the old one can be mistaken for it.
    root, url, prefix, _ = warmed
    client = redis.Redis.from_url(url)
    try:
        before = set(client.scan_iter(match=f"{prefix}:*"))
        shutil.rmtree(root)
        keys = write_sessions(root, 2, 1)
        status, _, err = cli(root, url, prefix, "warm")
        assert status == 0, err
        status, out, _ = cli(root, url, prefix, "verify", *keys)
        assert status == 0 and "2 sessions, 0 differences" in out
        after = set(client.scan_iter(match=f"{prefix}:*"))
    finally:
        client.close()
    assert before and before <= after  # the old deployment's keys are left to their idle TTL
    assert after - before  # and the new one wrote its own


def test_a_user_denied_select_is_a_permission_error_not_cannot_reach(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    admin = redis.Redis.from_url(private_redis_server.url)
    try:
        admin.acl_setuser(
            "nosel",
            enabled=True,
            passwords=["+pw-0123456789"],
            keys=["*"],
            commands=["+@all", "-select"],
        )
    finally:
        admin.close()
    url = f"redis://nosel:pw-0123456789@127.0.0.1:{private_redis_server.port}/2"
    status, out, err = cli(tmp_path, url, unique_prefix(), "stats")
    assert status == 2 and out == ""
    assert "cannot reach" not in err and "select" in err and "permission" in err
    assert "pw-0123456789" not in err


def test_sessions_shows_the_key_a_worker_recorded_for_a_real_session_id(tmp_path: Path) -> None:
    with sync_api.SessionRegistry(tmp_path) as reg:
        manager = reg.resolve("agent:main:chat-7", "a1b2-real").manager
        manager.append_entries([{"tool_call_id": "c1", "summary": "s"}])
    done = run_cli("--data-root", str(tmp_path), "sessions", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["key"] == "agent:main:a1b2-real" and row["path"] == "main/offload-a1b2-real"
    assert row["recorded_keys"] == ["agent:main:chat-7"]
    # the printed key reaches the same files; the recorded one with --real-session-id
    for args in (
        [row["key"]],
        ["--real-session-id", "a1b2-real", "agent:main:chat-7"],
    ):
        done = run_cli("--data-root", str(tmp_path), "inspect", "--json", *args)
        assert done.returncode == 0 and json.loads(done.stdout)["entry_count"] == 1
