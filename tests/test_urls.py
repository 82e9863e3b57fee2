"""Redis URLs: every supported scheme, and redaction everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload_registry.config import TierOptions
from offload_registry.errors import ConfigurationError
from offload_registry.store.urls import (
    SCHEMES,
    HostPort,
    parse_redis_url,
    redact,
)

SECRET = "s3cr3t-Pa55"


# --- each scheme --------------------------------------------------------------------------


def test_redis_url_with_defaults() -> None:
    target = parse_redis_url("redis://localhost")
    assert (target.scheme, target.hosts, target.db, target.tls) == (
        "redis",
        (HostPort("localhost", 6379),),
        0,
        False,
    )
    assert (target.username, target.password) == (None, None)


def test_redis_url_with_credentials_port_and_db() -> None:
    target = parse_redis_url(f"redis://worker:{SECRET}@10.0.0.5:6380/3")
    assert target.hosts == (HostPort("10.0.0.5", 6380),)
    assert (target.username, target.password, target.db) == ("worker", SECRET, 3)


def test_password_only_user_info() -> None:
    target = parse_redis_url(f"redis://:{SECRET}@h")
    assert (target.username, target.password) == (None, SECRET)


def test_percent_encoded_credentials_are_decoded() -> None:
    target = parse_redis_url("redis://us%40er:p%3Aw%2Fd%40x@h")
    assert (target.username, target.password) == ("us@er", "p:w/d@x")


def test_unencoded_at_sign_in_password_splits_at_the_last_one() -> None:
    assert parse_redis_url("redis://u:p@ss@h:1").password == "p@ss"


def test_password_from_the_query() -> None:
    target = parse_redis_url(f"redis://h/0?password={SECRET}&socket_timeout=3")
    assert target.password == SECRET
    assert target.query == (("socket_timeout", "3"),)


def test_rediss_url_means_tls() -> None:
    target = parse_redis_url("rediss://cache.example.com:6390/1")
    assert (target.scheme, target.tls, target.db) == ("rediss", True, 1)
    assert target.hosts == (HostPort("cache.example.com", 6390),)


def test_ipv6_host_in_brackets() -> None:
    assert parse_redis_url("redis://[::1]:7000").hosts == (HostPort("::1", 7000),)
    assert parse_redis_url("redis://[::1]").hosts == (HostPort("::1", 6379),)


def test_unix_socket_url() -> None:
    target = parse_redis_url(f"unix://u:{SECRET}@/run/redis/redis.sock?db=2")
    assert (target.socket_path, target.db, target.hosts) == ("/run/redis/redis.sock", 2, ())
    assert (target.username, target.password) == ("u", SECRET)


def test_cluster_url_with_several_seed_hosts() -> None:
    target = parse_redis_url("redis+cluster://a:7000,b:7001,[::1]:7002")
    assert target.scheme == "redis+cluster"
    assert target.hosts == (HostPort("a", 7000), HostPort("b", 7001), HostPort("::1", 7002))


def test_sentinel_url_with_service_name_and_db() -> None:
    target = parse_redis_url("redis+sentinel://s1:26379,s2/mymaster/4")
    assert target.hosts == (HostPort("s1", 26379), HostPort("s2", 26379))
    assert (target.service_name, target.db) == ("mymaster", 4)


def test_memory_url() -> None:
    target = parse_redis_url("memory://")
    assert (target.scheme, target.hosts, target.socket_path) == ("memory", (), None)


def test_scheme_is_case_insensitive() -> None:
    assert parse_redis_url("REDIS://h").scheme == "redis"


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:port",
        "redis://h/db",
        "redis://a:1,b:2",
        "redis://::1:6379",
        "redis://[::1",
        "redis://[::1]x",
        "rediss://h1,h2",
        "unix://host/path.sock",
        "unix://",
        "redis+cluster://a:1/2",
        "redis+cluster://a:1?db=2",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/",
        "memory://somewhere",
        "memory:///x",
    ],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_redis_url(url)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_redis_url("http://localhost:6379")
    message = str(caught.value)
    assert "'http'" in message
    assert all(f"{scheme}://" in message for scheme in SCHEMES)


def test_a_string_that_is_not_a_url_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_redis_url(SECRET)
    assert SECRET not in str(caught.value)
    assert "redis://" in str(caught.value)


def test_non_str_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        parse_redis_url(b"redis://h")  # type: ignore[arg-type]


# --- redaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://user:{SECRET}@h:1/0", "redis://***@h:1/0"),
        (f"redis://:{SECRET}@h", "redis://***@h"),
        ("redis://user@h", "redis://***@h"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        (f"redis://u:p/{SECRET}@h", "redis://***@h"),
        (f"redis://h/0?password={SECRET}&x=1", "redis://h/0?password=***&x=1"),
        (
            f"redis+sentinel://s/m?sentinel_password={SECRET}",
            "redis+sentinel://s/m?sentinel_password=***",
        ),
        (f"unix://u:{SECRET}@/run/r.sock", "unix://***@/run/r.sock"),
        (f"user:{SECRET}@host", "***@host"),
        ("memory://", "memory://"),
    ],
)
def test_redact_hides_user_info_and_password_parameters(url: str, expected: str) -> None:
    assert redact(url) == expected


@given(password=st.text(min_size=4).filter(lambda p: "@" not in p and p.strip()))
def test_redact_never_shows_a_password(password: str) -> None:
    assert redact(f"redis://user:{password}@host:6379/0") == "redis://***@host:6379/0"


def test_target_repr_and_str_hide_the_password() -> None:
    target = parse_redis_url(f"redis://user:{SECRET}@h:1/0?password={SECRET}")
    assert SECRET not in repr(target)
    assert SECRET not in str(target)
    assert str(target) == target.redacted == "redis://***@h:1/0?password=***"


def test_target_repr_in_containers_hides_the_password() -> None:
    target = parse_redis_url(f"rediss://:{SECRET}@h")
    assert SECRET not in repr([target, {"t": target}])
    assert SECRET not in f"{target!r} {target}"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}@h:99999",
        f"redis://u:{SECRET}@a,b",
        f"redis+cluster://u:{SECRET}@a:1/5",
        f"redis+sentinel://u:{SECRET}@s1",
        f"ftp://u:{SECRET}@h",
        f"unix://u:{SECRET}@h/x",
        f"redis://h:1/x?password={SECRET}",
    ],
)
def test_error_messages_never_contain_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_redis_url(url)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


# --- options ------------------------------------------------------------------------------


def test_tier_options_defaults() -> None:
    options = TierOptions()
    assert (options.connect_timeout, options.socket_timeout) == (1.0, 1.0)
    assert (options.ssl_ca_certs, options.ssl_certfile, options.ssl_keyfile) == (None,) * 3
    assert options.idle_ttl_seconds == 7 * 24 * 3600
    assert options.key_prefix == "offload-registry"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect_timeout": 0},
        {"socket_timeout": -1.0},
        {"socket_timeout": float("inf")},
        {"connect_timeout": float("nan")},
        {"connect_timeout": True},
        {"connect_timeout": "1"},
        {"idle_ttl_seconds": 0},
        {"idle_ttl_seconds": 1.5},
        {"key_prefix": ""},
        {"key_prefix": "a{b}"},
    ],
)
def test_bad_tier_options_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        TierOptions(**kwargs)
