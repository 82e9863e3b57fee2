"""``memory://``: one in-process store per URL, shared by every registry of the process
(asyncio and blocking alike), for single-process use and tests."""

from __future__ import annotations

from typing import Any

from offload_registry.errors import ConfigurationError

_servers: dict[str, Any] = {}


def memory_server(url: str) -> Any:
    """The fakeredis server behind ``url`` (created on first use)."""
    try:
        import fakeredis  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigurationError(
            "memory:// needs fakeredis: pip install 'offload-registry[memory]'"
        ) from exc
    return _servers.setdefault(url, fakeredis.FakeServer())
