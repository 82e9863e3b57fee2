"""What a Redis tier checks once, at start: no awaiting, shared by both twins.

The data root's id file, the Lua scripts' text (and whether a server refused their
``#!lua`` line), a refused permission behind a client's error, and the TLS files and
failures told apart from an outage.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import uuid
from importlib import resources
from pathlib import Path

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from offload_registry.errors import ConfigurationError
from offload_registry.fsutil import (
    DEFAULT_FILE_MODE,
    ROOT_FILE_DEPTH,
    ensure_dir,
    opened_dir,
    read_file_bytes,
)
from offload_registry.store.keyspace import STATE_FIELDS
from offload_registry.store.urls import TierOptions

DATA_ROOT_ID_FILE = ".offload-registry-id"


def data_root_id(
    data_root: Path, *, create: bool, file_mode: int = DEFAULT_FILE_MODE
) -> str | None:
    """The random id of a data root, kept in ``<root>/.offload-registry-id`` (made on first
    use by a writable registry, with ``file_mode``; ``None`` when missing and ``create`` is
    false). A link or non-regular file in its place raises ``UnsafePathError``."""
    path = data_root / DATA_ROOT_ID_FILE
    try:
        return _read_root_id(path)
    except FileNotFoundError:
        if not create:
            return None
    ensure_dir(data_root, 0, mode=file_mode)
    # Written whole under a temporary name, then linked into place (which fails if the file
    # exists): the id file never exists empty, so processes starting together on a new data
    # root all read the one id that won, never an empty or half-written one. Both names are
    # used relative to the root's descriptor, the temp one created exclusively, never
    # following a link.
    with opened_dir(data_root, 0) as dir_fd:
        temp = f"{DATA_ROOT_ID_FILE}.{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, file_mode, dir_fd=dir_fd)
        try:
            try:
                os.write(fd, (uuid.uuid4().hex + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs
                os.link(
                    temp,
                    DATA_ROOT_ID_FILE,
                    src_dir_fd=dir_fd,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                os.fsync(dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
    return _read_root_id(path)


def _read_root_id(path: Path) -> str:
    return read_file_bytes(path, below=ROOT_FILE_DEPTH).decode("ascii").strip()


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
