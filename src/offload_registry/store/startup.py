"""What a Redis tier checks once, at start: no awaiting, shared by both twins.

The Lua scripts' text (and whether a server refused their ``#!lua`` line), a refused
permission behind a client's error, and the TLS files and failures told apart from an outage.
The data root's id file is :mod:`offload_registry.disk.layout`'s.
"""

from __future__ import annotations

import os
import socket
import ssl
from importlib import resources

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError
from offload_registry.store.keyspace import STATE_FIELDS


def script_text(name: str, *, flagged: bool = True) -> str:
    """The text of ``lua/<name>``, its ``-- #include`` lines expanded.

    Each script begins with a Redis 7 shebang (``#!lua``, without ``allow-oom`` except for
    the unlock script, which only deletes): Redis then refuses the whole script while it is
    over ``maxmemory``, before it runs, instead of checking only at its first write and
    letting it write on past the limit. ``flagged=False`` drops that line, for servers
    without shebang support (fakeredis, Redis 6), where the scripts are written so that
    their first write is one Redis checks."""
    text = _with_includes(_lua_file(name))
    if flagged or not text.startswith("#!"):
        return text
    return text.split("\n", 1)[1]


INCLUDE = "-- #include "
"""A script line ``-- #include <file>`` stands for that file of ``lua/`` (the token helpers
three scripts share: EVALSHA runs one self-contained text, so the sharing happens here)."""
STATE_FIELDS_LINE = "-- #state-fields"
"""A script line that stands for one Lua local per ``state`` hash field, named and valued
as in ``store.keyspace.STATE_FIELDS`` (``local EPOCH_FIELD = 'epoch'``)."""


def _lua_file(name: str) -> str:
    return resources.files("offload_registry").joinpath("lua", name).read_text("utf-8")


def _expanded(line: str) -> str:
    if line.startswith(INCLUDE):
        return _lua_file(line[len(INCLUDE) :].strip()).rstrip("\n")
    if line.startswith(STATE_FIELDS_LINE):
        return "\n".join(f"local {name} = '{value}'" for name, value in STATE_FIELDS.items())
    return line


def _with_includes(text: str) -> str:
    return "\n".join(_expanded(line) for line in text.split("\n"))


FLAGS_PROBE = "#!lua flags=no-writes\nreturn 1\n"


def shebang_refused(exc: BaseException) -> bool:
    """True when a server could not compile a script because of its ``#!lua`` line."""
    text = str(exc)
    return isinstance(exc, ResponseError) and ("near '#'" in text or "shebang" in text.lower())


def denial_in(exc: BaseException) -> Exception | None:
    """A refused permission or password behind ``exc``, if any. redis-py's cluster client
    turns a ``NOPERM`` on ``CLUSTER SLOTS`` (or ``COMMAND``) into "Cluster mode is not enabled
    on this node", and a wrong password into "Redis Cluster cannot be connected", keeping
    the server's error only as the cause or context of its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NoPermissionError | AuthenticationError):
            return current
        if isinstance(current, ResponseError) and "NOPERM" in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def check_tls_files(options: TierOptions) -> None:
    """A TLS file that is missing or unreadable is a configuration error at start, not a
    handshake that fails later and reads as an outage."""
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = getattr(options, name)
        if path is not None and not os.access(path, os.R_OK):
            what = "does not exist" if not os.path.exists(path) else "cannot be read"
            raise ConfigurationError(f"the TLS file {name}={path!r} {what}")
    if (options.ssl_certfile is None) != (options.ssl_keyfile is None):
        raise ConfigurationError("a TLS client certificate needs both ssl_certfile and ssl_keyfile")


def plain_text_reply(host: str, port: int, timeout: float) -> bytes:
    """What a server says to a plain-text ``PING`` (``b""`` when nothing): tells a server
    that does not speak TLS apart from one that is down (blocking; run it in a thread)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64)
    except OSError:
        return b""


def tls_failure(exc: BaseException) -> str | None:
    """The TLS reason in a connection error, if it is one (certificate, protocol)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        text = str(seen)
        if "SSL" in text or "CERTIFICATE" in text.upper():
            return text
        seen = seen.__cause__ or seen.__context__
    return None
