"""Open the deployment's Redis for an operator tool: like a worker's tier, but a Redis that
cannot be reached is an error here (a worker would fall back to the journals)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

from redis.exceptions import RedisClusterException, RedisError

from offload_registry._async.open_redis import open_redis_tier
from offload_registry._async.redis_tier import RedisTier
from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError, RedisUnavailableError
from offload_registry.store.diagnose import configuration_problem
from offload_registry.store.urls import parse_redis_url

__all__ = ["NO_TLS", "RedisUnavailableError", "TierTlsFiles", "check_url", "open_tier"]


class TierTlsFiles(TypedDict):
    """The TLS files of :class:`TierOptions`, as an operator command was given them."""

    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None


NO_TLS: TierTlsFiles = {"ssl_ca_certs": None, "ssl_certfile": None, "ssl_keyfile": None}


def check_url(url: str | None, command: str) -> str:
    """The Redis URL a tool needs, or :class:`ConfigurationError` naming how to give one."""
    if not url:
        raise ConfigurationError(
            f"{command} needs a Redis: pass --redis-url or set OFFLOAD_REGISTRY_REDIS_URL"
        )
    if parse_redis_url(url).scheme == "memory":
        raise ConfigurationError(f"{command} needs a shared Redis; memory:// lives in one process")
    return url


@contextlib.asynccontextmanager
async def open_tier(
    data_root: Path,
    url: str,
    *,
    key_prefix: str,
    read_only: bool,
    tls: TierTlsFiles | None = None,
) -> AsyncIterator[RedisTier]:
    """A started tier on the data root's keyspace (its deployment id checked as a worker's
    is); raises :class:`RedisUnavailableError` when Redis does not answer. ``tls``: the
    :class:`TierOptions` TLS files (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``)."""
    tier = open_redis_tier(
        data_root,
        url=url,
        client=None,
        options=TierOptions(key_prefix=key_prefix, **tls)
        if tls
        else TierOptions(key_prefix=key_prefix),
        read_only=read_only,
    )
    try:
        try:  # first, so an unreachable server is one error, not a breaker warning too
            await tier.client.ping()
        except (RedisError, RedisClusterException, OSError) as exc:
            # A wrong password, database or server mode is the operator's to fix (exit 2);
            # anything else is an outage (exit 1).
            problem = configuration_problem(exc)
            if problem is not None:
                raise ConfigurationError(
                    f"cannot use Redis at {tier.description}: {problem}"
                ) from exc
            raise RedisUnavailableError(f"cannot reach Redis at {tier.description}: {exc}") from exc
        await tier.start()
        yield tier
    finally:
        await tier.close()
