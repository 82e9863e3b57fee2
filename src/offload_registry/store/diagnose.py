"""What a failed first Redis call means: a setting to fix (the URL, the password, the server's
mode), or an outage that may pass.

redis-py reports both kinds with the same few exception types and the server's own words
(``DB index is out of range``, ``unknown command 'SENTINEL'``), and a cluster client wraps the
node's error in a ``RedisClusterException`` that is not even a ``RedisError``. Retrying cannot
fix a configuration problem, so the registry refuses it at start (:class:`ConfigurationError`,
exit status 2 from the CLI) instead of falling back to the journals as it does for an outage.
"""

from __future__ import annotations

from collections.abc import Iterator

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offload_registry.errors import RedisPermissionError

__all__ = ["FAILURES", "OUTAGE", "configuration_problem", "permission_error"]

# RedisClusterException is not a RedisError: redis-py raises it when no cluster node answers.
# OutOfMemoryError (a server over its maxmemory refusing writes) is an outage like any other.
OUTAGE = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    RedisClusterException,
    OSError,
)
"""What a call raises when Redis did not answer (or could not take a write): an outage."""
FAILURES = (RedisError, RedisClusterException, OSError)
"""Everything a Redis call may raise: the tier absorbs these (its breaker counts them)."""

# (words in the server's or redis-py's message, what the operator should hear), first match wins.
_PROBLEMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("WRONGPASS", "invalid username-password pair", "invalid password"),
        "wrong user name or password",
    ),
    (
        ("NOAUTH", "Authentication required", "must be called with the client already auth"),
        "the server requires a password and the URL gives none",
    ),
    (
        ("without any password configured", "AUTH <password> called without"),
        "the URL gives a password but the server has none configured",
    ),
    (("DB index is out of range",), "the URL's database number does not exist on the server"),
    (
        ("Cluster mode is not enabled", "cluster support disabled"),
        "the server is not a Redis Cluster node (use redis:// for a single server)",
    ),
    (
        ("unknown command 'SENTINEL'", "unknown command `SENTINEL`"),
        "the server is not a Sentinel (use redis:// for a plain server)",
    ),
    (("NOPERM",), "the Redis user lacks a permission the registry needs"),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def configuration_problem(exc: BaseException) -> str | None:
    """One line saying which setting is wrong when ``exc`` (or what it wraps) shows that the
    URL or the server's set-up cannot work, however often it is retried; ``None`` for anything
    else (a refused connection, a timeout, a failover in progress). The server's own words
    follow in parentheses."""
    for error in _chain(exc):
        text = str(error)
        for words, meaning in _PROBLEMS:
            if any(w.lower() in text.lower() for w in words):
                return f"{meaning} (server said: {text.strip()})"
        if isinstance(error, AuthenticationError):
            return f"wrong user name or password (server said: {text.strip()})"
        if isinstance(error, NoPermissionError):
            return f"the Redis user lacks a permission the registry needs ({text.strip()})"
    return None


def permission_error(description: str, exc: Exception) -> RedisPermissionError:
    """The :class:`RedisPermissionError` for a refused command or password at start."""
    problem = configuration_problem(exc)
    if problem is not None and "permission" not in problem:  # a password problem
        return RedisPermissionError(f"cannot use Redis at {description}: {problem}")
    return RedisPermissionError(
        f"the Redis user of {description} lacks a permission the registry needs: {exc}"
    )
