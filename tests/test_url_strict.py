"""Redis URLs as operators write them: an unknown parameter, a bad value, a missing TLS file
or a rediss:// URL to a plain-text server is a configuration error at start (exit 2), never
a silent fallback to the journals; the TLS files may also come from CLI options or the
environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError
from offload_registry.store.urls import apply_url_options, parse_redis_url
from offload_registry.sync import SessionRegistry
from offload_registry.testing.server import RedisServerProcess
from ops_helpers import run_cli
from redis_fixtures import server_binary_or_fail
from tls_certs import make_tls_files, started_tls_server


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?protocl=3", "unknown URL parameter 'protocl'"),
        ("redis://h/0?socket_timeout=abc", "socket_timeout must be a number of seconds > 0"),
        ("redis://h/0?connect_timeout=0", "connect_timeout must be a number of seconds > 0"),
        ("redis://h/0?socket_timeout=inf", "socket_timeout must be a number of seconds > 0"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "it needs a rediss:// URL"),
        ("rediss://h/0?ssl_ca_certs=", "ssl_ca_certs is empty"),
        ("redis://h/0?sentinel_password=x", "needs a redis\\+sentinel:// URL"),
    ],
)
def test_an_unknown_parameter_or_a_bad_value_is_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_redis_url(url)


def test_url_parameters_fill_the_options_and_a_tls_file_given_twice_is_refused() -> None:
    target = parse_redis_url("rediss://h/0?socket_timeout=2.5&ssl_ca_certs=/etc/ca.pem")
    options = apply_url_options(target, TierOptions())
    assert options.socket_timeout == 2.5 and options.ssl_ca_certs == "/etc/ca.pem"
    with pytest.raises(ConfigurationError, match="given both in the URL"):
        apply_url_options(target, TierOptions(ssl_ca_certs="/other.pem"))
    with pytest.raises(ConfigurationError, match="not a rediss:// URL"):
        apply_url_options(parse_redis_url("redis://h/0"), TierOptions(ssl_ca_certs="/ca.pem"))


@pytest.mark.parametrize("command", ["inspect", "stats"])
def test_the_cli_refuses_a_bad_url_parameter_with_exit_2(command: str, tmp_path: Path) -> None:
    args = [command, "agent:main:s1"] if command == "inspect" else [command]
    url = "redis://127.0.0.1:1/0?socket_timeout=abc"
    done = run_cli("--data-root", str(tmp_path), "--redis-url", url, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert "socket_timeout must be" in done.stderr and done.stderr.count("\n") == 1


def test_a_missing_ca_file_is_refused_from_the_url_the_option_or_the_environment(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "nope.pem")
    base = ["--data-root", str(tmp_path)]
    runs = [
        run_cli(*base, "--redis-url", f"rediss://127.0.0.1:1/0?ssl_ca_certs={missing}", "stats"),
        run_cli(*base, "--redis-url", "rediss://127.0.0.1:1/0", "--tls-ca-file", missing, "stats"),
        run_cli(*base, "stats", "--redis-url", "rediss://127.0.0.1:1/0", "--tls-ca-file", missing),
    ]
    env = {**os.environ, "OFFLOAD_REGISTRY_TLS_CA_FILE": missing}
    runs.append(
        subprocess.run(
            [
                *(sys.executable, "-m", "offload_registry.cli.main", *base),
                *("--redis-url", "rediss://127.0.0.1:1/0", "stats"),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    )
    for done in runs:
        assert done.returncode == 2, done.stderr
        assert f"ssl_ca_certs={missing!r} does not exist" in done.stderr


def test_rediss_to_a_plain_text_server_is_a_configuration_error_at_start(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    url = f"rediss://127.0.0.1:{redis_server.port}/0"
    started = time.monotonic()
    with (
        pytest.raises(ConfigurationError, match="speaks plain text"),
        SessionRegistry(tmp_path, redis_url=url) as reg,
    ):
        reg.resolve("agent:main:s1")
    assert time.monotonic() - started < 30
    done = run_cli("--data-root", str(tmp_path), "--redis-url", url, "inspect", "agent:main:s1")
    assert done.returncode == 2 and "speaks plain text" in done.stderr and done.stdout == ""


def test_a_tls_server_with_the_ca_from_the_cli_option_works_and_a_wrong_ca_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "other").mkdir()
    tls = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other")  # another CA: verification must fail
    server = started_tls_server(tls, server_binary_or_fail())
    try:
        root = tmp_path / "root"
        (root / "main").mkdir(parents=True)
        (root / "main" / "offload-s1.jsonl").write_text('{"tool_call_id":"c1"}\n')
        base = ["--data-root", str(root), "--redis-url", server.url]
        done = run_cli(*base, "--tls-ca-file", str(tls.ca), "warm")
        assert done.returncode == 0, done.stderr
        done = run_cli(*base, "--tls-ca-file", str(tls.ca), "inspect", "--json", "agent:main:s1")
        assert done.returncode == 0 and '"source": "redis"' in done.stdout, done.stderr
        done = run_cli(*base, "--tls-ca-file", str(other.ca), "inspect", "agent:main:s1")
        assert done.returncode == 2 and "TLS handshake" in done.stderr, done.stderr
        # the option reaches simulate's worker processes and its final check too
        sim = ["simulate", "--workers", "1", "--sessions", "1", "--seconds", "1", "--json"]
        done = run_cli(*base, "--tls-ca-file", str(tls.ca), *sim)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["redis_errors"] == 0 and report["redis_sessions_compared"] >= 1
    finally:
        server.close()
