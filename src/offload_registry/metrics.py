"""Prometheus metrics for a registry (the ``metrics`` extra: ``pip install
offload-registry[metrics]``).

A collector reads the counters the registry and its Redis tier already keep (``stats``,
``tier.stats``, the circuit breaker) at scrape time, so the hot path pays nothing for metrics.
Each process serves its own: scrape every worker (the Prometheus model for multi-process
services), e.g. on ``9464`` as ``deploy/`` annotates it.

    from offload_registry.metrics import serve_metrics
    serve_metrics(9464, registry)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from offload_registry.errors import ConfigurationError

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - exercised only without the extra
    Collector = object  # type: ignore[assignment,misc]
    _AVAILABLE = False
else:
    _AVAILABLE = True

PREFIX = "offload_registry"
_BREAKER_STATES = ("closed", "half_open", "open")


_REGISTRY_COUNTERS = (
    ("rebuilds", "Sessions rebuilt from their journal", "rebuilds"),
    ("rebuild_seconds", "Seconds spent rebuilding sessions from journals", "rebuild_seconds"),
    ("leases_granted", "Session leases granted", "leases_granted"),
    ("leases_unavailable", "Lease requests refused (held elsewhere)", "leases_unavailable"),
    ("revalidations", "Cached copies caught up after an invalidation", "revalidations"),
)
_TIER_COUNTERS = (
    ("redis_errors", "Redis calls that failed (answered from the journals)", "errors"),
    ("redis_bad_values", "Undecodable values found in Redis", "bad_values"),
    ("redis_hits", "Cold loads answered by Redis", "hits"),
    ("redis_misses", "Cold loads Redis could not answer", "misses"),
    ("version_gaps", "Invalidations that skipped a version (lost messages)", "version_gaps"),
    ("fenced_writes", "Redis updates refused for a stale lease token", "fenced"),
)


class RegistryCollector(Collector):
    """Metric families read from one registry (sync or asyncio) at each scrape."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        reg = self._registry
        stats = reg.stats
        cold = _labelled("cold_resolves", "Sessions loaded into the near cache", "source")
        for source, count in sorted(list(stats.cold_resolves.items())):  # copied: no lock
            cold.add_metric([source], count)
        yield cold
        claims = _labelled("claims", "Claimed ids, by outcome", "outcome")
        claims.add_metric(["won"], stats.claims_won)
        claims.add_metric(["lost"], stats.claims_lost)
        yield claims
        for name, documentation, attribute in _REGISTRY_COUNTERS:
            yield _counter(name, documentation, getattr(stats, attribute))
        yield GaugeMetricFamily(f"{PREFIX}_cached_sessions", "Sessions in the near cache", len(reg))
        yield GaugeMetricFamily(
            f"{PREFIX}_cached_bytes", "Approximate bytes held by the near cache", reg.cached_bytes
        )
        yield from _tier_metrics(reg.tier)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _labelled(name: str, documentation: str, label: str) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])


def _tier_metrics(tier: Any) -> Iterator[Any]:
    tier_stats = getattr(tier, "stats", None)
    if tier_stats is None:  # no shared tier
        return
    for name, documentation, attribute in _TIER_COUNTERS:
        yield _counter(name, documentation, getattr(tier_stats, attribute))
    yield _counter("invalidations", "Invalidations received from other writers", tier.invalidations)
    state = GaugeMetricFamily(
        f"{PREFIX}_redis_breaker_state", "Circuit breaker state (1: current)", labels=["state"]
    )
    current = str(getattr(tier.breaker.state, "value", tier.breaker.state)).replace("-", "_")
    for name in _BREAKER_STATES:
        state.add_metric([name], 1.0 if current == name else 0.0)
    yield state


_CANARY_COUNTERS = (
    ("canary_rounds", "Canary rounds run", "rounds"),
    ("canary_appends", "Entries the canary appended", "appends"),
    ("canary_claims_won", "Ids the canary won", "claims_won"),
    ("canary_claims_lost", "Ids the canary tried and lost", "claims_lost"),
    ("canary_checks", "Invariant checks the canary made", "checks"),
    ("canary_violations", "Invariant checks that failed (must stay 0)", "violations"),
    ("canary_errors", "Canary rounds that raised", "errors"),
    ("canary_sessions_removed", "Old canary sessions deleted", "sessions_removed"),
)


class CanaryCollector(Collector):
    """Metric families read from a canary's :class:`~offload_registry.ops.canary.CanaryStats`."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        for name, documentation, attribute in _CANARY_COUNTERS:
            yield _counter(name, documentation, getattr(self._stats, attribute))
        yield GaugeMetricFamily(
            f"{PREFIX}_canary_last_round_ok_timestamp_seconds",
            "Unix time of the canary's last round that completed",
            self._stats.last_round_ok_unix,
        )


def serve_metrics(port: int, registry: Any, addr: str = "0.0.0.0", *, canary: Any = None) -> Any:
    """Serve ``registry``'s metrics (and a canary's, when given its ``stats``) on
    ``http://<addr>:<port>/metrics`` from a daemon thread; returns the HTTP server (stop it
    with ``shutdown()`` then ``server_close()``). Raises :class:`ConfigurationError` without
    the extra, or when the port cannot be served (in use, out of range)."""
    if not _AVAILABLE:
        raise ConfigurationError(
            "metrics need the prometheus-client package: pip install 'offload-registry[metrics]'"
        )
    collectors = CollectorRegistry(auto_describe=True)
    collectors.register(RegistryCollector(registry))
    if canary is not None:
        collectors.register(CanaryCollector(canary))
    try:
        server, _thread = start_http_server(port, addr=addr, registry=collectors)
    except OSError as exc:  # in use, not allowed, no such address: the operator picks another
        raise ConfigurationError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
        ) from exc
    except (OverflowError, ValueError) as exc:
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
    return server
