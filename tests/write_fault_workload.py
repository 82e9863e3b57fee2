"""A claim and an append that fail mid-write, run in a child process (see test_write_failures).

Usage: ``python write_fault_workload.py DATA_ROOT REDIS_URL KEY_PREFIX FAULT`` where FAULT is
``tmpfs`` (DATA_ROOT is a small tmpfs of this child's own mount namespace: the disk fills),
``fsize`` (``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored: writes past the limit get ``EFBIG``),
``fsync-once`` (the next ``os.fsync`` raises ``EIO``) or ``fsync-always`` (every ``os.fsync``
raises ``EIO``, the rollback's too). Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offload_registry import SessionRegistry
from offload_registry.errors import JournalError

KEY = "agent:main:s1"
FREE = 8192
"""Bytes a write may still add when the fault is armed (the batches below are larger)."""

root, url, prefix, fault = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
journal = root / "main" / "offload-s1.jsonl"
claims = root / "main" / "offload-s1.claims"


def entry(name: str) -> dict[str, Any]:
    return {"tool_call_id": name, "summary": "s" * 150, "offloaded": None}


@contextlib.contextmanager
def armed(target: Path) -> Iterator[None]:
    """The fault, armed so that a write of more than ``FREE`` bytes to ``target`` fails."""
    if fault == "tmpfs":
        filler = root / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        size = filler.stat().st_size
        os.truncate(filler, max(size - FREE, 0))
        try:
            yield
        finally:
            filler.unlink()
    elif fault == "fsize":
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (target.stat().st_size + FREE, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    else:
        real_fsync, calls = os.fsync, 0

        def failing_fsync(fd: Any) -> None:
            nonlocal calls
            calls += 1
            if fault == "fsync-always" or calls == 1:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fsync(fd)

        os.fsync = failing_fsync
        try:
            yield
        finally:
            os.fsync = real_fsync


async def attempt(call: Any) -> str:
    try:
        await call
    except JournalError as exc:
        return f"JournalError: {exc.reason}"
    except Exception as exc:  # reported, so the test shows what else it was
        return f"{type(exc).__name__}: {exc}"
    return "returned"


async def main() -> dict[str, Any]:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past RLIMIT_FSIZE: EFBIG, not death
    out: dict[str, Any] = {}
    claim_ids = [f"c_{i}" for i in range(200)]
    append_ids = [f"a_{i}" for i in range(100)]
    async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as reg:
        manager = (await reg.resolve(KEY)).manager
        await manager.append_entries([entry(f"pre_{i}") for i in range(5)])
        await manager.claim([f"pre_claim_{i}" for i in range(5)])
        with journal.open("ab") as f:  # a torn last line, as a writer killed mid-line leaves
            f.write(b'{"tool_call_id":"torn')
        files_before = {p.name: p.read_bytes() for p in (journal, claims)}

        with armed(claims):
            out["claim"] = await attempt(manager.claim(claim_ids))
        with armed(journal):
            out["append"] = await attempt(manager.append_entries([entry(i) for i in append_ids]))

        out["files_unchanged"] = {
            p.name: p.read_bytes() == files_before[p.name] for p in (journal, claims)
        }
        out["stray_files"] = sorted(
            p.name for p in journal.parent.iterdir() if ".tmp-" in p.name or p.name == "filler"
        )
        failed = claim_ids + append_ids
        out["worker_shows"] = sum(manager.is_processed(i) for i in failed)
        out["worker_entry_count"] = manager.entry_count
        async with SessionRegistry(root, redis_url=url, key_prefix=prefix) as fresh:
            other = (await fresh.resolve(KEY)).manager
            out["fresh_worker_source"] = other.source
            out["fresh_worker_shows"] = sum(other.is_processed(i) for i in failed)
            out["fresh_worker_entry_count"] = other.entry_count
            # With the fault gone, the failed ids are there for the taking, once.
            out["won_after"] = len(await manager.claim(claim_ids))
            out["appended_after"] = await manager.append_entries([entry(i) for i in append_ids])
            out["won_again_elsewhere"] = len(await other.claim(claim_ids))
    return out


print(json.dumps(asyncio.run(main())), flush=True)
