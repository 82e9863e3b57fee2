"""Open a Redis tier: from a URL (every scheme ``store.urls`` parses) or from a redis-py
client the application already owns.

The data root's id is read (or made) first, since it names the deployment's keys; a URL is
parsed, its TLS files checked and its client built (``connection.py``); a setting that can
never work is a :class:`ConfigurationError` now, not an outage later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from offload_registry._async.connection import connect
from offload_registry._async.redis_tier import RedisTier
from offload_registry.config import TierOptions
from offload_registry.disk.fsutil import (
    DEFAULT_FILE_MODE,
)
from offload_registry.disk.layout import data_root_id
from offload_registry.errors import ConfigurationError, RedisUnavailableError
from offload_registry.store.diagnose import configuration_problem
from offload_registry.store.keyspace import Keyspace
from offload_registry.store.startup import check_tls_files
from offload_registry.store.urls import apply_url_options, parse_redis_url, redact


def open_redis_tier(
    data_root: Path,
    *,
    url: str | None,
    client: Any,
    options: TierOptions,
    read_only: bool,
    file_mode: int = DEFAULT_FILE_MODE,
    clock: Callable[[], float] = time.monotonic,
) -> RedisTier:
    """A tier from a URL (``redis://``, ``rediss://``, ``unix://``, ``memory://``) or from a
    redis-py client the application already owns (then never closed by the registry);
    ``clock`` (monotonic seconds) is the tier's, see :class:`RedisTier`."""
    # The id first: it names the deployment, whatever path this host mounts the root at.
    root_id = data_root_id(data_root, create=not read_only, file_mode=file_mode)
    keyspace = Keyspace.for_data_root(options.key_prefix, data_root, root_id=root_id)
    if client is not None:
        pool = getattr(client, "connection_pool", None)
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ConfigurationError(
                "the registry needs a Redis client that returns bytes (decode_responses=False)"
            )
        return RedisTier(
            client,
            keyspace,
            options,
            description="client",
            root_id=root_id,
            owns_client=False,
            clock=clock,
        )
    if url is None:
        raise ConfigurationError("a Redis tier needs a URL or a client")
    target = parse_redis_url(url)
    options = apply_url_options(target, options)
    check_tls_files(options)
    try:
        client = connect(target, options)
    except ConfigurationError:
        raise
    except (RedisError, RedisClusterException, OSError) as exc:
        # Only a synchronous cluster client connects here (it must learn the slot map from a
        # node before it exists), so there is no client to fall back from: name the cause.
        problem = configuration_problem(exc)
        if problem is not None:
            raise ConfigurationError(f"cannot use Redis at {redact(url)}: {problem}") from exc
        raise RedisUnavailableError(f"cannot reach Redis at {redact(url)}: {exc}") from exc
    tier = RedisTier(
        client,
        keyspace,
        options,
        description=redact(url),
        root_id=root_id,
        reconnect=lambda: connect(target, options),
        clock=clock,
    )
    if target.tls and target.hosts:
        tier.tls_address = target.hosts[0]
    return tier
