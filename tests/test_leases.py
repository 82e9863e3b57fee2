"""Fenced session leases: one holder per session, tokens that only grow, stale writes refused.

Run against ``memory://`` (fakeredis), a real server, and no Redis at all (the journal's lease
record alone), except where a test needs a server it can restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from offload_registry import SessionRegistry
from offload_registry import sync as sync_api
from offload_registry._async._primitives import stop
from offload_registry._async.lease import Lease
from offload_registry._async.manager import OffloadStateManager
from offload_registry._async.tier import NoSharedTier
from offload_registry.changes import APPEND, SessionChange
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import scan_journal
from offload_registry.disk.session_files import SessionFiles, SessionPaths
from offload_registry.errors import LeaseLostError, LeaseUnavailableError
from offload_registry.keys import resolve_identity
from offload_registry.testing.server import RedisServerProcess
from session_helpers import entry

KEY = "agent:main:s1"


@pytest.fixture(params=["none", "memory", "real"])
def backend(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    prefix = f"t{uuid4().hex[:12]}"
    if request.param == "none":
        return None, prefix
    if request.param == "memory":
        return "memory://", prefix
    return request.getfixturevalue("redis_server").url, prefix


def opened(root: Path, backend: tuple[str | None, str]) -> SessionRegistry:
    url, prefix = backend
    if url is None:
        return SessionRegistry(root)
    return SessionRegistry(root, redis_url=url, key_prefix=prefix)


def journal_ids(root: Path) -> list[str]:
    return scan_journal(root / "main" / "offload-s1.jsonl").ids


async def pause_renewals(lease: Lease) -> None:
    """What a SIGSTOPped holder looks like from outside: its lease stops being renewed."""
    assert lease._keeper is not None
    await stop(lease._keeper)
    lease._keeper = None


# --------------------------------------------------------------------------------------------
# one holder, growing tokens
# --------------------------------------------------------------------------------------------


async def test_a_held_lease_excludes_every_other_worker_until_released(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        second = (await b.resolve(KEY)).manager
        async with first.lease(ttl=5) as held:
            with pytest.raises(LeaseUnavailableError) as busy:
                await second.acquire_lease(ttl=5)
            assert 0 < busy.value.retry_after <= 5
            assert not held.lost
        assert held.lost  # released
        async with second.lease(ttl=5) as next_held:
            assert next_held.token > held.token


async def test_a_waiting_worker_gets_the_lease_when_the_holder_lets_go(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        second = (await b.resolve(KEY)).manager
        held = await first.acquire_lease(ttl=5)
        waiter = asyncio.ensure_future(second.acquire_lease(ttl=5, wait=5))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await first.release_lease(held)
        taken = await asyncio.wait_for(waiter, 5)
        assert taken.token == held.token + 1
        await second.release_lease(taken)


async def test_an_unrenewed_lease_expires_and_its_holder_knows_before_writing(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        held = await first.acquire_lease(ttl=0.3)
        await pause_renewals(held)
        await asyncio.sleep(0.4)
        assert held.lost
        with pytest.raises(LeaseLostError):
            await first.append_entries([entry("toolu_late")], lease=held)
        second = (await b.resolve(KEY)).manager
        async with second.lease(ttl=5) as taken:
            assert taken.token > held.token
        assert journal_ids(tmp_path) == []


async def test_a_renewed_lease_outlives_its_ttl(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        async with first.lease(ttl=0.3) as held:
            await asyncio.sleep(0.8)
            assert not held.lost
            await first.append_entries([entry("toolu_1")], lease=held)
            with pytest.raises(LeaseUnavailableError):
                await (await b.resolve(KEY)).manager.acquire_lease(ttl=1)
    assert journal_ids(tmp_path) == ["toolu_1"]


async def test_tokens_keep_growing_when_redis_restarts_empty(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    backend = (private_redis_server.url, "lease")
    tokens = []
    for _ in range(3):
        async with opened(tmp_path, backend) as reg:
            manager = (await reg.resolve(KEY)).manager
            async with manager.lease(ttl=5) as held:
                tokens.append(held.token)
        private_redis_server.restart()  # an INCR in Redis alone would start again at 1
    assert tokens == [1, 2, 3]


async def test_a_holder_keeps_its_lease_across_a_redis_restart(
    tmp_path: Path, private_redis_server: RedisServerProcess
) -> None:
    backend = (private_redis_server.url, "lease")
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        async with first.lease(ttl=0.6) as held:
            private_redis_server.restart()
            await asyncio.sleep(1.0)  # renewals restore the lease from the journal's record
            assert not held.lost
            with pytest.raises(LeaseUnavailableError):
                await (await b.resolve(KEY)).manager.acquire_lease(ttl=1)
            await first.append_entries([entry("toolu_1")], lease=held)
    assert journal_ids(tmp_path) == ["toolu_1"]


# --------------------------------------------------------------------------------------------
# fencing: a stale token is refused where the write lands
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("write", ["append", "mark", "claim"])
async def test_the_journal_refuses_a_write_whose_token_was_superseded(
    tmp_path: Path, backend: tuple[str | None, str], write: str
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        await first.append_entries([entry("toolu_0")])
        stale = await first.acquire_lease(ttl=0.3)
        await pause_renewals(stale)
        await asyncio.sleep(0.4)
        second = (await b.resolve(KEY)).manager
        async with second.lease(ttl=5) as current:
            await second.append_entries([entry("toolu_new")], lease=current)
            # The paused holder wakes believing its lease is fine (it was checked just before
            # the pause): only the journal, under its lock, can refuse the write now.
            stale._renewed(time.monotonic())
            before = (tmp_path / "main" / "offload-s1.jsonl").read_bytes()
            with pytest.raises(LeaseLostError) as refused:
                if write == "append":
                    await first.append_entries([entry("toolu_stale")], lease=stale)
                elif write == "mark":
                    await first.mark_offload_status({"toolu_0": "deleted"}, lease=stale)
                else:
                    await first.claim(["call_stale"], lease=stale)
            assert refused.value.current == current.token
            assert (tmp_path / "main" / "offload-s1.jsonl").read_bytes() == before
            assert "call_stale" not in (await b.resolve(KEY)).manager.processed_tool_call_ids
            assert await second.claim(["call_stale"], lease=current) == ["call_stale"]


async def test_the_redis_scripts_refuse_a_stale_token(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    backend = (redis_server.url, f"t{uuid4().hex[:12]}")
    async with opened(tmp_path, backend) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("toolu_0")])
        async with manager.lease(ttl=5) as held:
            pass
        async with manager.lease(ttl=5):
            tier: Any = reg.tier
            snapshot = manager.snapshot()
            change = SessionChange(APPEND, [], snapshot.watermark, snapshot.watermark)
            await tier.publish_change(manager.identity, change, snapshot, "-", held.token)
            await tier.publish(manager.identity, snapshot, "-", held.token)
            assert tier.stats.fenced == 2


async def test_a_lease_of_another_session_is_refused(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as reg:
        one = (await reg.resolve(KEY)).manager
        other = (await reg.resolve("agent:main:s2")).manager
        async with one.lease(ttl=5) as held:
            with pytest.raises(ValueError, match="not a lease of"):
                await other.append_entries([entry("toolu_1")], lease=held)


async def test_a_damaged_lease_record_is_a_clear_error_not_a_reused_token(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as reg:
        manager = (await reg.resolve(KEY)).manager
        async with manager.lease(ttl=5):
            pass
        (tmp_path / "main" / "offload-s1.lease").write_text("{not json")
        with pytest.raises(OSError, match="lease record is damaged"):
            await manager.acquire_lease(ttl=5)


# --------------------------------------------------------------------------------------------
# a real paused process (SIGSTOP past its TTL, SIGCONT after a takeover)
# --------------------------------------------------------------------------------------------

PAUSED_HOLDER = textwrap.dedent(
    """
    import sys, time
    from offload_registry.sync import SessionRegistry
    from offload_registry._sync.lease import Lease

    root, url = sys.argv[1], sys.argv[2]
    if sys.argv[3] == "journal-only":
        Lease.check = lambda self: None  # woke after the check: only the journal can refuse
    with SessionRegistry(root, redis_url=url, key_prefix="paused") as reg:
        manager = reg.resolve("agent:main:s1").manager
        lease = manager.acquire_lease(ttl=0.5)
        print(lease.token, flush=True)
        sys.stdin.readline()  # the parent stops us here, then lets us go on
        try:
            manager.append_entries([{"tool_call_id": "toolu_paused", "summary": "x"}], lease=lease)
            print("written", flush=True)
        except Exception as exc:
            print(type(exc).__name__, flush=True)
    """
)


@pytest.mark.parametrize("refused_by", ["holder", "journal-only"])
async def test_a_paused_holder_woken_after_a_takeover_cannot_write(
    tmp_path: Path, redis_server: RedisServerProcess, refused_by: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_HOLDER, str(tmp_path), redis_server.url, refused_by],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        paused_token = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGSTOP)
        await asyncio.sleep(0.8)  # past the TTL: the paused holder cannot renew
        async with SessionRegistry(
            tmp_path, redis_url=redis_server.url, key_prefix="paused"
        ) as reg:
            manager = (await reg.resolve(KEY)).manager
            async with manager.lease(ttl=10) as current:
                assert current.token > paused_token
                await manager.append_entries([entry("toolu_new_holder")], lease=current)
                child.stdin.write("go\n")
                child.stdin.flush()
                os.kill(child.pid, signal.SIGCONT)
                assert child.stdout.readline().strip() == "LeaseLostError"
        assert journal_ids(tmp_path) == ["toolu_new_holder"]
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.communicate()  # reaps it and closes the pipes


# --------------------------------------------------------------------------------------------
# regressions found in review
# --------------------------------------------------------------------------------------------


def unreachable_redis_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there


async def test_a_lease_renewed_past_its_ttl_is_respected_by_a_worker_without_redis(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    async with (
        opened(tmp_path, (redis_server.url, prefix)) as a,
        opened(tmp_path, (unreachable_redis_url(), prefix)) as b,
    ):
        holder = (await a.resolve(KEY)).manager
        async with holder.lease(ttl=0.6) as held:
            await asyncio.sleep(1.3)  # two TTLs, renewed all along
            with pytest.raises(LeaseUnavailableError):  # the journal's record says "held"
                await (await b.resolve(KEY)).manager.acquire_lease(ttl=5)
            assert not held.lost
            await holder.append_entries([entry("toolu_1")], lease=held)


async def test_a_write_refused_for_a_stale_token_marks_the_lease_lost(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        stale = await first.acquire_lease(ttl=0.3)
        await pause_renewals(stale)
        await asyncio.sleep(0.4)
        async with (await b.resolve(KEY)).manager.lease(ttl=5):
            stale._renewed(time.monotonic())  # woke believing it still holds the lease
            assert not stale.lost
            with pytest.raises(LeaseLostError):
                await first.append_entries([entry("toolu_stale")], lease=stale)
            assert stale.lost and await stale.wait_lost(0)


async def test_a_write_redis_refused_as_fenced_is_still_announced_to_other_workers(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    backend = (redis_server.url, f"t{uuid4().hex[:12]}")
    async with (
        opened(tmp_path, backend) as a,
        opened(tmp_path, backend) as b,
        opened(tmp_path, backend) as c,
    ):
        writer, reader, taker = [(await r.resolve(KEY)).manager for r in (a, b, c)]
        await reader.append_entries([entry("toolu_0")])
        held = await writer.acquire_lease(ttl=0.4)
        tier: Any = a.tier
        publish_change = tier.publish_change

        async def paused_between_journal_and_redis(*args: Any, **kwargs: Any) -> None:
            await pause_renewals(held)
            await asyncio.sleep(0.5)  # past the TTL: another worker takes the session
            await taker.acquire_lease(ttl=5)
            await publish_change(*args, **kwargs)

        tier.publish_change = paused_between_journal_and_redis
        assert await writer.append_entries([entry("toolu_1")], lease=held) == 1
        assert tier.stats.fenced == 1
        for _ in range(200):  # the reader hears of the write and catches up on resolve
            if "toolu_1" in (await b.resolve(KEY)).manager.processed_tool_call_ids:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the acknowledged write never reached the other worker")


async def test_a_holder_granted_without_redis_keeps_its_lease_after_a_refused_redis_grant(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    backend = (redis_server.url, f"t{uuid4().hex[:12]}")
    async with opened(tmp_path, backend) as h, opened(tmp_path, backend) as x:
        holder, other = (await h.resolve(KEY)).manager, (await x.resolve(KEY)).manager
        breaker: Any = h.tier.breaker  # type: ignore[attr-defined]
        breaker.allow = lambda: False  # the holder cannot reach Redis for a while
        held = await holder.acquire_lease(ttl=0.9)
        with pytest.raises(LeaseUnavailableError):  # granted by Redis, refused by the record
            await other.acquire_lease(ttl=1)
        del breaker.allow  # Redis is back; its fence is ahead of the holder's token
        await asyncio.sleep(1.2)  # renewals restore the lease in Redis
        assert not held.lost
        await holder.append_entries([entry("toolu_1")], lease=held)
        await holder.release_lease(held)


async def test_closing_a_registry_releases_its_leases(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as b:
        a = opened(tmp_path, backend)
        held = await (await a.resolve(KEY)).manager.acquire_lease(ttl=30)
        await a.close()
        assert held.lost
        async with (await b.resolve(KEY)).manager.lease(ttl=5, wait=0) as taken:
            assert taken.token > held.token


async def test_a_cancelled_acquire_leaves_no_lease_behind(
    tmp_path: Path, backend: tuple[str | None, str]
) -> None:
    async with opened(tmp_path, backend) as a, opened(tmp_path, backend) as b:
        first = (await a.resolve(KEY)).manager
        files: Any = first._files
        commit, grant = files.commit_lease, files.grant_lease

        def slow(step: Any) -> Any:
            def run(*args: Any) -> Any:
                time.sleep(0.2)  # a slow flock or fsync
                return step(*args)

            return run

        files.commit_lease, files.grant_lease = slow(commit), slow(grant)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first.acquire_lease(ttl=30), 0.05)
        await asyncio.sleep(0.3)
        async with (await b.resolve(KEY)).manager.lease(ttl=5, wait=0):
            pass


def test_a_forked_child_can_neither_write_under_nor_release_the_parents_lease(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    prefix = f"t{uuid4().hex[:12]}"
    with sync_api.SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as reg:
        manager = reg.resolve(KEY).manager
        with manager.lease(ttl=30) as held:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    ok = held.lost
                    try:
                        manager.append_entries([entry("toolu_child")], lease=held)
                        ok = False
                    except LeaseLostError:
                        pass
                    manager.release_lease(held)  # only the child's copy is dropped
                    os._exit(0 if ok else 1)
                except BaseException:
                    os._exit(2)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert not held.lost
            manager.append_entries([entry("toolu_parent")], lease=held)
    assert journal_ids(tmp_path) == ["toolu_parent"]


# --------------------------------------------------------------------------------------------
# injected clocks: expiry is tested without sleeping
# --------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that moves only when told (``now`` in seconds; ``ms`` as the wall clock)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


def test_a_lease_expires_by_its_injected_clock_without_sleeping() -> None:
    clock = FakeClock()
    lease = Lease(resolve_identity(KEY), 1, "holder", ttl=30.0, clock=clock)
    clock.now += 29.5
    assert not lease.lost
    assert lease.remaining == pytest.approx(0.5)
    lease.check()
    clock.now += 0.5
    assert lease.lost
    assert lease.remaining == 0.0
    with pytest.raises(LeaseLostError, match="not renewed before its deadline"):
        lease.check()


def test_the_journal_lease_record_expires_by_the_injected_wall_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    paths = SessionPaths.for_identity(tmp_path, resolve_identity(KEY))
    files = SessionFiles(paths, FsyncPolicy.NEVER, read_only=False, clock_ms=clock.ms)
    first = files.grant_lease("a", ttl_ms=60_000)
    assert first is not None
    assert first.expires_ms == clock.ms() + 60_000
    clock.now += 59.999
    assert files.grant_lease("b", ttl_ms=60_000) is None  # a's lease is still live
    clock.now += 0.001
    second = files.grant_lease("b", ttl_ms=60_000)
    assert second is not None
    assert second.token == first.token + 1


async def test_a_manager_lease_lost_by_the_injected_clock_refuses_its_writes(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    identity = resolve_identity(KEY)
    paths = SessionPaths.for_identity(tmp_path, identity)
    files = SessionFiles(paths, FsyncPolicy.NEVER, read_only=False, clock_ms=clock.ms)
    manager = OffloadStateManager(identity, files, NoSharedTier(), clock=clock)
    await manager.load()
    held = await manager.acquire_lease(ttl=60.0)
    try:
        await manager.append_entries([entry("toolu_1")], lease=held)
        clock.now += 60.0  # no renewal ran in between: the deadline passed
        assert held.lost
        with pytest.raises(LeaseLostError):
            await manager.append_entries([entry("toolu_2")], lease=held)
    finally:
        await manager.release_lease(held)
    assert journal_ids(tmp_path) == ["toolu_1"]


def test_the_registrys_clock_expires_a_lease_record_without_sleeping(tmp_path: Path) -> None:
    now = [1_000_000]
    clock = lambda: now[0]  # noqa: E731 - a settable fake wall clock (ms)
    with (
        sync_api.SessionRegistry(tmp_path, clock_ms=clock) as first,
        sync_api.SessionRegistry(tmp_path, clock_ms=clock) as second,
    ):
        held = first.resolve("agent:main:s1").manager.acquire_lease(ttl=30.0)
        contender = second.resolve("agent:main:s1").manager
        with pytest.raises(LeaseUnavailableError):
            contender.acquire_lease(ttl=30.0)
        now[0] += 31_000  # the holder stopped renewing 31 s ago, by the registries' clock
        taken = contender.acquire_lease(ttl=30.0)
        assert taken.token > held.token
        contender.release_lease(taken)
