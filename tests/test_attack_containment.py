"""Adversarial review of "Hostile data roots" (issue 12, finding 4): hard links, races
between the safe open and a later use by path, and special files."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from offload_registry import SessionRegistry
from offload_registry.disk import fsutil
from offload_registry.disk import journal as journal_module
from offload_registry.errors import UnsafePathError
from session_helpers import entry

KEY = "agent:main:s1"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    return place


@pytest.fixture
def root(tmp_path: Path) -> Path:
    place = tmp_path / "root"
    (place / "main").mkdir(parents=True)
    return place


async def test_a_journal_hard_linked_to_a_file_outside_the_root_is_not_written_through(
    root: Path, outside: Path
) -> None:
    victim = outside / "precious.txt"
    victim.write_bytes(b"precious\n")
    os.link(victim, root / "main" / "offload-s1.jsonl")
    async with SessionRegistry(root) as reg:
        manager = (await reg.resolve(KEY)).manager
        with pytest.raises(UnsafePathError):
            await manager.append_entries([entry("x")])
    assert victim.read_bytes() == b"precious\n"


async def test_a_lock_file_hard_linked_outside_the_root_is_not_overwritten_by_a_mark(
    root: Path, outside: Path
) -> None:
    async with SessionRegistry(root) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("x")])
    lock = root / "main" / ".offload-s1.jsonl.lock"
    lock.unlink()
    victim = outside / "precious.txt"
    victim.write_bytes(b"precious data\n")
    os.link(victim, lock)
    async with SessionRegistry(root) as reg:
        manager = (await reg.resolve(KEY)).manager
        with contextlib.suppress(UnsafePathError):
            await manager.mark_offload_status({"x": True})
    assert victim.read_bytes() == b"precious data\n"


async def test_the_rollback_of_a_failed_append_never_deletes_outside_the_root(
    root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = outside / "offload-s1.jsonl"
    victim.write_bytes(b'{"tool_call_id":"precious"}\n')
    agent = root / "main"
    real_fsync = os.fsync

    def swap_then_fail(fd: int) -> None:
        # A bad day: after the journal was created, someone swaps the agent directory for a
        # link, and the disk then fails the fsync, so the append rolls back.
        if not agent.is_symlink():
            agent.rename(root / "main.moved")
            agent.symlink_to(outside)
            raise OSError(errno.EIO, "injected EIO")
        real_fsync(fd)

    async with SessionRegistry(root) as reg:
        manager = (await reg.resolve(KEY)).manager
        monkeypatch.setattr(journal_module.os, "fsync", swap_then_fail)
        with pytest.raises(OSError):
            await manager.append_entries([entry("x")])
        monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    assert victim.exists(), "the rollback deleted a file outside the data root"


@pytest.mark.parametrize("kind", ["socket", "directory", "symlink-to-dev-null"])
async def test_a_special_file_as_the_claims_record_is_refused_and_nothing_is_won(
    root: Path, kind: str
) -> None:
    claims = root / "main" / "offload-s1.claims"
    holder: Any = None
    if kind == "socket":
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(claims))
    elif kind == "directory":
        claims.mkdir()
    else:
        claims.symlink_to("/dev/null")
    try:
        async with SessionRegistry(root) as reg:
            with pytest.raises(UnsafePathError):  # at resolve: the record is read first
                manager = (await reg.resolve(KEY)).manager
                await manager.claim(["x"])
    finally:
        if holder is not None:
            holder.close()


async def test_a_dangling_link_as_the_journal_is_never_created_through(
    root: Path, outside: Path
) -> None:
    target = outside / "created-through-link.jsonl"
    (root / "main" / "offload-s1.jsonl").symlink_to(target)
    async with SessionRegistry(root) as reg:
        with pytest.raises(UnsafePathError):
            manager = (await reg.resolve(KEY)).manager
            await manager.append_entries([entry("x")])
    assert not target.exists()


async def test_a_dangling_link_as_a_lock_file_is_never_created_through(
    root: Path, outside: Path
) -> None:
    target = outside / "lock-created-through-link"
    (root / "main" / ".offload-s1.jsonl.lock").symlink_to(target)
    async with SessionRegistry(root) as reg:
        with pytest.raises(UnsafePathError):
            manager = (await reg.resolve(KEY)).manager
            await manager.append_entries([entry("x")])
    assert not target.exists()


async def test_a_directory_planted_as_the_state_lock_file_is_refused_as_unsafe(root: Path) -> None:
    (root / "main" / ".state.json.lock").mkdir()
    async with SessionRegistry(root) as reg:
        # Refused as a link or FIFO there is, at the resolve that records the session in
        # state.json: a typed error (one line from the CLI), never a bare IsADirectoryError.
        with pytest.raises(UnsafePathError):
            await reg.resolve(KEY)


async def test_a_mark_that_fails_on_a_full_disk_leaves_the_journal_and_the_worker_as_they_were(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held (guarantee 3, for marks): ENOSPC while the temp file is written leaves no temp
    file, the journal byte for byte, the worker's sets unchanged, and a retry works."""
    async with SessionRegistry(root) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry("a"), entry("b")])
        journal = root / "main" / "offload-s1.jsonl"
        before = journal.read_bytes()
        listing = sorted(p.name for p in (root / "main").iterdir())
        real_write = os.write

        def full_disk(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(fsutil.os, "write", full_disk)
        with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
            await manager.mark_offload_status({"a": True})
        monkeypatch.setattr(fsutil.os, "write", real_write)
        assert journal.read_bytes() == before
        assert sorted(p.name for p in (root / "main").iterdir()) == listing
        assert "a" not in manager.confirmed_offload_ids
        assert await manager.mark_offload_status({"a": True}) == 1
        assert "a" in manager.confirmed_offload_ids
