"""One exit-code policy, one line on stderr, never a traceback: every command, every way its
set-up can be wrong (exit 2) or its environment can fail (exit 1).

Each case runs the real CLI in a subprocess. The machine runs tests as root, which reads
any directory whatever its mode, so "cannot read" is produced by a wrapper that makes the
named paths fail with EACCES, exactly as ``os.scandir`` and ``open`` fail for another user.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from offload_registry.testing.server import RedisServerProcess, ServerOptions, free_port
from ops_helpers import unique_prefix, write_sessions
from redis_fixtures import server_binary_or_fail

PASSWORD = "s3cret-pw"
ALL_COMMANDS: list[list[str]] = [
    ["inspect", "agent:a:b"],
    ["warm"],
    ["stats"],
    ["verify"],
    ["evict", "agent:a:b"],
    ["simulate", "--workers", "1", "--seconds", "1", "--no-restart"],
]

# Runs main() with os.scandir, os.open and io.open failing with EACCES for the paths listed,
# comma-separated, in OFFLOAD_TEST_DENY, and everything under them (as for a user without
# permission on a directory of mode 000, or on a file of mode 000).
DENYING_MAIN = r"""
import io, os, sys
denied = set(filter(None, os.environ.get("OFFLOAD_TEST_DENY", "").split(",")))
def guard(path, dir_fd=None):
    if not isinstance(path, (str, os.PathLike)):
        return
    name = os.fspath(path)
    if dir_fd is not None and not os.path.isabs(name):  # opened relative to a directory
        name = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
    full = os.path.abspath(name)
    if any(full == d or full.startswith(d + os.sep) for d in denied):
        raise PermissionError(13, "Permission denied", os.fspath(path))
def wrap(real):
    def call(path, *args, **kwargs):
        guard(path, kwargs.get("dir_fd"))
        return real(path, *args, **kwargs)
    return call
os.scandir, os.open, io.open = wrap(os.scandir), wrap(os.open), wrap(io.open)
if os.environ.get("OFFLOAD_TEST_NO_FAKEREDIS"):
    sys.modules["fakeredis"] = None
from offload_registry.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run(*args: str, deny: Sequence[Path] = (), **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env, "OFFLOAD_TEST_DENY": ",".join(str(p) for p in deny)}
    return subprocess.run(
        [sys.executable, "-c", DENYING_MAIN, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=full_env,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """The command exited with ``status`` and said why in one line, with no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "offload-registry: error:" in line]
    assert len(errors) == 1, done.stderr
    assert done.returncode == status, done.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServerProcess]:
    server = RedisServerProcess(ServerOptions(password=PASSWORD), binary=server_binary_or_fail())
    with server:
        yield server


def _closed_port() -> int:
    return free_port()


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("wrong password", 2, ["wrong user name or password"]),
        ("no password", 2, ["requires a password"]),
        ("database 99", 2, ["database number"]),
        ("cluster, no node reachable", 1, ["cannot reach Redis"]),
        ("cluster, not a cluster", 2, ["not a Redis Cluster node"]),
        ("cluster, wrong password", 2, ["wrong user name or password"]),
        ("sentinel, a plain server", 2, ["not a Sentinel"]),
    ],
)
def test_an_unusable_redis_url_is_one_line_and_the_same_exit_status_for_every_command(
    tmp_path: Path,
    password_server: RedisServerProcess,
    redis_server: RedisServerProcess,
    command: list[str],
    kind: str,
    status: int,
    words: list[str],
) -> None:
    secured, plain = password_server.port, redis_server.port
    url = {
        "wrong password": f"redis://:wrong-pw@127.0.0.1:{secured}/0",
        "no password": f"redis://127.0.0.1:{secured}/0",
        "database 99": f"redis://127.0.0.1:{plain}/99",
        "cluster, no node reachable": f"redis+cluster://127.0.0.1:{_closed_port()}",
        "cluster, not a cluster": f"redis+cluster://127.0.0.1:{plain}",
        "cluster, wrong password": f"redis+cluster://:wrong-pw@127.0.0.1:{secured}",
        "sentinel, a plain server": f"redis+sentinel://127.0.0.1:{plain}/mymaster",
    }[kind]
    done = run(
        "--data-root", str(tmp_path), "--redis-url", url, "--key-prefix", unique_prefix(), *command
    )
    line = assert_one_line(done, status, *words)
    assert "wrong-pw" not in done.stderr and PASSWORD not in line


@pytest.mark.parametrize("command", ALL_COMMANDS[:-1], ids=lambda c: c[0])
def test_a_data_root_that_is_a_file_exits_2(
    tmp_path: Path, redis_server: RedisServerProcess, command: list[str]
) -> None:
    root = tmp_path / "root"
    root.write_text("not a directory")
    done = run("--data-root", str(root), "--redis-url", redis_server.url, *command)
    assert_one_line(done, 2, "not a directory")


def test_inspect_of_an_unreadable_agent_directory_exits_1(tmp_path: Path) -> None:
    write_sessions(tmp_path, 3, 2, agents=1)
    done = run("--data-root", str(tmp_path), "inspect", "agent:a0:s00000", deny=[tmp_path / "a0"])
    assert_one_line(done, 1, "Permission denied")


def test_a_journal_path_that_is_a_directory_is_inspected_as_an_empty_session(
    tmp_path: Path,
) -> None:
    (tmp_path / "main" / "offload-s.jsonl").mkdir(parents=True)
    done = run("--data-root", str(tmp_path), "inspect", "--json", "agent:main:s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entry_count"] == 0
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["warm", "stats", "verify"])
@pytest.mark.parametrize("what", ["agent directory", "journal"])
def test_one_unreadable_path_is_skipped_reported_and_exits_1_without_aborting_the_scan(
    tmp_path: Path, redis_server: RedisServerProcess, command: str, what: str
) -> None:
    write_sessions(tmp_path, 6, 3, agents=3)  # a0: s0, s3; a1: s1, s4; a2: s2, s5
    prefix = unique_prefix()
    common = ["--data-root", str(tmp_path), "--redis-url", redis_server.url, "--key-prefix", prefix]
    assert run(*common, "warm").returncode == 0  # Redis holds all six, so verify sees no drift
    bad = tmp_path / "a1" if what == "agent directory" else tmp_path / "a1" / "offload-s00001.jsonl"
    done = run(*common, command, "--json", deny=[bad])
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    reported = [line for line in done.stderr.splitlines() if str(bad) in line]
    assert reported and all("Permission denied" in line for line in reported), done.stderr
    result = json.loads(done.stdout)  # the scan finished: the other sessions were all read
    if command == "warm":
        read = 4 if what == "agent directory" else 5
        assert result["sessions"] - result["failed"] == read
    elif command == "stats":
        journals = 4 if what == "agent directory" else 5
        assert (result["disk"]["journals"], result["disk"]["entries"]) == (journals, 3 * journals)
    else:
        assert result["by_kind"]["unreadable"] == 1
        assert result["drift"] == 1  # only the unreadable one; the others match Redis


def test_simulate_without_a_server_binary_exits_2_and_says_how_to_get_one() -> None:
    done = run("simulate", "--seconds", "1", OFFLOAD_REGISTRY_SERVER_BIN="/nonexistent/redis")
    assert_one_line(done, 2, "OFFLOAD_REGISTRY_SERVER_BIN")


@pytest.mark.parametrize("port", ["70000", "-3", "0"])
def test_simulate_with_a_metrics_port_out_of_range_exits_2(port: str) -> None:
    done = run("simulate", "--no-redis", "--seconds", "1", "--metrics-port", port)
    assert_one_line(done, 2, "--metrics-port")


def test_simulate_with_a_metrics_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            "simulate",
            "--no-redis",
            "--workers",
            "1",
            "--seconds",
            "1",
            "--metrics-port",
            str(port),
        )
    assert_one_line(done, 2, f"127.0.0.1:{port}", "in use")


def test_memory_url_without_fakeredis_exits_2_and_names_the_extra(tmp_path: Path) -> None:
    done = run(
        "--data-root",
        str(tmp_path),
        "--redis-url",
        "memory://",
        "inspect",
        "agent:a:b",
        OFFLOAD_TEST_NO_FAKEREDIS="1",
    )
    assert_one_line(done, 2, "offload-registry[memory]")
