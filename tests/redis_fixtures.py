"""Pytest fixtures that run real Redis-compatible servers (a plain module: wire it in conftest).

* ``redis_server`` (session scope): ONE server shared by every test of the run. Tests using it
  must namespace their keys with a unique prefix (e.g. ``f"t:{uuid.uuid4().hex}:"``), must not
  FLUSHALL/FLUSHDB, and must never kill, pause, restart or reconfigure it - use
  ``private_redis_server`` for that.
* ``private_redis_server`` (function scope): a server of the test's own, which it may kill,
  pause, resume and restart freely; it is stopped and its data dir removed afterwards.

Nothing is skipped silently: when no server binary exists the fixtures FAIL with the
``ServerBinaryNotFound`` message, unless ``OFFLOAD_REGISTRY_ALLOW_NO_SERVER=1`` is set, in which
case they skip with that message as the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload_registry.testing.server import (
    RedisServerProcess,
    ServerBinaryNotFound,
    find_server_binary,
)

ALLOW_NO_SERVER_ENV = "OFFLOAD_REGISTRY_ALLOW_NO_SERVER"


def server_binary_or_fail() -> Path:
    """The server binary, or fail (skip only when ``OFFLOAD_REGISTRY_ALLOW_NO_SERVER=1``)."""
    try:
        return find_server_binary()
    except ServerBinaryNotFound as exc:
        if os.environ.get(ALLOW_NO_SERVER_ENV) == "1":
            pytest.skip(f"{exc} ({ALLOW_NO_SERVER_ENV}=1)")
        pytest.fail(f"{exc}\n(set {ALLOW_NO_SERVER_ENV}=1 to skip instead)", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServerProcess]:
    """One shared server for the whole run: use unique key prefixes; never kill/pause it."""
    server = RedisServerProcess(binary=server_binary_or_fail())
    with server:
        yield server
        if not server.is_running():
            pytest.fail(
                "the shared redis_server died during the run (a test killed it?): "
                "tests that kill/pause/restart must use private_redis_server",
                pytrace=False,
            )


@pytest.fixture
def private_redis_server() -> Iterator[RedisServerProcess]:
    """A server owned by one test, which may kill, pause and restart it."""
    server = RedisServerProcess(binary=server_binary_or_fail())
    with server:
        yield server
