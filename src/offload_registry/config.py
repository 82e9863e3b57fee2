"""The shared tier's settings: one object, :class:`TierOptions`, and the one rule by which the
registry's older keywords (``redis_url``, ``redis_client``, ``tier``, ``redis_options``,
``key_prefix``) become it (:func:`registry_tier_options`).

Pure: no I/O and no backend imported at module level (``store.urls``, which applies a URL's
query parameters to these options, imports this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from offload_registry.errors import ConfigurationError
from offload_registry.store.keyspace import DEFAULT_PREFIX, validate_prefix

__all__ = ["TierOptions", "registry_tier_options"]


@dataclass(frozen=True, slots=True)
class TierOptions:
    """Connection and key settings of the shared (Redis) tier, the URL included.

    Timeouts are in seconds and must be finite and positive; the idle TTL (refreshed at most
    once per interval by the tier) must be a positive whole number of seconds. ``url`` (one
    of ``store.urls.SCHEMES``) is optional: ``SessionRegistry(root, redis_options=options)``
    connects to it, the same as ``redis_url=``. Its ``repr`` never shows the URL's
    credentials.
    """

    connect_timeout: float = 1.0
    socket_timeout: float = 1.0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    idle_ttl_seconds: int = 7 * 24 * 3600
    key_prefix: str = DEFAULT_PREFIX
    url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "socket_timeout"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"{name} must be a finite number > 0, not {value!r}")
        ttl = self.idle_ttl_seconds
        if type(ttl) is not int or ttl <= 0:
            raise ConfigurationError(f"idle_ttl_seconds must be an int > 0, not {ttl!r}")
        validate_prefix(self.key_prefix)
        if self.url is not None and not isinstance(self.url, str):
            raise ConfigurationError(f"a Redis URL must be a str, not {type(self.url).__name__}")

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> TierOptions:
        """The settings for the Redis at ``url``, with ``settings`` (any other field) and the
        URL's query parameters applied: a timeout in the URL wins over one in ``settings``,
        and a TLS file named in both is refused (``store.urls.apply_url_options``). Raises
        :class:`ConfigurationError` for a bad URL or setting now, not at the registry's
        start."""
        # Imported here: store.urls imports this module (it re-exports TierOptions).
        from offload_registry.store.urls import apply_url_options, parse_redis_url  # noqa: PLC0415

        return apply_url_options(parse_redis_url(url), cls(url=url, **settings))

    def __repr__(self) -> str:
        from offload_registry.store.urls import redact  # noqa: PLC0415 - see from_url

        shown = [f"url={redact(self.url)!r}"] if self.url is not None else []
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        return f"TierOptions({', '.join(shown)})"


def registry_tier_options(
    *,
    redis_url: str | None,
    redis_client: object,
    tier: object,
    redis_options: TierOptions | None,
    key_prefix: str,
) -> TierOptions | None:
    """The Redis tier's settings from ``SessionRegistry``'s keywords, or ``None`` when the
    registry opens no Redis tier (it works on the journals alone, or on the ``tier`` given).

    The merge rule, the only one:

    - at most one source of a tier: a URL (``redis_url``, or ``redis_options.url``; not
      both), ``redis_client`` or ``tier``, else :class:`ConfigurationError`;
    - ``redis_options`` gives every setting (default :class:`TierOptions`), but a
      ``key_prefix`` other than the default replaces its key prefix;
    - the URL's query parameters are applied when the tier opens (``apply_url_options``:
      its timeouts win, a TLS file named twice is refused);
    - without a URL or a client, ``redis_options`` and ``key_prefix`` are not used (nor
      checked).
    """
    url = redis_url
    if redis_options is not None and redis_options.url is not None:
        if redis_url is not None:
            raise ConfigurationError("give the Redis URL once: redis_url or redis_options.url")
        url = redis_options.url
    if sum(x is not None for x in (url, redis_client, tier)) > 1:
        raise ConfigurationError("pass at most one of redis_url, redis_client and tier")
    if url is None and redis_client is None:
        return None
    options = redis_options or TierOptions(key_prefix=key_prefix)
    if key_prefix not in (DEFAULT_PREFIX, options.key_prefix):
        options = replace(options, key_prefix=key_prefix)
    return options if options.url == url else replace(options, url=url)
