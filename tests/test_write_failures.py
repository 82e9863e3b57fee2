"""A claim or an append that raises leaves the files, the worker and Redis as they were.

Each case runs ``write_fault_workload.py`` in a child process with one fault armed during a
claim of 200 ids and an append of 100 entries: a full disk (a 256 KiB tmpfs in a private
mount namespace), a file size limit (``RLIMIT_FSIZE``), or ``fsync`` failing with ``EIO``.
The claim and the append must raise :class:`JournalError`, the journal and the claims record
must be byte for byte as before (a torn last line included), neither the failing worker, nor
a fresh one (loading from Redis), may show any of the failed ids, and once the fault is gone
the same ids are won and appended exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

import offload_registry
from offload_registry.testing.server import RedisServerProcess

SRC = Path(offload_registry.__file__).resolve().parents[1]
WORKLOAD = Path(__file__).with_name("write_fault_workload.py")


def _env() -> dict[str, str]:
    paths = [str(SRC), str(WORKLOAD.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _mount_namespace_command() -> list[str] | None:
    """How to run a command in a private mount namespace where it may mount a tmpfs: as
    root, ``unshare -m``; otherwise a user namespace (``unshare -rm``); ``None`` when neither
    is permitted here (the file-size limit then stands in for the full disk)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for flags in (["-m"], ["-r", "-m"]):
        probe = [unshare, *flags, "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs tmpfs "$d"']
        if subprocess.run(probe, check=False, capture_output=True, timeout=30).returncode == 0:
            return [unshare, *flags]
    return None


def _run(root: Path, server: RedisServerProcess, fault: str) -> dict[str, Any]:
    args = [sys.executable, str(WORKLOAD), str(root), server.url, f"t{uuid4().hex[:12]}", fault]
    root.mkdir()
    if fault == "tmpfs":
        namespace = _mount_namespace_command()
        assert namespace is not None
        script = 'mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"'
        args = [*namespace, "sh", "-c", script, "sh", str(root), *args]
    done = subprocess.run(args, check=False, capture_output=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
    return result


def _assert_nothing_left(result: dict[str, Any], reason: str) -> None:
    assert result["claim"].startswith("JournalError"), result
    assert reason in result["claim"], result
    assert result["append"].startswith("JournalError"), result
    assert result["files_unchanged"] == {"offload-s1.jsonl": True, "offload-s1.claims": True}
    assert result["stray_files"] == []
    assert (result["worker_shows"], result["worker_entry_count"]) == (0, 5)
    assert result["fresh_worker_source"] == "redis"
    assert (result["fresh_worker_shows"], result["fresh_worker_entry_count"]) == (0, 5)
    assert (result["won_after"], result["appended_after"]) == (200, 100)
    assert result["won_again_elsewhere"] == 0


FULL_DISK = "tmpfs" if _mount_namespace_command() is not None else "fsize"


def test_a_claim_and_an_append_on_a_full_disk_leave_nothing_behind(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    # Where no mount namespace is permitted, the file-size limit stands in (never a skip).
    result = _run(tmp_path / "root", redis_server, FULL_DISK)
    reason = os.strerror(28) if FULL_DISK == "tmpfs" else os.strerror(27)  # ENOSPC / EFBIG
    _assert_nothing_left(result, reason)


def test_a_claim_and_an_append_past_the_file_size_limit_leave_nothing_behind(
    tmp_path: Path, redis_server: RedisServerProcess
) -> None:
    _assert_nothing_left(_run(tmp_path / "root", redis_server, "fsize"), os.strerror(27))


@pytest.mark.parametrize("fault", ["fsync-once", "fsync-always"])
def test_a_claim_and_an_append_whose_fsync_fails_leave_nothing_behind(
    tmp_path: Path, redis_server: RedisServerProcess, fault: str
) -> None:
    _assert_nothing_left(_run(tmp_path / "root", redis_server, fault), os.strerror(5))
