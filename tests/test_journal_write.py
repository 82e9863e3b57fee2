"""Writing journals: appends and rewrites that are locked by the caller and crash-safe."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import offload_registry
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import TAIL_BYTES, read_journal
from offload_registry.disk.journal_mark import mark_journal
from offload_registry.disk.journal_write import append_entries_to_file, rewrite_journal
from offload_registry.disk.layout import lock_path
from offload_registry.disk.locks import file_lock
from offload_registry.errors import JournalError
from session_helpers import entry

SRC = Path(offload_registry.__file__).resolve().parents[1]


def line(tool_call_id: str, **extra: Any) -> bytes:
    return json.dumps(entry(tool_call_id, **extra), separators=(",", ":")).encode()


def ids(path: Path) -> list[str]:
    return [e["tool_call_id"] for e in read_journal(path).entries]


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }


# --- append -------------------------------------------------------------------------------


def test_append_creates_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    watermark = append_entries_to_file(path, [entry("a"), entry("b")], FsyncPolicy.ALWAYS)
    assert path.read_bytes() == line("a") + b"\n" + line("b") + b"\n"
    assert watermark.offset == path.stat().st_size
    assert watermark.identity.inode == path.stat().st_ino


def test_append_writes_every_entry_given_because_dedup_is_the_callers_job(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offload-s.jsonl"
    append_entries_to_file(path, [entry("a")], FsyncPolicy.NEVER)
    append_entries_to_file(path, [entry("a"), entry("a")], FsyncPolicy.NEVER)
    assert ids(path) == ["a", "a", "a"]


def test_append_after_a_torn_last_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    torn = line("a") + b"\n" + line("b")[:20]
    path.write_bytes(torn)
    append_entries_to_file(path, [entry("c")], FsyncPolicy.NEVER)
    assert path.read_bytes() == torn + b"\n" + line("c") + b"\n"
    read = read_journal(path)
    assert ([e["tool_call_id"] for e in read.entries], read.corrupt) == (["a", "c"], 1)


def test_append_after_a_complete_line_without_newline_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a"))
    append_entries_to_file(path, [entry("b")], FsyncPolicy.NEVER)
    assert ids(path) == ["a", "b"]


def test_append_of_nothing_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a"))
    watermark = append_entries_to_file(path, [], FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a")
    assert watermark.offset == len(line("a"))


def test_append_strips_unsafe_characters_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    append_entries_to_file(path, [entry("a\u200b", summary="x\ud800\u2028y")], FsyncPolicy.NEVER)
    text = path.read_bytes().decode("utf-8")  # strict: no surrogate reached the file
    assert json.loads(text) == entry("a", summary="xy")


def test_append_of_an_unencodable_entry_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    with pytest.raises(TypeError):
        append_entries_to_file(path, [entry("b"), entry("c", x=object())], FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a") + b"\n"


def test_append_into_a_missing_directory_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        append_entries_to_file(
            tmp_path / "nope" / "offload-s.jsonl", [entry("a")], FsyncPolicy.NEVER
        )


def test_append_watermark_lets_a_reader_continue_after_its_own_lines(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    mine = append_entries_to_file(path, [entry("a")], FsyncPolicy.NEVER)
    append_entries_to_file(path, [entry("b")], FsyncPolicy.NEVER)  # another writer
    later = read_journal(path, mine)
    assert ([e["tool_call_id"] for e in later.entries], later.replaced) == (["b"], False)


def test_append_watermark_remembers_the_last_bytes_written(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a", summary="x" * 200) + b"\n")
    watermark = append_entries_to_file(path, [entry("b")], FsyncPolicy.NEVER)
    assert watermark.tail == path.read_bytes()[-TAIL_BYTES:]


def _disk_fills_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Make ``os.write`` write at most ``room`` more bytes in all, then fail with ENOSPC."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        nonlocal room
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:room]))
        room -= written
        return written

    monkeypatch.setattr(os, "write", write)


def test_append_that_fills_the_disk_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    torn = line("a") + b"\n" + line("b")[:20]  # the added "\n" must be rolled back too
    path.write_bytes(torn)
    _disk_fills_after(monkeypatch, 300)
    with pytest.raises(JournalError, match="No space left"):
        append_entries_to_file(path, [entry(f"c{i}") for i in range(100)], FsyncPolicy.ALWAYS)
    monkeypatch.undo()
    assert path.read_bytes() == torn
    append_entries_to_file(path, [entry("d")], FsyncPolicy.NEVER)  # and later appends work
    assert ids(path) == ["a", "d"]


def test_append_whose_fsync_fails_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(JournalError, match="rolling it back failed too"):
        append_entries_to_file(path, [entry("b")], FsyncPolicy.ALWAYS)
    assert path.read_bytes() == line("a") + b"\n"  # cut back, even if not fsynced


def test_append_that_fails_removes_the_file_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    _disk_fills_after(monkeypatch, 10)
    with pytest.raises(JournalError):
        append_entries_to_file(path, [entry("a")], FsyncPolicy.NEVER)
    assert not path.exists()


def test_append_interrupted_mid_write_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    real_write, calls = os.write, 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return real_write(fd, bytes(data[:50]))

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(KeyboardInterrupt):  # not wrapped: only OSError becomes JournalError
        append_entries_to_file(path, [entry("b"), entry("c")], FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a") + b"\n"


# --- rewrite ------------------------------------------------------------------------------

MESSY = (
    b"\xef\xbb\xbf" + line("a") + b"\n"
    + line("b") + b"\r\n"
    + b"\n   \n"
    + b"{not json\n"
    + b'{"tool_call_id":42}\n'
    + b"[1,2,3]\n"
    + b'{"tool_call_id":"c","x":"\xff"}\n'
    + line("d")[:15]
)  # fmt: skip


def test_rewrite_keeps_corrupt_and_invalid_lines_verbatim_and_drops_blank_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(MESSY)
    rewrite_journal(path, lambda e: None, FsyncPolicy.NEVER)
    assert path.read_bytes() == MESSY.replace(b"\n   \n", b"") + b"\n"


def test_rewrite_changes_only_the_transformed_entries(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(MESSY)
    rewrite_journal(
        path,
        lambda e: {**e, "offloaded": "deleted"} if e["tool_call_id"] == "b" else None,
        FsyncPolicy.NEVER,
    )
    expected = MESSY.replace(line("b") + b"\r\n", line("b", offloaded="deleted") + b"\n")
    assert path.read_bytes() == expected.replace(b"\n   \n", b"") + b"\n"
    read = read_journal(path)
    assert [e.get("offloaded") for e in read.entries] == [None, "deleted", None]
    assert (read.corrupt, read.invalid) == (2, 2)


def test_rewrite_re_encodes_an_entry_changed_in_place(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line("a") + b"\r\n")

    def mark(e: dict[str, Any]) -> dict[str, Any]:
        e["offloaded"] = True
        return e

    rewrite_journal(path, mark, FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a", offloaded=True) + b"\n"


def test_rewrite_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    with file_lock(path):
        rewrite_journal(path, lambda e: {**e, "offloaded": True}, FsyncPolicy.ALWAYS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, lock_path(path).name])


def test_rewrite_that_cannot_write_its_temp_file_leaves_the_journal_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n" + line("b") + b"\n")
    _disk_fills_after(monkeypatch, 30)
    with pytest.raises(JournalError, match="No space left"):
        rewrite_journal(path, lambda e: {**e, "offloaded": True}, FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a") + b"\n" + line("b") + b"\n"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_rewrite_that_raises_leaves_the_journal_untouched(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n" + line("b") + b"\n")
    inode = path.stat().st_ino

    def boom(e: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("transform failed")

    with pytest.raises(RuntimeError):
        rewrite_journal(path, boom, FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a") + b"\n" + line("b") + b"\n"
    assert path.stat().st_ino == inode


def test_rewrite_of_a_missing_journal_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        rewrite_journal(tmp_path / "offload-s.jsonl", lambda e: e, FsyncPolicy.NEVER)


def test_rewrite_returns_the_watermark_of_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    before = read_journal(path).watermark
    after = rewrite_journal(path, lambda e: {**e, "offloaded": True}, FsyncPolicy.NEVER)
    assert after.offset == path.stat().st_size
    assert after.identity.inode == path.stat().st_ino
    assert read_journal(path, after).entries == []
    assert read_journal(path, before).replaced


# --- crash safety -------------------------------------------------------------------------

REWRITE_FOREVER = r"""
import os, sys, time
from pathlib import Path
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.locks import file_lock
from offload_registry.disk.journal_write import rewrite_journal

# Fault injection: the kernel may write part of a buffer; make every write a short 4 KiB one
# and slow, so the kills below often land mid-write instead of only mid-parse.
real_write = os.write
def short_write(fd, data):
    time.sleep(0.0005)
    return real_write(fd, bytes(data[:4096]))
os.write = short_write

path = Path(sys.argv[1])
announced = False
while True:
    with file_lock(path):
        rewrite_journal(path, lambda e: {**e, "offloaded": not e.get("offloaded")},
                        FsyncPolicy.NEVER)
    if not announced:
        print("rewriting", flush=True)
        announced = True
"""


def test_rewrite_killed_at_random_moments_leaves_the_old_or_the_new_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offload-s.jsonl"
    append_entries_to_file(
        path, [entry(f"call_{i}", score=i % 11) for i in range(2000)], FsyncPolicy.NEVER
    )
    rng = random.Random(20260203)
    # Kill children until five kills have interrupted a temp-file write (each leaves its
    # temp file behind: readers never look at it), however busy the machine is.
    kills = 0
    while len(interrupted_writes(tmp_path, path)) < 5:
        assert kills < 300, "300 kills and still fewer than 5 landed mid-write"
        kills += 1
        child = subprocess.Popen(
            [sys.executable, "-c", REWRITE_FOREVER, str(path)],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"rewriting\n"
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        read = read_journal(path)
        assert (len(read.entries), read.corrupt, read.invalid) == (2000, 0, 0)
        # Every rewrite flips every entry, so a journal mixing two rewrites would show both.
        assert len({bool(e.get("offloaded")) for e in read.entries}) == 1


def interrupted_writes(folder: Path, journal: Path) -> list[Path]:
    """Files a killed rewrite left beside the journal (its temp file), lock files aside."""
    return [p for p in folder.iterdir() if p.name != journal.name and not p.name.endswith(".lock")]


# --- concurrency --------------------------------------------------------------------------

APPEND_WORKER = r"""
import random, sys
from pathlib import Path
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.locks import file_lock
from offload_registry.disk.journal import read_journal
from offload_registry.disk.journal_write import append_entries_to_file

path, worker = Path(sys.argv[1]), int(sys.argv[2])
wanted = [f"call_{i}" for i in range(worker * 50, worker * 50 + 200)]
random.Random(worker).shuffle(wanted)
print("ready", flush=True)
sys.stdin.readline()  # start together
known, watermark = set(), None
for start in range(0, len(wanted), 10):
    with file_lock(path):
        # lock=False: we hold the exclusive lock, and flock would make us wait for ourselves.
        read = read_journal(path, watermark, lock=False)
        if read.replaced:
            known = set()
        known.update(e["tool_call_id"] for e in read.entries)
        fresh = [{"tool_call_id": i, "worker": worker} for i in wanted[start:start + 10]
                 if i not in known]
        watermark = read.watermark
        if fresh:
            watermark = append_entries_to_file(path, fresh, FsyncPolicy.NEVER)
            known.update(e["tool_call_id"] for e in fresh)
"""


def test_concurrent_locked_appends_write_every_id_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", APPEND_WORKER, str(path), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        for n in range(4)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        worker.stdin.close()
    for worker in workers:
        assert worker.wait(60) == 0
        assert worker.stdout is not None
        worker.stdout.close()
    read = read_journal(path)
    written = [e["tool_call_id"] for e in read.entries]
    assert sorted(written) == sorted(f"call_{i}" for i in range(350))
    assert (read.corrupt, read.invalid) == (0, 0)
    assert len({e["worker"] for e in read.entries}) > 1


# --- status marks -------------------------------------------------------------------------


def test_mark_keeps_blank_corrupt_invalid_and_unnamed_lines_byte_for_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(MESSY)
    result = mark_journal(path, {"b": "deleted", "c": True}, FsyncPolicy.NEVER)
    expected = (
        MESSY.replace(line("b") + b"\r\n", line("b")[:-1] + b',"offloaded":"deleted"}\n').replace(
            b'"x":"\xff"}', b'"x":"\xef\xbf\xbd","offloaded":true}'
        )  # as read: U+FFFD
        + b"\n"  # the torn last piece becomes a line of its own
    )
    assert path.read_bytes() == expected
    assert (result.changed, result.corrupt, result.invalid) == (2, 2, 2)
    assert result.ids == ["a", "b", "c"]
    assert result.statuses == [("b", "deleted"), ("c", True)]
    assert read_journal(path, result.watermark).entries == []


def test_mark_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(MESSY)
    before = path.stat()
    result = mark_journal(path, {"a": None, "zzz": True}, FsyncPolicy.ALWAYS)
    assert result.changed == 0 and path.read_bytes() == MESSY
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert result.watermark is not None and result.watermark.offset == len(MESSY)


def test_mark_that_cannot_write_leaves_the_journal_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    _disk_fills_after(monkeypatch, 10)
    with pytest.raises(JournalError, match="No space left"):
        mark_journal(path, {"a": True}, FsyncPolicy.ALWAYS)
    assert path.read_bytes() == line("a") + b"\n"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_mark_of_an_unencodable_status_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "offload-s.jsonl"
    path.write_bytes(line("a") + b"\n")
    with pytest.raises(TypeError):
        mark_journal(path, {"a": object()}, FsyncPolicy.NEVER)
    assert path.read_bytes() == line("a") + b"\n"


APPEND_FOREVER = r"""
import os, sys, time
from pathlib import Path
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.locks import file_lock
from offload_registry.disk.journal_write import append_entries_to_file

# Short, slow writes, so the kills below land mid-batch.
real_write = os.write
def short_write(fd, data):
    time.sleep(0.0005)
    return real_write(fd, bytes(data[:512]))
os.write = short_write

path, batch = Path(sys.argv[1]), 0
while True:
    with file_lock(path):
        entries = [{"tool_call_id": f"k{os.getpid()}_{batch}_{i}", "summary": "s" * 100}
                   for i in range(100)]
        append_entries_to_file(path, entries, FsyncPolicy.NEVER)
    if batch == 0:
        print("appending", flush=True)
    batch += 1
"""


def test_append_killed_mid_batch_leaves_whole_lines_and_the_next_append_isolates_the_rest(
    tmp_path: Path,
) -> None:
    # The rule for a kill (no rollback runs): the old file plus a prefix of the batch, whose
    # whole lines count, and at most one torn line, fenced off by the next append's "\n".
    path = tmp_path / "offload-s.jsonl"
    append_entries_to_file(path, [entry("first")], FsyncPolicy.NEVER)
    rng = random.Random(20261202)
    for kill in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", APPEND_FOREVER, str(path)],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"appending\n"
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        with file_lock(path):
            append_entries_to_file(path, [entry(f"after_{kill}")], FsyncPolicy.NEVER)
        read = read_journal(path)
        assert read.invalid == 0 and read.corrupt <= kill + 1
        written = [e["tool_call_id"] for e in read.entries]
        assert written[0] == "first" and written[-1] == f"after_{kill}"
        killed = [e for e in read.entries if e["tool_call_id"].startswith("k")]
        assert all(e["summary"] == "s" * 100 for e in killed)
    # Proof the kills hit batches mid-line (each such kill left one torn, corrupt line).
    assert read.corrupt >= 3
