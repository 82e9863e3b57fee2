"""TierOptions, the one settings object, and the rule by which the registry's keywords
become it (``config.registry_tier_options``)."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

import offload_registry
from offload_registry import SessionRegistry, TierOptions
from offload_registry._async.tier import NoSharedTier
from offload_registry.config import registry_tier_options
from offload_registry.errors import ConfigurationError
from offload_registry.store import urls
from offload_registry.store.keyspace import DEFAULT_PREFIX


def _merge(**given: object) -> TierOptions | None:
    keywords: dict[str, object] = {
        "redis_url": None,
        "redis_client": None,
        "tier": None,
        "redis_options": None,
        "key_prefix": DEFAULT_PREFIX,
    }
    return registry_tier_options(**{**keywords, **given})  # type: ignore[arg-type]


def test_from_url_applies_the_urls_parameters_and_keeps_the_other_settings() -> None:
    options = TierOptions.from_url("redis://h:1/0?socket_timeout=2", key_prefix="kp")
    assert (options.url, options.socket_timeout, options.key_prefix) == (
        "redis://h:1/0?socket_timeout=2",
        2.0,
        "kp",
    )
    with pytest.raises(ConfigurationError):
        TierOptions.from_url("mongodb://h/0")
    with pytest.raises(ConfigurationError):
        TierOptions.from_url("redis://h/0", ssl_ca_certs="/ca.pem")  # TLS without rediss://


def test_the_repr_never_shows_the_urls_credentials() -> None:
    text = repr(TierOptions.from_url("redis://user:s3cr3t@h:1/0"))
    assert "s3cr3t" not in text and "***@h:1" in text


def test_tier_options_keeps_its_old_import_path() -> None:
    assert urls.TierOptions is TierOptions is offload_registry.TierOptions


def test_the_merge_rule() -> None:
    assert _merge() is None
    assert _merge(tier=NoSharedTier(), redis_options=TierOptions(key_prefix="x")) is None
    assert _merge(redis_url="memory://") == TierOptions(url="memory://")
    assert _merge(redis_url="memory://", key_prefix="kp") == TierOptions(
        url="memory://", key_prefix="kp"
    )
    given = TierOptions(key_prefix="opt", socket_timeout=3.0)
    assert _merge(redis_url="memory://", redis_options=given) == TierOptions(
        url="memory://", key_prefix="opt", socket_timeout=3.0
    )
    assert _merge(redis_url="memory://", redis_options=given, key_prefix="kw") == TierOptions(
        url="memory://", key_prefix="kw", socket_timeout=3.0
    )
    assert _merge(redis_options=TierOptions.from_url("memory://")) == TierOptions(url="memory://")
    with pytest.raises(ConfigurationError, match="once"):
        _merge(redis_url="memory://", redis_options=TierOptions(url="memory://"))
    with pytest.raises(ConfigurationError, match="at most one"):
        _merge(redis_options=TierOptions(url="memory://"), tier=NoSharedTier())


async def test_a_registry_is_built_from_tier_options_alone(tmp_path: Path) -> None:
    options = TierOptions.from_url("memory://", key_prefix=f"t{uuid4().hex[:12]}")
    async with SessionRegistry(tmp_path, redis_options=options) as reg:
        assert reg.tier.name == "redis"
        ctx = await reg.resolve("agent:main:s1")
        await ctx.manager.append_entries([{"tool_call_id": "call_1"}])
    async with SessionRegistry(tmp_path, redis_options=options) as again:
        assert (await again.resolve("agent:main:s1")).manager.source == "redis"
