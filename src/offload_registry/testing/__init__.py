"""Harnesses for tests: real Redis-compatible servers (:mod:`.server`; :mod:`.binary` finds their
binary and a free port) and the multi-process load generator and invariant checker behind
``offload-registry simulate`` (:mod:`.simulate`).

Public, so an application's own tests can start a real server as this project's tests do::

    from offload_registry.testing import RedisServerProcess

    with RedisServerProcess() as server:
        async with SessionRegistry(data_root, redis_url=server.url) as registry:
            ...
"""

from offload_registry.testing.binary import (
    ENV_SERVER_BIN,
    bundled_server_binary,
    find_server_binary,
    free_port,
)
from offload_registry.testing.server import RedisServerProcess, ServerOptions, TlsFiles

__all__ = [
    "ENV_SERVER_BIN",
    "RedisServerProcess",
    "ServerOptions",
    "TlsFiles",
    "bundled_server_binary",
    "find_server_binary",
    "free_port",
]
