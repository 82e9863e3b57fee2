"""Attacks on issue 15's speed changes (cold resolve, hot resolve, retry, warm --processes):
each test states a guarantee the faster code must still keep."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import multiprocessing.process
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offload_registry import SessionRegistry
from offload_registry._async import health
from offload_registry.disk import agent_files
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.layout import state_path
from offload_registry.disk.session_files import SessionFiles, SessionPaths
from offload_registry.errors import UnsafePathError
from offload_registry.freshness import STALE, CopyFreshness
from offload_registry.keys import resolve_identity
from offload_registry.ops.warm_processes import TierSpec, _Job, warm_processes
from ops_helpers import unique_prefix, write_sessions
from redis_fixtures import redis_server
from session_helpers import entry

__all__ = ["redis_server"]

KEY = "agent:main:s1"


def agent_dir(root: Path, key: str = KEY) -> Path:
    return SessionPaths.for_identity(root, resolve_identity(key, None)).agent_dir


def locked_path_writes(directory: Path, key: str) -> bool:
    """Whether the locked update record_session makes would write state.json."""
    path = state_path(directory)
    before = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    stat_before = os.stat(path, follow_symlinks=False) if os.path.lexists(path) else None
    agent_files.update_agent_state(
        directory,
        lambda s: s if s.last_session_key == key else dataclasses.replace(s, last_session_key=key),
        FsyncPolicy.NEVER,
    )
    stat_after = os.stat(path, follow_symlinks=False)
    same = stat_before is not None and (stat_before.st_ino, stat_before.st_mtime_ns) == (
        stat_after.st_ino,
        stat_after.st_mtime_ns,
    )
    return not (same and path.read_bytes() == before)


# --- 1. the unlocked lastSessionKey check --------------------------------------------------

HOSTILE_STATES: dict[str, bytes] = {
    "plain": b'{"lastSessionKey": "agent:main:s1"}',
    "other": b'{"lastSessionKey": "agent:main:s2"}',
    "dup-ours-last": b'{"lastSessionKey": "x", "lastSessionKey": "agent:main:s1"}',
    "dup-ours-first": b'{"lastSessionKey": "agent:main:s1", "lastSessionKey": "x"}',
    "dup-then-number": b'{"lastSessionKey": "agent:main:s1", "lastSessionKey": 1}',
    "bom": b'\xef\xbb\xbf{"lastSessionKey": "agent:main:s1"}',
    "two-boms": b'\xef\xbb\xbf\xef\xbb\xbf{"lastSessionKey": "agent:main:s1"}',
    "non-utf8-elsewhere": b'{"lastSessionKey": "agent:main:s1", "x": "\xff"}',
    "nan": b'{"lastSessionKey": "agent:main:s1", "x": NaN}',
    "infinity-number": b'{"lastSessionKey": "agent:main:s1", "x": 1e999}',
    "deep": b'{"lastSessionKey": "agent:main:s1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "array": b'[{"lastSessionKey": "agent:main:s1"}]',
    "trailing-garbage": b'{"lastSessionKey": "agent:main:s1"} x',
    "escaped-key": b'{"last\\u0053essionKey": "agent:main:s1"}',
    "torn": b'{"lastSessionKey": "agent:main:s1"',
    "empty": b"",
    "huge-int": b'{"lastSessionKey": "agent:main:s1", "mmdCounter": ' + b"9" * 400 + b"}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STATES))
def test_the_unlocked_check_skips_only_when_the_locked_update_writes_nothing(
    tmp_path: Path, name: str
) -> None:
    directory = agent_dir(tmp_path)
    directory.mkdir(parents=True)
    state_path(directory).write_bytes(HOSTILE_STATES[name])
    skip = agent_files.names_last_session(directory, KEY)
    writes = locked_path_writes(directory, KEY)
    assert not (skip and writes), f"{name}: skipped, but the locked path writes"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "dangling"])
def test_a_non_regular_state_json_never_blocks_the_check(tmp_path: Path, kind: str) -> None:
    directory = agent_dir(tmp_path)
    directory.mkdir(parents=True)
    path = state_path(directory)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b'{"lastSessionKey": "agent:main:s1"}')
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "missing")
    result: list[bool] = []
    t = threading.Thread(
        target=lambda: result.append(agent_files.names_last_session(directory, KEY)), daemon=True
    )
    t.start()
    t.join(5)
    assert result == [False]


async def test_a_cold_resolve_leaves_the_last_resolved_key(tmp_path: Path) -> None:
    async with SessionRegistry(tmp_path, max_cached=1) as reg:
        for key in ["agent:main:a", "agent:main:b", "agent:main:a", "agent:main:a"]:
            await reg.resolve(key)
            assert agent_files.read_agent_state(agent_dir(tmp_path)).last_session_key == key
            reg.evict(key)


async def test_a_link_in_place_of_state_json_still_refuses_the_resolve(tmp_path: Path) -> None:
    directory = agent_dir(tmp_path)
    directory.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b'{"lastSessionKey": "agent:main:s1"}')
    state_path(directory).symlink_to(target)
    async with SessionRegistry(tmp_path) as reg:
        with pytest.raises(UnsafePathError):
            await reg.resolve(KEY)


async def test_a_huge_state_json_is_not_parsed_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlocked check reads state.json on the event loop: a huge file (another tool's
    bloat, or an attacker's) must not be read and parsed there, stalling every other
    coroutine; the locked path reads it in a worker thread, as before the change. (Checked by
    where the parse runs, not by timing it.)"""
    directory = agent_dir(tmp_path)
    directory.mkdir(parents=True)
    pad = ",".join(["1"] * 3_000_000)
    state_path(directory).write_text(f'{{"lastSessionKey": "{KEY}", "pad": [{pad}]}}')
    loop_thread = threading.get_ident()
    parsed_on_the_loop: list[int] = []
    real_parse = agent_files.parse_json_line

    def spying_parse(text: str, **options: Any) -> Any:
        if threading.get_ident() == loop_thread:
            parsed_on_the_loop.append(len(text))
        return real_parse(text, **options)

    monkeypatch.setattr(agent_files, "parse_json_line", spying_parse)
    async with SessionRegistry(tmp_path) as reg:
        await reg.resolve(KEY)
    assert all(size <= 64 * 1024 for size in parsed_on_the_loop), parsed_on_the_loop


# --- 2. the inline position check ----------------------------------------------------------


@pytest.mark.parametrize("record", [False, True])
async def test_a_journal_that_is_a_directory_reads_as_empty_as_before(
    tmp_path: Path, record: bool
) -> None:
    paths = SessionPaths.for_identity(tmp_path, resolve_identity(KEY, None))
    paths.journal.mkdir(parents=True)
    if not record:  # state.json already names the key: the inline (Ready) path
        state_path(paths.agent_dir).write_text(f'{{"lastSessionKey": "{KEY}"}}')
    async with SessionRegistry(tmp_path) as reg:
        assert (await reg.resolve(KEY)).manager.entry_count == 0


@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("tier", [False, True])
async def test_a_linked_journal_raises_unsafe_path_on_either_path(
    tmp_path: Path, redis_server: Any, record: bool, tier: bool
) -> None:
    prefix = f"attack:{os.getpid()}:{time.monotonic_ns()}:"
    options: dict[str, Any] = {"redis_url": redis_server.url, "key_prefix": prefix} if tier else {}
    async with SessionRegistry(tmp_path, **options) as first:  # a copy in Redis, if any
        await (await first.resolve(KEY)).manager.append_entries([entry("call_1")])
    paths = SessionPaths.for_identity(tmp_path, resolve_identity(KEY, None))
    moved = tmp_path / "moved.jsonl"
    paths.journal.rename(moved)
    paths.journal.symlink_to(moved)
    if record:  # state.json names another key: the threaded (Pending) path
        state_path(paths.agent_dir).write_text('{"lastSessionKey": "agent:main:other"}')
    async with SessionRegistry(tmp_path, **options) as reg:
        with pytest.raises(UnsafePathError):
            await reg.resolve(KEY)


async def test_a_redis_copy_newer_than_the_positions_read_is_served_whole(
    tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions read before a write, the Redis copy read after it: the copy stands past
    the positions read; the answer must be the journal's (no entry lost or doubled)."""
    prefix = f"attack:{os.getpid()}:{time.monotonic_ns()}:"
    async with SessionRegistry(tmp_path, redis_url=redis_server.url, key_prefix=prefix) as w:
        m = (await w.resolve(KEY)).manager
        await m.append_entries([entry("call_1")])
        old = SessionFiles.positions
        early: list[Any] = []

        def positions_then_write(self: SessionFiles) -> Any:
            at = old(self)
            early.append(at)
            return at

        monkeypatch.setattr(SessionFiles, "positions", positions_then_write)

        async with SessionRegistry(
            tmp_path, redis_url=redis_server.url, key_prefix=prefix
        ) as reader:
            real_load = reader.tier.load_with_status  # type: ignore[attr-defined]

            async def write_first(identity: Any) -> Any:
                await m.append_entries([entry("call_2")])  # after the positions, before the read
                return await real_load(identity)

            reader.tier.load_with_status = write_first  # type: ignore[attr-defined]
            got = (await reader.resolve(KEY)).manager
            assert early, "positions were not read"
            assert got.is_processed("call_1") and got.is_processed("call_2")
            assert got.entry_count == 2
            assert got.source != "journal"  # the tier's copy, past the positions read


# --- 3. the hot path's clock -----------------------------------------------------------------


@pytest.mark.parametrize(
    "ms",
    [
        7,
        0,
        -1,
        -5,
        -1001,
        1_700_000_000_123,
        4_102_444_800_000,
    ],
)
async def test_last_access_ms_is_the_injected_clocks_reading_exactly(
    tmp_path: Path, ms: int
) -> None:
    now = [ms]
    async with SessionRegistry(tmp_path, clock_ms=lambda: now[0]) as reg:
        ctx = await reg.resolve(KEY)
        assert ctx.last_access_ms == ms
        assert await reg.resolve(KEY) is ctx
        assert ctx.last_access_ms == ms


async def test_a_backwards_clock_never_hides_a_stale_mark(tmp_path: Path) -> None:
    now = [1_000_000]
    async with SessionRegistry(tmp_path, clock_ms=lambda: now[0]) as reg:
        ctx = await reg.resolve(KEY)
        before = reg.stats.revalidations
        ctx.manager.mark_stale()
        now[0] = -(10**12)
        await reg.resolve(KEY)
        assert reg.stats.revalidations == before + 1


def test_a_mark_during_load_or_revalidate_is_never_lost() -> None:
    f = CopyFreshness()
    f._init_freshness(lambda: 0)
    seen = f._invalidations
    deadline = f._trust_deadline()
    f.mark_stale()  # the listener, between the read's start and its trust update
    f._trust(deadline, seen)
    assert f.trusted_until == STALE and f.stale


# --- 4. the retry of idempotent calls --------------------------------------------------------


def failing(n: int, error: type[BaseException] = RedisConnectionError) -> tuple[Any, list[float]]:
    calls: list[float] = []

    async def call() -> str:
        calls.append(time.perf_counter())
        if len(calls) <= n:
            raise error(f"attempt {len(calls)}")
        return "ok"

    return call, calls


async def test_idempotent_plain_success_is_one_call() -> None:
    call, calls = failing(0)
    assert await health.idempotent(call) == "ok"
    assert len(calls) == 1


@pytest.mark.parametrize("n", [1, 2])
async def test_idempotent_retries_with_the_schedule(n: int) -> None:
    call, calls = failing(n)
    assert await health.idempotent(call) == "ok"
    assert len(calls) == n + 1
    waits = [b - a for a, b in itertools.pairwise(calls)]
    assert 0.018 <= waits[0] < 0.2
    if n == 2:
        assert 0.038 <= waits[1] < 0.25


async def test_idempotent_three_attempts_then_the_last_error() -> None:
    call, calls = failing(5)
    with pytest.raises(RedisConnectionError, match="attempt 3"):
        await health.idempotent(call)
    assert len(calls) == 3


async def test_idempotent_never_retries_a_timeout() -> None:
    call, calls = failing(5, RedisTimeoutError)
    with pytest.raises(RedisTimeoutError, match="attempt 1"):
        await health.idempotent(call)
    assert len(calls) == 1


async def test_idempotent_a_timeout_after_a_reset_is_not_retried() -> None:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RedisConnectionError("reset")
        raise RedisTimeoutError("slow")

    with pytest.raises(RedisTimeoutError):
        await health.idempotent(call)
    assert len(calls) == 2


# --- 5. warm --processes ------------------------------------------------------------------------


def test_a_tier_spec_never_shows_the_password() -> None:
    spec = TierSpec("redis://user:hunter2@db.example:6379/0", "p:")
    job = _Job(spec, Path("data"), 1, 20)
    for shown in (repr(spec), str(spec), repr(job), str(job)):
        assert "hunter2" not in shown, shown


def test_a_child_that_cannot_start_fails_warm_instead_of_hanging(
    tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second child's start fails (too many open files, say): warm must raise, not wait
    forever on the first child, which no end mark will ever reach."""
    write_sessions(tmp_path, 20, 1)
    real_start = multiprocessing.process.BaseProcess.start
    started: list[int] = []

    def start(self: Any) -> None:
        started.append(1)
        if len(started) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        real_start(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(
                warm_processes(TierSpec(redis_server.url, unique_prefix()), tmp_path, processes=3)
            )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert outcome, "warm --processes hung after a child failed to start"
    assert isinstance(outcome[0], OSError)
