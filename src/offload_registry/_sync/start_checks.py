# GENERATED from src/offload_registry/_async/start_checks.py by scripts/unasync.py. Do not edit.
"""What a Redis tier checks once, at start: the awaiting half (the pure half, the data root's
id, the scripts' text and the TLS files, is ``store/startup.py``).

:func:`start` runs the checks in order and sorts what they raise: a refused permission is a
:class:`RedisPermissionError`, a wrong URL, password or data root a
:class:`ConfigurationError`, anything else an outage the tier rides through on the journals.
Owned by :class:`~offload_registry._sync.redis_tier.RedisTier`, whose ``start`` calls it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import AuthenticationError, NoPermissionError, OutOfMemoryError, ResponseError

from offload_registry._sync._primitives import Thunk, run_blocking
from offload_registry.changes import APPEND, SessionChange, TierSnapshot
from offload_registry.errors import ConfigurationError, RedisPermissionError
from offload_registry.session_state import SessionState
from offload_registry.store import script_args
from offload_registry.store.diagnose import (
    FAILURES,
    OUTAGE,
    configuration_problem,
    permission_error,
)
from offload_registry.store.keyspace import Keyspace, RedisSessionKeys
from offload_registry.store.script_args import WriteStamp
from offload_registry.store.startup import (
    FLAGS_PROBE,
    denial_in,
    plain_text_reply,
    shebang_refused,
    tls_failure,
)

if TYPE_CHECKING:
    from offload_registry._sync.redis_tier import RedisTier

log = logging.getLogger("offload_registry.redis")

_policy_warned = False


def start(tier: RedisTier) -> None:
    """Check the server once: permissions, epoch, data root, eviction policy (see
    :meth:`RedisTier.start` for what is raised)."""
    try:
        tier.client.ping()
        tier._health.refresh_epoch()
        check_deployment(tier.client, tier.keyspace, tier._root_id)
        warn_about_eviction_policy(tier.client, tier.description)
        load_scripts(tier)
        probe_permissions(tier)
    except OutOfMemoryError as exc:
        # Over maxmemory (the marker or deployment key cannot be created, the probe
        # cannot write): an outage like any other, ridden through on the journals. The
        # permission probe is skipped, as when the server is down at start.
        tier._failed(exc, "start", None)
    except (NoPermissionError, AuthenticationError) as exc:
        raise permission_error(tier.description, exc) from exc
    except ResponseError as exc:
        if "NOPERM" in str(exc):
            raise permission_error(tier.description, exc) from exc
        problem = configuration_problem(exc)
        if problem is None:
            raise
        raise ConfigurationError(f"cannot use Redis at {tier.description}: {problem}") from exc
    except ConfigurationError:
        raise
    except FAILURES as exc:  # down, read-only replica, failing over: later
        denied = denial_in(exc)
        if denied is not None:  # a cluster client wraps what it could not run
            raise permission_error(tier.description, denied) from exc
        # A wrong password, database or server mode never heals: refuse it now rather
        # than answer from the journals for ever.
        problem = configuration_problem(exc)
        if problem is not None:
            raise ConfigurationError(f"cannot use Redis at {tier.description}: {problem}") from exc
        if tier.tls_address is not None and isinstance(exc, OUTAGE):
            timeout = tier._options.connect_timeout
            check_tls_handshake(exc, tier.description, tier.tls_address, timeout)
        tier.breaker.record_failure(exc, "start")


def check_tls_handshake(
    exc: BaseException, description: str, address: tuple[str, int], timeout: float
) -> None:
    """Raise :class:`ConfigurationError` when a TLS start failed because of TLS (a bad
    certificate, or a server that speaks plain text, which makes the handshake hang
    until the timeout): retrying cannot fix either, so it must not read as an outage."""
    reason = tls_failure(exc)
    if reason is not None:
        raise ConfigurationError(f"TLS handshake with {description} failed: {reason}") from exc
    host, port = address
    reply = run_blocking(plain_text_reply, host, port, timeout)
    if reply[:1] in (b"+", b"-"):  # +PONG, -NOAUTH, -ERR: a RESP server without TLS
        raise ConfigurationError(
            f"{description} is a rediss:// URL but the server at {host}:{port} "
            "speaks plain text (no TLS): use redis://, or enable TLS on the server"
        ) from exc


def load_scripts(tier: RedisTier) -> None:
    """Load every script; a server that cannot run a shebang (older than Redis 7, or
    fakeredis, which compiles a script only when it runs it) gets them without it."""
    try:
        if tier._flagged_scripts:  # a read-only flagged script runs even over maxmemory
            probe = tier.client.register_script(FLAGS_PROBE)
            probe(keys=[tier.keyspace.marker()])
    except ResponseError as exc:
        if not shebang_refused(exc):
            raise
        log.warning(
            "this Redis does not support script flags (Redis 7+); scripts run unflagged",
            extra={"redis": tier.description},
        )
        tier._flagged_scripts = False
        tier._register_scripts(tier.client)
    for script in (tier._publish, tier._delta, tier._unlock, tier._lease, tier._claim):
        tier.client.script_load(script.script)


def probe_permissions(tier: RedisTier) -> None:
    """Exercise every command the registry uses, once, on a probe session: ACLs check
    the commands a script runs only when it runs them, and a missing permission must
    fail here, loudly, not later as a silent fallback to the journals."""
    probe = tier.keyspace.session("probe", "start")
    stamp = WriteStamp(tier.epoch, 60_000, "", "", 0, tier._sharded)
    publish = script_args.publish_call(
        probe, stamp, TierSnapshot(SessionState(), set(), None), "always"
    )
    delta = script_args.delta_call(probe, stamp, SessionChange(APPEND, [], None, None))
    steps: list[tuple[str, Thunk[Any]]] = [
        (
            "publish.lua (evalsha, get, type, del, hget, hmget, hset, hincrby, pexpire)",
            lambda: tier._publish(keys=publish[0], args=publish[1]),
        ),
        (
            "delta.lua (evalsha, get, hmget, llen, rpush, hset, hincrby, pexpire)",
            lambda: tier._delta(keys=delta[0], args=delta[1]),
        ),
        ("lease.lua (evalsha, get, set, pttl, pexpire, del)", lambda: _probe_lease(tier, probe)),
        ("claim.lua (evalsha, hexists, hset, pexpire)", lambda: _probe_claims(tier, probe)),
        ("a cold read (multi, exec, hmget, hget, lrange, pttl)", lambda: tier.fetch(probe)),
        (
            f"invalidations (publish to the channel {tier._channel_of(probe)})",
            lambda: tier._announce(tier.client, probe, f"{probe.tag} {tier.origin} - 0"),
        ),
        (
            "unlock.lua (evalsha, get, del)",
            lambda: tier._unlock(*script_args.unlock_call(probe, "x")),
        ),
    ]
    try:
        for name, step in steps:
            try:
                step()
            except OutOfMemoryError:
                raise  # not a permission: the server is full (start treats it as an outage)
            except ResponseError as exc:
                raise RedisPermissionError(
                    f"the Redis user of {tier.description} cannot run {name}: {exc}"
                ) from exc
    finally:
        tier.client.delete(*probe.all)


def _probe_lease(tier: RedisTier, probe: RedisSessionKeys) -> None:
    for op, token in (("acquire", 0), ("renew", 1), ("release", 1)):
        tier._lease(
            *script_args.lease_call(probe, op, "probe", token, 60_000, fence_ttl_ms=60_000)
        )


def _probe_claims(tier: RedisTier, probe: RedisSessionKeys) -> None:
    tier._claim(*script_args.claim_call(probe, "filter", 60_000, [["x"]]))
    tier._claim(*script_args.claim_call(probe, "commit", 60_000, [["x"]]))


def check_deployment(client: Any, keyspace: Keyspace, root_id: str | None) -> None:
    """Raise :class:`ConfigurationError` when these keys belong to another data root (its id
    recorded with ``SET NX`` by the first worker of a deployment)."""
    if root_id is None:
        return
    key = keyspace.deployment_key()
    owner = client.get(key)
    if owner is None:  # read first: a server over maxmemory still answers the check
        client.set(key, root_id, nx=True)
        owner = client.get(key)
    owner_id = owner.decode() if isinstance(owner, bytes) else owner
    if owner_id != root_id:
        pattern = keyspace.pattern()
        # The usual cause: the data root was deleted and made again at the same path (a
        # new id file), so the Redis copies describe journals that are gone. Say how out.
        raise ConfigurationError(
            f"Redis keys {pattern!r} belong to another data root (id {owner_id}, this "
            f"one is {root_id}). If this data root was deleted or recreated at the "
            "same path, those copies are stale: delete them (as an admin user: "
            f"redis-cli --scan --pattern '{pattern}' | xargs redis-cli unlink) and run "
            "`offload-registry warm`; if two data roots share this path and prefix, give "
            "each its own --key-prefix"
        )


def warn_about_eviction_policy(client: Any, description: str) -> None:
    """Warn (once per process) when the server is limited and will refuse writes at its limit
    rather than evict: the registry then runs on its journals."""
    global _policy_warned  # noqa: PLW0603 - once per process, not per registry
    try:
        config = client.config_get("maxmemory*")
    except ResponseError:  # CONFIG is often denied on managed servers: nothing to say
        return
    policy = str(config.get("maxmemory-policy", ""))
    limited = str(config.get("maxmemory", "0")) not in ("0", "")
    if limited and policy == "noeviction" and not _policy_warned:
        _policy_warned = True
        log.warning(
            "Redis maxmemory-policy is noeviction: at maxmemory, writes to Redis fail and "
            "the registry falls back to the journals; allkeys-lru is recommended (an "
            "evicted session only becomes cold, never wrong)",
            extra={"redis": description},
        )
