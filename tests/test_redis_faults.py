"""The Redis tier under faults, against real servers the tests own (``private_redis_server``).

Redis killed, restarted empty, frozen with SIGSTOP, scripts flushed; ACL users with too few
rights; TLS; credentials in URLs. Every workload is seeded, every wait bounded, and the truth
every answer is compared with is a journal-only, read-only registry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry.config import TierOptions
from offload_registry.errors import RedisPermissionError
from offload_registry.testing.server import (
    RedisServerProcess,
    ServerOptions,
)
from redis_fixtures import server_binary_or_fail
from session_helpers import described, entry, truth
from tls_certs import make_tls_files, started_tls_server

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

SESSIONS = ("agent:main:s1", "agent:main:s2", "agent:review:pr-7")
KEY = SESSIONS[0]
TIMEOUT = 0.3
"""socket and connect timeout of every registry here (seconds)."""
# Every command the registry sends, found by removing each in turn: start-up (PING, GET/SET of
# the marker and deployment keys, SCRIPT LOAD, and CLIENT SETNAME, which redis-py sends for the
# client name), the rebuild lock (SET NX PX, unlock script), reconciliation (DEL), EVALSHA, the
# commands inside the Lua scripts, MULTI/EXEC around the plain reads of a cold load, and the
# invalidation channel (PUBLISH from the scripts, SUBSCRIBE by the listener; ``&<prefix>:*``).
# CONFIG GET (the eviction-policy warning) is optional: a NOPERM there is ignored.
REGISTRY_COMMANDS = (
    "+ping +select +get +set +del +client|setname +script|load +evalsha +multi +exec "
    "+hmget +hget +hset +hexists +hincrby +lrange +llen +rpush +pttl +pexpire +type "
    "+publish +subscribe +unsubscribe "
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def opened(root: Path, url: str, prefix: str = "reg", **options: Any) -> SessionRegistry:
    tier_options = TierOptions(
        key_prefix=prefix, socket_timeout=TIMEOUT, connect_timeout=TIMEOUT, **options
    )
    return SessionRegistry(root, redis_url=url, redis_options=tier_options)


class Workload:
    """A seeded mix of appends, claims and status marks over a few sessions; it remembers
    every id it got acknowledged, to check that none is ever lost."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.counter = 0
        self.appended: dict[str, list[str]] = {key: [] for key in SESSIONS}
        self.claimed: dict[str, list[str]] = {key: [] for key in SESSIONS}

    def _new_id(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}_{self.counter:04d}"

    async def step(self, reg: SessionRegistry) -> None:
        key = self.rng.choice(SESSIONS)
        manager = (await reg.resolve(key)).manager
        roll = self.rng.random()
        if roll < 0.5 or not self.appended[key]:
            batch = []
            for _ in range(self.rng.randint(1, 3)):
                status = self.rng.choice([None, None, True, "deleted"])
                extra = {} if status is None else {"offloaded": status}
                batch.append(entry(self._new_id("toolu"), **extra))
            assert await manager.append_entries(batch) == len(batch)
            self.appended[key] += [e["tool_call_id"] for e in batch]
        elif roll < 0.8:
            ids = [self._new_id("call") for _ in range(self.rng.randint(1, 3))]
            assert await manager.claim([*ids, self.rng.choice(self.appended[key])]) == ids
            self.claimed[key] += ids
        else:
            chosen = self.rng.sample(self.appended[key], min(2, len(self.appended[key])))
            await manager.mark_offload_status(
                {i: self.rng.choice([True, "deleted"]) for i in chosen}
            )

    async def run(self, reg: SessionRegistry, steps: int) -> None:
        for _ in range(steps):
            await self.step(reg)

    async def check_nothing_is_missing(self, root: Path, url: str) -> None:
        """A fresh Redis-backed registry answers exactly what the journals hold, and that
        includes every acknowledged id."""
        async with opened(root, url) as reader:
            for key in SESSIONS:
                manager = (await reader.resolve(key)).manager
                assert described(manager) == await truth(root, key), key
                written = self.appended[key] + self.claimed[key]
                assert set(written) <= set(manager.processed_tool_call_ids), key


async def sources(root: Path, url: str) -> list[str]:
    async with opened(root, url) as reader:
        return [(await reader.resolve(key)).manager.source for key in SESSIONS]


async def stored_is_exact(reg: SessionRegistry, key: str, want: dict[str, Any]) -> bool:
    """What Redis alone holds for ``key`` (no journal catch-up) equals ``want``."""
    manager = (await reg.resolve(key)).manager
    stored = await reg.tier.load(manager.identity)
    if stored is None:
        return False
    return {
        "confirmed": sorted(stored.state.confirmed),
        "deleted": sorted(stored.state.deleted),
        "processed": sorted(stored.state.processed | stored.claimed),
        "entry_count": stored.state.entry_count,
    } == want


def acl_server(tmp_path: Path, rules: str) -> RedisServerProcess:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(f"user default on nopass ~* &* +@all\n{rules}\n")
    return RedisServerProcess(ServerOptions(aclfile=aclfile), binary=server_binary_or_fail())


def connections_named(server: RedisServerProcess, name: str) -> int:
    admin = server.client()
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


# --------------------------------------------------------------------------------------------
# restart empty, down, frozen
# --------------------------------------------------------------------------------------------


async def test_redis_restarted_empty_mid_workload_loses_nothing_and_is_refilled(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server, workload = private_redis_server, Workload(seed=20240611)
    async with opened(tmp_path, server.url) as worker:
        await workload.run(worker, 40)
        server.restart()  # SIGKILL, data files removed: back empty on the same port
        await workload.run(worker, 40)
    await workload.check_nothing_is_missing(tmp_path, server.url)
    assert await sources(tmp_path, server.url) == ["redis"] * len(SESSIONS)
    async with opened(tmp_path, server.url) as reader:
        for key in SESSIONS:
            assert await stored_is_exact(reader, key, await truth(tmp_path, key)), key


async def test_a_writer_that_lived_through_a_restart_publishes_under_the_new_epoch(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as worker:
        manager = (await worker.resolve(KEY)).manager
        await manager.append_entries([entry("before_1")])
        server.restart()
        await manager.append_entries([entry("after_1")])
        async with opened(tmp_path, server.url) as other:  # a new worker fills the new server
            await other.resolve(KEY)
        await manager.append_entries([entry("after_2")])
    async with opened(tmp_path, server.url) as reader:
        assert (await reader.resolve(KEY)).manager.source == "redis"


async def test_a_worker_keeps_writing_fast_while_redis_is_down_and_nothing_is_missing_after(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server, workload = private_redis_server, Workload(seed=7)
    async with opened(tmp_path, server.url) as worker:
        await workload.run(worker, 15)
        server.kill()
        durations = []
        for _ in range(30):
            started = time.monotonic()
            await workload.step(worker)
            durations.append(time.monotonic() - started)
        assert max(durations) < 1.0, durations
        assert worker.tier.breaker.state == "open"
        # durable while Redis is down: the journals alone hold every acknowledged write
        for key in SESSIONS:
            want = set(workload.appended[key] + workload.claimed[key])
            assert want <= set((await truth(tmp_path, key))["processed"]), key
        server.restart()  # back, empty
        await asyncio.sleep(TIMEOUT + 0.1)  # past the breaker's reset delay: the next call probes
        await workload.run(worker, 15)
        assert worker.tier.breaker.state == "closed"
    await workload.check_nothing_is_missing(tmp_path, server.url)
    assert await sources(tmp_path, server.url) == ["redis"] * len(SESSIONS)


async def test_a_frozen_redis_costs_each_call_about_one_timeout_and_state_is_right_after(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server, workload = private_redis_server, Workload(seed=99)
    async with opened(tmp_path, server.url) as worker:
        await workload.run(worker, 15)
        server.pause()  # SIGSTOP: connections stay open, nothing is answered
        try:
            for _ in range(8):
                started = time.monotonic()
                await workload.step(worker)
                assert time.monotonic() - started < 2.0
            started = time.monotonic()
            async with opened(tmp_path, server.url) as newcomer:
                manager = (await newcomer.resolve("agent:main:new")).manager
                await manager.append_entries([entry("while_frozen")])
            assert time.monotonic() - started < 2.0
        finally:
            server.resume()
        await asyncio.sleep(TIMEOUT + 0.1)
        await workload.run(worker, 15)  # replies the frozen server sends late are never read
    await workload.check_nothing_is_missing(tmp_path, server.url)
    async with opened(tmp_path, server.url) as reader:
        for key in SESSIONS:
            assert await stored_is_exact(reader, key, await truth(tmp_path, key)), key


# --------------------------------------------------------------------------------------------
# scripts
# --------------------------------------------------------------------------------------------


async def test_flushed_scripts_are_reloaded_transparently(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as worker:
        manager = (await worker.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        admin = server.client()
        try:
            admin.script_flush()
        finally:
            admin.close()
        stats = worker.tier.stats
        errors, deltas = stats.errors, stats.deltas_published
        await manager.append_entries([entry("toolu_2")])  # delta script: NOSCRIPT, reloaded
        other = (await worker.resolve("agent:main:s2")).manager  # load and publish scripts
        await other.append_entries([entry("toolu_3")])
        assert (stats.errors, stats.deltas_published) == (errors, deltas + 2)
    async with opened(tmp_path, server.url) as reader:
        for key in (KEY, "agent:main:s2"):
            assert await stored_is_exact(reader, key, await truth(tmp_path, key)), key


async def test_scripts_are_reloaded_after_a_restart(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    server = private_redis_server
    async with opened(tmp_path, server.url) as worker:
        manager = (await worker.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_1")])
        server.restart()
        stats = worker.tier.stats
        published = stats.snapshots_published + stats.deltas_published
        await manager.append_entries([entry("toolu_2")])  # may meet the dead connection
        await manager.append_entries([entry("toolu_3")])
        other = (await worker.resolve("agent:main:s2")).manager
        await other.append_entries([entry("toolu_4")])
        assert stats.snapshots_published + stats.deltas_published >= published + 3
        keys = [worker.tier.keyspace.session_for(m.identity) for m in (manager, other)]
    admin = server.client()
    try:
        assert all(admin.hexists(k.state, "snap") for k in keys)
    finally:
        admin.close()
    async with opened(tmp_path, server.url) as fresh:
        assert described((await fresh.resolve(KEY)).manager) == await truth(tmp_path, KEY)
        assert fresh.tier.stats.errors == 0


# --------------------------------------------------------------------------------------------
# ACL
# --------------------------------------------------------------------------------------------


async def test_an_acl_user_limited_to_the_prefix_and_the_needed_commands_works(
    tmp_path: Path,
) -> None:
    prefix = f"acl{uuid4().hex[:8]}"
    rules = (
        f"user registry on >secret ~{prefix}:* resetchannels &{prefix}:* -@all {REGISTRY_COMMANDS}"
    )
    with acl_server(tmp_path, rules) as server:
        url = f"redis://registry:secret@127.0.0.1:{server.port}/0"
        root = tmp_path / "root"
        async with opened(root, url, prefix) as worker:
            manager = (await worker.resolve(KEY)).manager
            await manager.append_entries([entry("toolu_1"), entry("toolu_2")])
            assert await manager.claim(["call_1"]) == ["call_1"]
            await manager.mark_offload_status({"toolu_1": "deleted"})
            await manager.append_entries([entry("toolu_3", offloaded=True)])
            assert worker.tier.stats.errors == worker.tier.stats.bad_values == 0
        async with opened(root, url, prefix) as reader:
            again = (await reader.resolve(KEY)).manager
            assert again.source == "redis"
            assert described(again) == await truth(root, KEY)
            assert reader.tier.stats.errors == reader.tier.stats.bad_values == 0
        admin = server.client()
        try:
            denied = {e["object"] for e in admin.acl_log()}
        finally:
            admin.close()
        # Only optional calls may be denied: the eviction-policy check, and the client-library
        # tag redis-py sends on connect to servers that know CLIENT SETINFO (Valkey, Redis 7.2+).
        assert denied <= {"config|get", "client|setinfo"}


NOT_CHECKED_AT_START = (
    "bug: RedisTier.start() probes SCRIPT LOAD and EVALSHA (with unlock.lua: GET, DEL) but "
    "not the commands publish.lua and delta.lua run nor the MULTI/EXEC reads of a cold load; "
    "a user without one of them starts fine, and the NOPERM surfaces later, unnamed ('The "
    "user executing the script can't run this command'), handled as an outage or counted "
    "as a bad value: Redis is silently never used"
)


@pytest.mark.parametrize(
    "permission",
    [
        "script|load",
        "evalsha",
        "hset",
        "hmget",
        "multi",
        "publish",
    ],
)
async def test_a_user_without_a_needed_permission_gets_an_error_naming_it_at_start(
    tmp_path: Path, permission: str
) -> None:
    commands = REGISTRY_COMMANDS.replace(f" +{permission} ", " ")
    assert f"+{permission} " not in commands
    rules = f"user registry on >s3cr3t-pw ~reg:* resetchannels &reg:* -@all {commands}"
    with acl_server(tmp_path, rules) as server:
        reg = opened(tmp_path / "root", f"redis://registry:s3cr3t-pw@127.0.0.1:{server.port}/0")
        try:
            with pytest.raises(RedisPermissionError) as raised:
                async with reg:  # start() checks the permissions
                    manager = (await reg.resolve(KEY)).manager
                    await manager.append_entries([entry("toolu_1")])
        finally:
            await reg.close()
    message = str(raised.value)
    assert permission in message
    assert "s3cr3t-pw" not in message and "s3cr3t-pw" not in repr(raised.value)
    assert "***" in message  # the URL, redacted


async def test_a_registry_whose_start_fails_in_async_with_leaves_no_connection_open(
    tmp_path: Path,
) -> None:
    commands = REGISTRY_COMMANDS.replace(" +script|load", "")
    rules = f"user registry on >secret ~reg:* resetchannels &reg:* -@all {commands}"
    with acl_server(tmp_path, rules) as server:
        reg = opened(tmp_path / "root", f"redis://registry:secret@127.0.0.1:{server.port}/0")
        try:
            with pytest.raises(RedisPermissionError):
                async with reg:
                    pass
            assert connections_named(server, "offload-registry") == 0
        finally:
            await reg.close()


# --------------------------------------------------------------------------------------------
# TLS and credentials
# --------------------------------------------------------------------------------------------


async def test_a_tls_server_works_end_to_end_with_rediss_and_the_ca(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    server = started_tls_server(tls, server_binary_or_fail())
    try:
        assert server.url.startswith("rediss://")
        root = tmp_path / "root"
        async with opened(root, server.url, ssl_ca_certs=str(tls.ca)) as worker:
            manager = (await worker.resolve(KEY)).manager
            await manager.append_entries([entry("toolu_1"), entry("toolu_2", offloaded=True)])
            assert await manager.claim(["call_1"]) == ["call_1"]
            assert worker.tier.stats.errors == 0
        async with opened(root, server.url, ssl_ca_certs=str(tls.ca)) as reader:
            again = (await reader.resolve(KEY)).manager
            assert again.source == "redis"
            assert described(again) == await truth(root, KEY)
    finally:
        server.close()


async def test_credentials_never_appear_in_logs_errors_or_repr(
    tmp_path: Path, log_records: pytest.LogCaptureFixture
) -> None:
    password, wrong = "Pa55-w0rd-x9", "Wr0ng-pa55-q7"
    options = ServerOptions(password=password)
    seen: list[str] = []
    with RedisServerProcess(options, binary=server_binary_or_fail()) as server:
        assert password in server.url
        root = tmp_path / "root"
        async with opened(root, server.url) as worker:
            seen += [repr(worker), repr(worker.tier), str(worker.tier.description)]
            manager = (await worker.resolve(KEY)).manager
            await manager.append_entries([entry("toolu_1")])
            server.kill()  # outage: failures are logged
            for i in range(5):
                await manager.append_entries([entry(f"down_{i}")])
            assert worker.tier.breaker.state == "open"
            server.start()
        bad_url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
        refused = opened(root, bad_url)
        seen += [repr(refused), repr(refused.tier)]
        with pytest.raises(RedisPermissionError) as failed_auth:  # a misconfiguration: loud
            async with refused:
                pass
        seen += [str(failed_auth.value), repr(failed_auth.value)]
        assert "***" in str(failed_auth.value)
    assert log_records.records, "the outage was logged"
    seen += [log_records.text]
    seen += [str(vars(record)) for record in log_records.records]
    for text in seen:
        assert password not in text and wrong not in text
    assert "***" in repr(worker.tier)  # redacted, not dropped
