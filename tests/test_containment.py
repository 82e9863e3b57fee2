"""Nothing planted inside the data root makes the registry write outside it, or hang.

Links below the data root are refused (only the root itself may be a link), temp files get
random names created exclusively, a FIFO where a file should be is refused at once, and new
files and directories are private to the owner unless configured otherwise.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload_registry.disk import fsutil
from offload_registry.disk.agent_files import update_agent_state
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import read_journal
from offload_registry.disk.layout import STATE_FILE, data_root_id
from offload_registry.errors import ConfigurationError, UnsafePathError
from offload_registry.ops.discover import iter_sessions
from offload_registry.sync import SessionRegistry
from session_helpers import entry

KEY = "agent:main:s1"
OUTSIDE = b"precious bytes outside the data root\n"
# A FIFO test must fail, not hang the suite, if a blocking open comes back.
FIFO_DEADLINE_S = 60


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "main").mkdir(parents=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.txt"
    target.write_bytes(OUTSIDE)
    return target


def seed_journal(root: Path) -> Path:
    """A session with one entry, written by the registry itself."""
    with SessionRegistry(root, fsync="never") as reg:
        reg.resolve(KEY).manager.append_entries([entry("t1")])
    return root / "main" / "offload-s1.jsonl"


# --- planted links ------------------------------------------------------------------------


def test_a_journal_linked_outside_the_root_is_refused_not_appended_to(
    root: Path, outside: Path
) -> None:
    (root / "main" / "offload-s1.jsonl").symlink_to(outside)
    with SessionRegistry(root, fsync="never") as reg, pytest.raises(UnsafePathError):
        reg.resolve(KEY).manager.append_entries([entry("t1")])
    assert outside.read_bytes() == OUTSIDE


def test_a_journal_link_planted_after_load_is_refused_on_append(root: Path, outside: Path) -> None:
    with SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager  # no journal yet: nothing to refuse
        (root / "main" / "offload-s1.jsonl").symlink_to(outside)
        with pytest.raises(UnsafePathError):
            manager.append_entries([entry("t1")])
    assert outside.read_bytes() == OUTSIDE


def test_a_claims_record_linked_outside_the_root_is_refused_not_appended_to(
    root: Path, outside: Path
) -> None:
    seed_journal(root)
    with SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager
        (root / "main" / "offload-s1.claims").symlink_to(outside)
        with pytest.raises(UnsafePathError):
            manager.claim(["c1"])
    assert outside.read_bytes() == OUTSIDE


def test_a_lock_file_linked_outside_the_root_is_refused_not_overwritten(
    root: Path, outside: Path
) -> None:
    journal = seed_journal(root)
    lock = journal.with_name(".offload-s1.jsonl.lock")
    lock.unlink()
    lock.symlink_to(outside)
    with SessionRegistry(root, fsync="never") as reg, pytest.raises(UnsafePathError):
        reg.resolve(KEY).manager.mark_offload_status({"t1": True})
    assert outside.read_bytes() == OUTSIDE


def test_a_lease_record_linked_outside_the_root_is_refused_not_replaced(
    root: Path, outside: Path
) -> None:
    (root / "main" / "offload-s1.lease").symlink_to(outside)
    with SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager
        with pytest.raises(UnsafePathError):
            manager.acquire_lease(5.0)
    assert outside.read_bytes() == OUTSIDE
    assert (root / "main" / "offload-s1.lease").is_symlink()


def test_an_mmds_directory_linked_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "maps"
    elsewhere.mkdir()
    (elsewhere / "99-outside.mmd").write_text("graph")
    (root / "main" / "mmds").symlink_to(elsewhere, target_is_directory=True)
    with SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager
        with pytest.raises(UnsafePathError):
            manager.allocate_mmd_number()


def test_mark_never_writes_through_a_link_at_the_old_predictable_temp_name(
    root: Path, outside: Path
) -> None:
    journal = seed_journal(root)
    journal.with_name(f".{journal.name}.tmp-{os.getpid()}").symlink_to(outside)
    with SessionRegistry(root, fsync="never") as reg:
        manager = reg.resolve(KEY).manager
        assert manager.mark_offload_status({"t1": True}) == 1
        assert manager.confirmed_offload_ids == {"t1"}
    assert outside.read_bytes() == OUTSIDE
    assert not journal.is_symlink() and b'"offloaded":true' in journal.read_bytes()


def test_temp_file_names_are_unpredictable_and_a_failed_replace_leaves_none(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = seed_journal(root)
    tried: list[str] = []

    def failing_replace(src: str | Path, dst: str | Path, **kwargs: object) -> None:
        tried.append(os.fspath(src))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", failing_replace)
    for _ in range(2):
        with pytest.raises(OSError, match="No space left"):
            fsutil.atomic_write_bytes(journal, b"new\n", FsyncPolicy.NEVER)
    assert len(tried) == 2 and tried[0] != tried[1]
    assert not any(name.endswith(f"-{os.getpid()}") for name in tried)
    assert [p.name for p in journal.parent.iterdir() if ".tmp-" in p.name] == []


def test_state_json_linked_outside_the_root_is_refused_not_read_or_replaced(
    root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"mmdCounter": 41}')
    (root / "main" / STATE_FILE).symlink_to(secret)
    with pytest.raises(UnsafePathError):
        update_agent_state(root / "main", lambda s: s, FsyncPolicy.NEVER)
    with SessionRegistry(root, fsync="never") as reg, pytest.raises(UnsafePathError):
        reg.resolve(KEY)  # records the key in state.json
    assert (root / "main" / STATE_FILE).is_symlink()
    assert secret.read_text() == '{"mmdCounter": 41}'


def test_an_agent_directory_linked_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    with SessionRegistry(root, fsync="never") as reg, pytest.raises(UnsafePathError):
        reg.resolve("agent:linked:s1").manager.append_entries([entry("t1")])
    with SessionRegistry(root, read_only=True) as reg, pytest.raises(UnsafePathError):
        reg.resolve("agent:linked:s1")
    assert list(elsewhere.iterdir()) == []


def test_scans_of_the_data_root_skip_linked_agents_and_journals(
    root: Path, tmp_path: Path, outside: Path
) -> None:
    seed_journal(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "offload-x.jsonl").write_bytes(b"")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "main" / "offload-s2.jsonl").symlink_to(outside)
    found = [str(s) for s in iter_sessions(root)]
    assert found == ["agent:main:s1"]  # (a session prints as its pasteable key)


def test_the_data_root_id_file_linked_outside_is_refused(root: Path, outside: Path) -> None:
    (root / ".offload-registry-id").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        data_root_id(root, create=True)
    assert outside.read_bytes() == OUTSIDE


def test_read_journal_refuses_a_link_even_to_a_valid_journal(root: Path) -> None:
    journal = seed_journal(root)
    (root / "main" / "offload-s2.jsonl").symlink_to(journal)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_journal(root / "main" / "offload-s2.jsonl")


# --- FIFOs --------------------------------------------------------------------------------


def _run_quickly(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child (a blocked ``open`` would pin a thread of ours forever)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(root)],
        capture_output=True,
        text=True,
        timeout=FIFO_DEADLINE_S,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


@pytest.mark.parametrize(
    "name", ["offload-s1.jsonl", "offload-s1.claims", ".offload-s1.jsonl.lock"]
)
def test_resolve_refuses_a_fifo_in_place_of_a_session_file_without_hanging(
    root: Path, name: str
) -> None:
    os.mkfifo(root / "main" / name)
    done = _run_quickly(
        """
        import asyncio, sys
        from offload_registry import SessionRegistry
        from offload_registry.errors import UnsafePathError

        async def main():
            async with SessionRegistry(sys.argv[1], fsync="never") as reg:
                try:
                    await asyncio.wait_for(reg.resolve("agent:main:s1"), 5)
                except UnsafePathError as exc:
                    print("refused:", exc)

        asyncio.run(main())
        """,
        root,
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "a FIFO, not a regular file" in done.stdout


@pytest.mark.parametrize("name", ["offload-s1.jsonl", "offload-s1.claims"])
def test_inspect_refuses_a_fifo_in_place_of_a_session_file_without_hanging(
    root: Path, name: str
) -> None:
    os.mkfifo(root / "main" / name)
    cli = [sys.executable, "-m", "offload_registry.cli.main"]
    done = subprocess.run(
        [*cli, "--data-root", str(root), "inspect", KEY],
        capture_output=True,
        text=True,
        timeout=FIFO_DEADLINE_S,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("offload-registry: error: ")
    assert done.stderr.strip().endswith("refused: it is a FIFO, not a regular file")


# --- a linked data root, permissions --------------------------------------------------------


def test_the_data_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    link = tmp_path / "root-link"
    link.symlink_to(real, target_is_directory=True)
    with SessionRegistry(link, fsync="always") as reg:
        manager = reg.resolve(KEY).manager
        manager.append_entries([entry("t1"), entry("t2")])
        manager.claim(["c1"])
        manager.mark_offload_status({"t1": True})
        manager.allocate_mmd_number()
    with SessionRegistry(link, read_only=True) as reg:
        manager = reg.resolve(KEY).manager
        assert manager.confirmed_offload_ids == {"t1"} and manager.entry_count == 2
    assert (real / "main" / "offload-s1.jsonl").is_file()
    assert (real / "main" / "offload-s1.claims").is_file()
    assert (real / "main" / STATE_FILE).is_file()


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
    }


def test_new_files_are_private_to_the_owner_by_default(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    with SessionRegistry(root) as reg:
        manager = reg.resolve(KEY, "real-1").manager
        manager.append_entries([entry("t1")])
        manager.claim(["c1"])
        manager.mark_offload_status({"t1": True})
    modes = _modes(root)
    assert {"main/offload-real-1.jsonl", "main/.offload-real-1.jsonl.lock"} <= modes.keys()
    assert {"main/state.json", "main/sessions-registry.json"} <= modes.keys()
    for name, mode in modes.items():
        want = 0o700 if (root / name).is_dir() else 0o600
        assert mode == want, f"{name}: {oct(mode)}"


def test_the_file_mode_is_configurable(tmp_path: Path) -> None:
    root = tmp_path / "group-readable"
    with SessionRegistry(root, file_mode=0o640) as reg:
        manager = reg.resolve(KEY).manager
        manager.append_entries([entry("t1")])
        manager.mark_offload_status({"t1": True})
    modes = _modes(root)
    assert modes["main"] == 0o750 and modes["main/offload-s1.jsonl"] == 0o640
    assert modes["main/state.json"] == 0o640
    with pytest.raises(ConfigurationError):
        SessionRegistry(root, file_mode=0o044)


def test_a_descriptor_from_the_safe_open_layer_blocks_normally(root: Path) -> None:
    journal = seed_journal(root)
    fd = fsutil.safe_open(journal, os.O_RDWR | os.O_APPEND)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert not flags & os.O_NONBLOCK and flags & os.O_APPEND
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)
