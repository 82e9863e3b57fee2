"""Prometheus metrics read a registry's own counters at scrape time."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from uuid import uuid4

from offload_registry import sync as sync_api
from offload_registry.metrics import serve_metrics
from offload_registry.testing.server import RedisServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_scrape_reports_resolves_claims_leases_and_the_redis_tier(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    with sync_api.SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = reg.resolve("agent:main:s1").manager
        manager.append_entries([{"tool_call_id": "toolu_1", "summary": "x"}])
        assert manager.claim(["call_1", "call_2", "toolu_1"]) == ["call_1", "call_2"]
        with manager.lease(ttl=5):
            pass
        port = free_port()
        server = serve_metrics(port, reg, addr="127.0.0.1")
        try:
            samples = scrape(port)
        finally:
            server.shutdown()
            server.server_close()
    assert samples['offload_registry_cold_resolves_total{source="journal"}'] == 1
    assert samples['offload_registry_claims_total{outcome="won"}'] == 2
    assert samples['offload_registry_claims_total{outcome="lost"}'] == 1
    assert samples["offload_registry_leases_granted_total"] == 1
    assert samples["offload_registry_rebuilds_total"] == 1
    assert samples["offload_registry_cached_sessions"] == 1
    assert samples["offload_registry_cached_bytes"] > 0
    assert samples['offload_registry_redis_breaker_state{state="closed"}'] == 1
    assert samples["offload_registry_redis_errors_total"] == 0


def test_a_registry_without_redis_reports_no_tier_metrics(tmp_path: Path) -> None:
    with sync_api.SessionRegistry(tmp_path) as reg:
        reg.resolve("agent:main:s1")
        port = free_port()
        server = serve_metrics(port, reg, addr="127.0.0.1")
        try:
            samples = scrape(port)
        finally:
            server.shutdown()
            server.server_close()
    assert samples['offload_registry_cold_resolves_total{source="journal"}'] == 1
    assert not any(name.startswith("offload_registry_redis_") for name in samples)
