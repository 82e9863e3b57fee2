"""Redis URLs: parsing and redaction.

Pure: no I/O, no redis-py. :func:`parse_redis_url` turns a URL into a :class:`RedisTarget`;
``connect`` (``_async/connection.py``, twinned because its clients are) builds the client its
scheme names.

Supported URLs (user name and password optional everywhere, percent-encoded when they hold
``@ : / ? #``; a password may also come as ``?password=``)::

    redis://[user:password@]host[:port][/db]                    port 6379, db 0
    rediss://[user:password@]host[:port][/db]                   the same over TLS
    unix://[user:password@]/path/to/redis.sock[?db=N]
    redis+cluster://[user:password@]host:port[,host:port...]    db 0 only
    redis+sentinel://[user:password@]host:port[,host:port...]/service-name[/db]
    memory://                                                   in-process, one process only

Query parameters (anything else is a :class:`ConfigurationError`, so a typo is caught at
start instead of silently ignored)::

    password, username, db                       credentials and database (every scheme)
    socket_timeout, connect_timeout              seconds, finite and > 0
    ssl_ca_certs, ssl_certfile, ssl_keyfile      TLS files (rediss:// only)
    sentinel_password, sentinel_username         the sentinels' own user (redis+sentinel://)

They fill the matching :class:`~offload_registry.config.TierOptions` fields
(:func:`apply_url_options`); a TLS file given both in the URL and in the options is refused
as ambiguous. ``TierOptions`` itself lives in ``offload_registry.config`` (the name is still
importable from here).

Credentials never leave this module in clear: :class:`RedisTarget` keeps the password out of
its ``repr`` and ``str``, and every error message quotes the URL through :func:`redact`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote

from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError

__all__ = [
    "SCHEMES",
    "URL_PARAMETERS",
    "HostPort",
    "RedisTarget",
    "TierOptions",  # re-exported: its home is offload_registry.config
    "apply_url_options",
    "parse_redis_url",
    "redact",
]

REDACTED: Final = "***"
DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
SCHEMES: Final = ("memory", "redis", "redis+cluster", "redis+sentinel", "rediss", "unix")
"""Every scheme :func:`parse_redis_url` understands."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&;#]*(?:password|passwd|secret|token)[^=&;#]*=)[^&;#]*")


class HostPort(NamedTuple):
    """One server address of a URL."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed Redis URL. ``str()`` and ``repr()`` show the redacted URL, never the password.

    ``hosts`` is empty for ``unix://`` (see ``socket_path``) and ``memory://``;
    ``service_name`` is set for ``redis+sentinel://`` only. ``query`` keeps the URL's other
    query parameters, in order, for ``connect`` to interpret (``password``, ``username``
    and ``db`` are taken out into their own fields).
    """

    scheme: str
    hosts: tuple[HostPort, ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    socket_path: str | None = None
    service_name: str | None = None
    query: tuple[tuple[str, str], ...] = ()
    redacted: str = ""
    """The URL as given, with any credentials replaced by ``***``: safe to log."""

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"RedisTarget({self.redacted!r})"


# --- redaction ----------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its user-info (``user:password@``) and any password-like query parameter
    (``password=``, ``sentinel_password=``, ``token=``, ...) replaced by ``***``.

    Errs on the side of hiding: everything up to the *last* ``@`` counts as user-info, so an
    unencoded ``@``, ``/``, ``?`` or ``#`` in a password is hidden too. A string without
    ``://`` that holds an ``@`` is redacted the same way.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        rest = f"{REDACTED}@{rest[at + 1 :]}"
    rest = _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, rest)
    return f"{scheme}{sep}{rest}"


# --- parsing ------------------------------------------------------------------------------


def _error(message: str, url: str) -> ConfigurationError:
    return ConfigurationError(f"{message}: {redact(url)!r}")


def _parse_port(text: str, url: str, default: int) -> int:
    if text == "":
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _error(f"bad port {text!r} (expected 1-65535)", url)
    return int(text)


def _parse_host(text: str, url: str, default_port: int) -> HostPort:
    if text.startswith("["):  # [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise _error("unclosed '[' in an IPv6 address", url)
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _error(f"unexpected {rest!r} after an IPv6 address", url)
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise _error("an IPv6 address must be written in brackets: [::1]:6379", url)
    if not host:
        raise _error("missing host name", url)
    return HostPort(unquote(host), _parse_port(port_text, url, default_port))


def _parse_hosts(text: str, url: str, default_port: int, *, many: bool) -> tuple[HostPort, ...]:
    parts = text.split(",")
    if len(parts) > 1 and not many:
        raise _error(
            "several hosts are only allowed with redis+cluster:// or redis+sentinel://", url
        )
    return tuple(_parse_host(part, url, default_port) for part in parts)


_TIMEOUT_PARAMS: Final = {"socket_timeout": "socket_timeout", "connect_timeout": "connect_timeout"}
_TLS_PARAMS: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_PARAMS: Final = ("sentinel_password", "sentinel_username")
URL_PARAMETERS: Final = (
    "password",
    "username",
    "db",
    *_TIMEOUT_PARAMS,
    *_TLS_PARAMS,
    *_SENTINEL_PARAMS,
)
"""Every query parameter :func:`parse_redis_url` accepts."""


def _check_param(scheme: str, key: str, value: str, url: str) -> None:
    """Refuse an unknown parameter, a bad value, or one the scheme cannot use."""
    if key in _TIMEOUT_PARAMS:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise _error(f"{key} must be a number of seconds > 0, not {value!r}", url)
    elif key in _TLS_PARAMS:
        if scheme != "rediss":
            raise _error(f"{key} is a TLS setting: it needs a rediss:// URL", url)
        if not value:
            raise _error(f"{key} is empty", url)
    elif key in _SENTINEL_PARAMS:
        if scheme != "redis+sentinel":
            raise _error(f"{key} needs a redis+sentinel:// URL", url)
    else:
        raise _error(f"unknown URL parameter {key!r} (known: {', '.join(URL_PARAMETERS)})", url)


def apply_url_options(target: RedisTarget, options: TierOptions) -> TierOptions:
    """``options`` with the URL's timeouts and TLS files filled in. A timeout in the URL
    replaces the option's; a TLS file given in both is a :class:`ConfigurationError`."""
    changes: dict[str, Any] = {}
    for key, value in target.query:
        if key in _TIMEOUT_PARAMS:
            changes[_TIMEOUT_PARAMS[key]] = float(value)
        elif key in _TLS_PARAMS:
            if getattr(options, key) not in (None, value):
                raise ConfigurationError(
                    f"{key} is given both in the URL {target.redacted!r} and as an option; "
                    "give it once"
                )
            changes[key] = value
    if not target.tls:
        for key in _TLS_PARAMS:
            if getattr(options, key) is not None:
                raise ConfigurationError(
                    f"{key} is a TLS setting but {target.redacted!r} is not a rediss:// URL"
                )
    return _replace(options, **changes) if changes else options


def _parse_db(text: str, url: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise _error(f"bad database number {text!r} (expected a non-negative integer)", url)
    return int(text)


class _Location(NamedTuple):
    hosts: tuple[HostPort, ...]
    socket_path: str | None
    service_name: str | None
    db: int | None


def _locate(scheme: str, location: str, url: str) -> _Location:
    """Where the server is, from the part of the URL between the user-info and the query."""
    authority, slash, path = location.partition("/")
    if scheme == "memory":
        if authority or path.strip("/"):
            raise _error("memory:// takes no host or path", url)
        return _Location((), None, None, None)
    if scheme == "unix":
        if authority or not slash or not path:
            raise _error("expected unix:///absolute/path/to/redis.sock", url)
        return _Location((), unquote("/" + path), None, None)
    if scheme == "redis+sentinel":
        hosts = _parse_hosts(authority, url, DEFAULT_SENTINEL_PORT, many=True)
        service, _, db_text = path.partition("/")
        if not service:
            raise _error("redis+sentinel:// needs a service name: host:port/service-name", url)
        db_text = db_text.strip("/")
        return _Location(
            hosts, None, unquote(service), _parse_db(db_text, url) if db_text else None
        )
    cluster = scheme == "redis+cluster"
    hosts = _parse_hosts(authority, url, DEFAULT_PORT, many=cluster)
    db_text = path.strip("/")
    db = _parse_db(db_text, url) if db_text else None
    if cluster and db:
        raise _error("Redis Cluster has only database 0", url)
    return _Location(hosts, None, None, db)


def _scheme_of(url: str) -> tuple[str, str]:
    """The lower-cased scheme (one of :data:`SCHEMES`) and the rest of the URL."""
    scheme, sep, rest = url.partition("://")
    supported = ", ".join(f"{s}://" for s in SCHEMES)
    if not sep or not _SCHEME.fullmatch(scheme):
        # Do not echo it: a string that is not even a URL may be a bare password.
        raise ConfigurationError(
            f"not a Redis URL (expected scheme://...); supported schemes: {supported}"
        )
    if scheme.lower() not in SCHEMES:
        raise ConfigurationError(
            f"unknown Redis URL scheme {scheme!r} in {redact(url)!r}; "
            f"supported schemes: {supported}"
        )
    return scheme.lower(), rest


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis URL of one of :data:`SCHEMES` (see the module docstring for the forms).

    Raises :class:`ConfigurationError`, whose message quotes the URL redacted, for an unknown
    scheme (naming the supported ones), a missing or malformed host, port or database
    number, several hosts where one is expected, or a sentinel URL without a service name.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a Redis URL must be a str, not {type(url).__name__}")
    scheme, rest = _scheme_of(url)
    userinfo, at, location = rest.rpartition("@")
    if not at:
        userinfo, location = "", rest
    location, _, _fragment = location.partition("#")
    location, _, query_text = location.partition("?")
    username, colon, password = userinfo.partition(":")
    user: str | None = unquote(username) or None
    secret: str | None = unquote(password) if colon else None
    query: list[tuple[str, str]] = []
    query_db: int | None = None
    for key, value in parse_qsl(query_text, keep_blank_values=True):
        if key == "password":
            secret = value
        elif key == "username":
            user = value
        elif key == "db":
            query_db = _parse_db(value, url)
        else:
            _check_param(scheme, key, value, url)
            query.append((key, value))
    where = _locate(scheme, location, url)
    db = where.db if where.db is not None else query_db
    if scheme == "redis+cluster" and db:
        raise _error("Redis Cluster has only database 0", url)
    return RedisTarget(
        scheme=scheme,
        hosts=where.hosts,
        db=db or 0,
        username=user or None,
        password=secret or None,
        tls=scheme == "rediss",
        socket_path=where.socket_path,
        service_name=where.service_name,
        query=tuple(query),
        redacted=redact(url),
    )
