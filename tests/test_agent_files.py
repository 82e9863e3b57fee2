"""Specification tests for ``offload_registry.disk.agent_files`` (state.json,
sessions-registry.json, MMD numbering), including the seed's lost-update defect across processes."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from offload_registry.disk import agent_files
from offload_registry.disk.agent_files import (
    AgentState,
    SessionRecord,
    allocate_mmd_number,
    format_iso_ms,
    next_mmd_number,
    read_agent_state,
    read_session_registry,
    register_session,
    update_agent_state,
)
from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.layout import MMDS_DIR, REGISTRY_FILE, STATE_FILE
from offload_registry.errors import JournalError, UnsafePathError
from seed_sample import SAMPLE_ROOT

SAMPLE_STATE_FILES = sorted(SAMPLE_ROOT.glob(f"*/{STATE_FILE}"))
FIXED_NOW = datetime(2026, 11, 25, 21, 31, 20, 953_123, tzinfo=UTC)
NEVER = FsyncPolicy.NEVER


def fixed_clock(moment: datetime = FIXED_NOW) -> Callable[[], datetime]:
    return lambda: moment


def copy_sample_agent(name: str, tmp_path: Path) -> Path:
    agent_dir = tmp_path / name
    shutil.copytree(SAMPLE_ROOT / name, agent_dir)
    for path in agent_dir.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    agent_dir.chmod(0o755)
    return agent_dir


def write_state(agent_dir: Path, content: str | bytes) -> Path:
    agent_dir.mkdir(parents=True, exist_ok=True)
    path = agent_dir / STATE_FILE
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def file_identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# ------------------------------------------------------------------------------ reading state


def test_read_agent_state_gives_defaults_when_file_missing(tmp_path: Path) -> None:
    assert read_agent_state(tmp_path / "nobody") == AgentState()


@pytest.mark.parametrize("content", [b"{not json", b'{"mmdCounter": 1', b"", b"\xff\xfe{}"])
def test_read_agent_state_gives_defaults_and_warns_when_file_is_corrupt(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    write_state(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger=agent_files.__name__):
        assert read_agent_state(tmp_path) == AgentState()
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("content", ["[]", "null", '"state"', "3", "true"])
def test_read_agent_state_gives_defaults_when_json_is_not_an_object(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_state(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger=agent_files.__name__):
        assert read_agent_state(tmp_path) == AgentState()
    assert any("not an object" in r.getMessage() for r in caplog.records)


def test_read_agent_state_rejects_nan_tokens_as_corrupt(tmp_path: Path) -> None:
    write_state(tmp_path, '{"mmdCounter": 5, "estimatedSystemOverhead": NaN}')
    assert read_agent_state(tmp_path) == AgentState()


def test_read_agent_state_refuses_a_directory_in_place_of_the_file(tmp_path: Path) -> None:
    # Not a regular file: refused with a typed error (see test_containment.py), not guessed.
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(UnsafePathError, match="a directory, not a regular file"):
        read_agent_state(tmp_path)


def test_read_agent_state_accepts_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    write_state(tmp_path, b'\xef\xbb\xbf{"mmdCounter": 7}')
    assert read_agent_state(tmp_path).mmd_counter == 7


def test_read_agent_state_reads_the_sample_ops_state(tmp_path: Path) -> None:
    state = read_agent_state(SAMPLE_ROOT / "ops")
    assert state == AgentState(last_session_key="agent:ops:x:y:z")


@pytest.mark.parametrize("path", SAMPLE_STATE_FILES, ids=lambda p: p.parent.name)
def test_read_agent_state_round_trips_every_sample_state_to_the_same_json(path: Path) -> None:
    state = read_agent_state(path.parent)
    assert state.to_json_dict() == json.loads(path.read_text(encoding="utf-8"))
    assert state.last_session_key is not None
    assert state.last_session_key.startswith("agent:")


# --------------------------------------------------------------------------- AgentState JSON


def test_to_json_dict_uses_the_seeds_camel_case_keys_in_the_seeds_order() -> None:
    assert list(AgentState().to_json_dict()) == [
        "activeMmdFile",
        "activeMmdId",
        "mmdCounter",
        "lastSessionKey",
        "lastOffloadedToolCallId",
        "lastL2TriggerTime",
        "estimatedSystemOverhead",
    ]


def test_from_json_dict_reads_every_field() -> None:
    state = AgentState.from_json_dict(
        {
            "activeMmdFile": "3-plan.mmd",
            "activeMmdId": "m3",
            "mmdCounter": 3,
            "lastSessionKey": "agent:a:b",
            "lastOffloadedToolCallId": "call_9",
            "lastL2TriggerTime": 1764106280953,
            "estimatedSystemOverhead": 1234.5,
        }
    )
    assert state == AgentState("3-plan.mmd", "m3", 3, "agent:a:b", "call_9", 1764106280953, 1234.5)


@pytest.mark.parametrize(
    ("key", "bad_value", "attr"),
    [
        ("activeMmdFile", 5, "active_mmd_file"),
        ("activeMmdId", ["x"], "active_mmd_id"),
        ("mmdCounter", "7", "mmd_counter"),
        ("mmdCounter", True, "mmd_counter"),
        ("mmdCounter", -2, "mmd_counter"),
        ("mmdCounter", 2.5, "mmd_counter"),
        ("lastSessionKey", {"k": 1}, "last_session_key"),
        ("lastOffloadedToolCallId", False, "last_offloaded_tool_call_id"),
        ("lastL2TriggerTime", {"at": 1}, "last_l2_trigger_time"),
        ("estimatedSystemOverhead", "big", "estimated_system_overhead"),
        ("estimatedSystemOverhead", True, "estimated_system_overhead"),
    ],
)
def test_from_json_dict_uses_the_default_for_a_field_of_the_wrong_type(
    key: str, bad_value: object, attr: str, caplog: pytest.LogCaptureFixture
) -> None:
    other = "activeMmdId" if key == "activeMmdFile" else "activeMmdFile"
    with caplog.at_level(logging.DEBUG, logger=agent_files.__name__):
        state = AgentState.from_json_dict({key: bad_value, other: "kept"})
    assert getattr(state, attr) == getattr(AgentState(), attr)
    assert "kept" in (state.active_mmd_file, state.active_mmd_id)  # other fields still read
    assert any(r.levelno == logging.DEBUG and key in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", [1764106280953, 1.5, "2026-11-25T21:31:20.953Z", True, None])
def test_from_json_dict_keeps_the_json_type_of_last_l2_trigger_time(value: object) -> None:
    state = AgentState.from_json_dict({"lastL2TriggerTime": value})
    assert state.last_l2_trigger_time == value
    assert type(state.last_l2_trigger_time) is type(value)


def test_from_json_dict_reads_an_integral_float_counter_as_an_integer() -> None:
    state = AgentState.from_json_dict({"mmdCounter": 4.0})
    assert state.mmd_counter == 4
    assert type(state.mmd_counter) is int


# ---------------------------------------------------------------------------- updating state


def test_update_that_restores_the_same_values_writes_the_fixtures_exact_bytes(
    tmp_path: Path,
) -> None:
    agent_dir = copy_sample_agent("ops", tmp_path)
    original = (agent_dir / STATE_FILE).read_bytes()

    update_agent_state(
        agent_dir, lambda s: dataclasses.replace(s, last_session_key="agent:ops:other"), NEVER
    )
    assert (agent_dir / STATE_FILE).read_bytes() != original
    update_agent_state(
        agent_dir, lambda s: dataclasses.replace(s, last_session_key="agent:ops:x:y:z"), NEVER
    )

    assert (agent_dir / STATE_FILE).read_bytes() == original


def test_update_creates_the_agent_dir_and_writes_the_seed_format(tmp_path: Path) -> None:
    agent_dir = tmp_path / "root" / "fresh"

    new = update_agent_state(
        agent_dir,
        lambda s: dataclasses.replace(s, last_session_key="agent:fresh:ü"),
        FsyncPolicy.ALWAYS,
    )

    assert new.last_session_key == "agent:fresh:ü"
    expected = json.dumps(new.to_json_dict(), indent=2, ensure_ascii=False).encode()
    assert (agent_dir / STATE_FILE).read_bytes() == expected
    assert b"\xc3\xbc" in expected  # raw UTF-8, not \u00fc
    assert not expected.endswith(b"\n")


def test_update_returns_the_new_state_and_a_later_read_sees_it(tmp_path: Path) -> None:
    new = update_agent_state(
        tmp_path, lambda s: dataclasses.replace(s, active_mmd_file="1-x.mmd"), FsyncPolicy.ALWAYS
    )
    assert new == AgentState(active_mmd_file="1-x.mmd")
    assert read_agent_state(tmp_path) == new


def test_update_preserves_unknown_keys_after_the_known_ones(tmp_path: Path) -> None:
    write_state(
        tmp_path,
        json.dumps({"futureField": {"nested": [1, 2]}, "mmdCounter": 1, "zeta": "z"}, indent=2),
    )

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=2), NEVER)

    written = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    assert written["futureField"] == {"nested": [1, 2]}
    assert written["zeta"] == "z"
    assert written["mmdCounter"] == 2
    assert list(written)[-2:] == ["futureField", "zeta"]


def test_update_keeps_the_raw_value_of_a_field_it_did_not_change(tmp_path: Path) -> None:
    write_state(tmp_path, '{"activeMmdId": 42, "mmdCounter": 1}')

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=2), NEVER)

    written = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    assert written["activeMmdId"] == 42


def test_update_does_not_write_when_nothing_changes(tmp_path: Path) -> None:
    path = write_state(tmp_path, json.dumps({"mmdCounter": 3, "extra": 1}))
    before = file_identity(path)

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=3), NEVER)

    assert file_identity(path) == before


def test_update_writes_when_only_the_json_type_changes(tmp_path: Path) -> None:
    write_state(tmp_path, '{"lastL2TriggerTime": 1}')

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, last_l2_trigger_time=True), NEVER)

    assert read_agent_state(tmp_path).last_l2_trigger_time is True


def test_update_does_not_create_the_file_when_nothing_changes(tmp_path: Path) -> None:
    update_agent_state(tmp_path, lambda s: s, NEVER)
    assert not (tmp_path / STATE_FILE).exists()


def test_update_of_a_corrupt_state_keeps_a_copy_of_the_corrupt_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_state(tmp_path, b"{torn")
    ms = (FIXED_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

    with caplog.at_level(logging.WARNING, logger=agent_files.__name__):
        update_agent_state(
            tmp_path, lambda s: dataclasses.replace(s, mmd_counter=1), NEVER, now=fixed_clock()
        )

    assert (tmp_path / f"{STATE_FILE}.corrupt-{ms}").read_bytes() == b"{torn"
    assert read_agent_state(tmp_path).mmd_counter == 1
    assert any("kept a copy" in r.getMessage() for r in caplog.records)


def test_read_agent_state_decodes_a_bad_utf8_byte_as_u_fffd_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    # Node's readFile(..., "utf-8") replaces each invalid sequence with U+FFFD; the seed then
    # parses the JSON and keeps every field. Dropping the whole file loses the other fields.
    write_state(tmp_path, b'{"mmdCounter": 3, "lastSessionKey": "x\xffy", "activeMmdId": "m1"}')
    state = read_agent_state(tmp_path)
    assert (state.mmd_counter, state.last_session_key, state.active_mmd_id) == (
        3,
        "x\ufffdy",
        "m1",
    )


def test_update_of_a_state_with_a_bad_utf8_byte_keeps_its_fields_and_a_copy_of_the_bytes(
    tmp_path: Path,
) -> None:
    raw = b'{"mmdCounter": 3, "lastSessionKey": "x\xffy", "extra": "\xc3"}'
    write_state(tmp_path, raw)
    ms = (FIXED_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    update_agent_state(
        tmp_path, lambda s: dataclasses.replace(s, active_mmd_id="m2"), NEVER, now=fixed_clock()
    )
    written = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    assert (written["mmdCounter"], written["lastSessionKey"], written["activeMmdId"]) == (
        3,
        "x\ufffdy",
        "m2",
    )
    assert written["extra"] == "\ufffd"
    # The replaced bytes are not lost: the file as it was is kept beside it.
    assert (tmp_path / f"{STATE_FILE}.corrupt-{ms}").read_bytes() == raw


def test_read_session_registry_decodes_a_bad_utf8_byte_as_u_fffd(tmp_path: Path) -> None:
    (tmp_path / REGISTRY_FILE).write_bytes(
        b'{"agent:a:s\xff": {"sessionId": "s", "offloadFile": "offload-s.jsonl", '
        b'"updatedAt": "2026-01-01T00:00:00.000Z"}}'
    )
    assert list(read_session_registry(tmp_path)) == ["agent:a:s\ufffd"]


def test_update_raises_journal_error_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(JournalError):
        update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=1), NEVER)


def test_update_writes_lone_surrogates_as_json_escapes(tmp_path: Path) -> None:
    write_state(tmp_path, '{"lastSessionKey": "a\\ud800b"}')

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=1), NEVER)

    raw = (tmp_path / STATE_FILE).read_bytes()
    assert b'"a\\ud800b"' in raw
    assert read_agent_state(tmp_path).last_session_key == "a\ud800b"


def test_update_writes_an_overflowing_number_as_null_like_javascript(tmp_path: Path) -> None:
    write_state(tmp_path, '{"future": 1e400}')

    update_agent_state(tmp_path, lambda s: dataclasses.replace(s, mmd_counter=1), NEVER)

    assert json.loads((tmp_path / STATE_FILE).read_bytes())["future"] is None


# -------------------------------------------------------------------------------- MMD numbers


def make_mmds(agent_dir: Path, *names: str) -> None:
    (agent_dir / MMDS_DIR).mkdir(parents=True)
    for name in names:
        (agent_dir / MMDS_DIR / name).write_text("graph TD", encoding="utf-8")


@pytest.mark.parametrize(("counter", "expected"), [(4, 11), (20, 21)])
def test_next_mmd_number_is_one_more_than_the_larger_of_counter_and_files(
    tmp_path: Path, counter: int, expected: int
) -> None:
    make_mmds(tmp_path, "3-a.mmd", "10-b.mmd", "notes.txt", "x-1.mmd", "99.mmd", "50-c.md")
    assert next_mmd_number(tmp_path, AgentState(mmd_counter=counter)) == expected


def test_next_mmd_number_ignores_non_ascii_digits(tmp_path: Path) -> None:
    make_mmds(tmp_path, "\u0669\u0669-arabic.mmd", "2-a.mmd")
    assert next_mmd_number(tmp_path, AgentState()) == 3


def test_next_mmd_number_without_mmds_dir_is_counter_plus_one(tmp_path: Path) -> None:
    assert next_mmd_number(tmp_path, AgentState(mmd_counter=6)) == 7


def test_allocate_mmd_number_stores_and_returns_successive_numbers(tmp_path: Path) -> None:
    make_mmds(tmp_path, "5-plan.mmd")

    numbers = [allocate_mmd_number(tmp_path, NEVER) for _ in range(3)]

    assert numbers == [6, 7, 8]
    assert read_agent_state(tmp_path).mmd_counter == 8


# ---------------------------------------------------------------------- sessions-registry.json


def test_register_session_writes_the_seeds_registry_bytes(tmp_path: Path) -> None:
    register_session(tmp_path, "agent:review:pr-42", "real-abc", NEVER, now=fixed_clock())

    expected = (SAMPLE_ROOT / "review" / REGISTRY_FILE).read_bytes()
    assert (tmp_path / REGISTRY_FILE).read_bytes() == expected


def test_register_session_skips_the_write_when_the_mapping_is_unchanged(tmp_path: Path) -> None:
    register_session(tmp_path, "agent:a:s", "s", NEVER, now=fixed_clock())
    path = tmp_path / REGISTRY_FILE
    before = file_identity(path), path.read_bytes()

    later = fixed_clock(FIXED_NOW + timedelta(hours=1))
    register_session(tmp_path, "agent:a:s", "s", NEVER, now=later)

    assert (file_identity(path), path.read_bytes()) == before


def test_register_session_remaps_a_key_and_keeps_other_keys_and_unknown_fields(
    tmp_path: Path,
) -> None:
    (tmp_path / REGISTRY_FILE).write_text(
        json.dumps(
            {
                "agent:a:one": {"sessionId": "old", "offloadFile": "offload-old.jsonl", "x": 1},
                "agent:a:two": {"sessionId": "two", "offloadFile": "offload-two.jsonl"},
                "note": "kept",
            }
        ),
        encoding="utf-8",
    )

    register_session(tmp_path, "agent:a:one", "new", NEVER, now=fixed_clock())

    written = json.loads((tmp_path / REGISTRY_FILE).read_text(encoding="utf-8"))
    assert written["agent:a:one"] == {
        "sessionId": "new",
        "offloadFile": "offload-new.jsonl",
        "updatedAt": "2026-11-25T21:31:20.953Z",
        "x": 1,
    }
    assert written["agent:a:two"] == {"sessionId": "two", "offloadFile": "offload-two.jsonl"}
    assert written["note"] == "kept"
    assert list(written) == ["agent:a:one", "agent:a:two", "note"]


def test_register_session_keeps_a_corrupt_registry_as_corrupt_ms_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / REGISTRY_FILE).write_bytes(b'{"agent:a:b": {"sessionId": "b"')
    ms = (FIXED_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

    with caplog.at_level(logging.WARNING, logger=agent_files.__name__):
        register_session(tmp_path, "agent:a:c", "c", NEVER, now=fixed_clock())

    copy = tmp_path / f"{REGISTRY_FILE}.corrupt-{ms}"
    assert copy.read_bytes() == b'{"agent:a:b": {"sessionId": "b"'
    assert set(read_session_registry(tmp_path)) == {"agent:a:c"}
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_register_session_never_overwrites_an_earlier_corrupt_copy(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILE
    path.write_bytes(b"first")
    register_session(tmp_path, "agent:a:b", "b", NEVER, now=fixed_clock())
    path.write_bytes(b"second")
    register_session(tmp_path, "agent:a:c", "c", NEVER, now=fixed_clock())

    copies = sorted(p.read_bytes() for p in tmp_path.glob(f"{REGISTRY_FILE}.corrupt-*"))
    assert copies == [b"first", b"second"]


def test_read_session_registry_reads_the_sample(tmp_path: Path) -> None:
    assert read_session_registry(SAMPLE_ROOT / "review") == {
        "agent:review:pr-42": SessionRecord(
            "real-abc", "offload-real-abc.jsonl", "2026-11-25T21:31:20.953Z"
        )
    }


def test_read_session_registry_skips_entries_without_a_session_id(tmp_path: Path) -> None:
    (tmp_path / REGISTRY_FILE).write_text(
        json.dumps({"a": {"offloadFile": "x"}, "b": "str", "c": {"sessionId": "c"}}),
        encoding="utf-8",
    )
    assert read_session_registry(tmp_path) == {
        "c": SessionRecord("c", "offload-c.jsonl", ""),
    }


@pytest.mark.parametrize("content", [b"", b"[1]", b"{oops"])
def test_read_session_registry_gives_empty_for_a_corrupt_file(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / REGISTRY_FILE).write_bytes(content)
    assert read_session_registry(tmp_path) == {}


def test_read_session_registry_gives_empty_when_missing(tmp_path: Path) -> None:
    assert read_session_registry(tmp_path) == {}


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (FIXED_NOW, "2026-11-25T21:31:20.953Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (
            datetime(2026, 1, 2, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-01T22:30:00.000Z",
        ),
        (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05.000Z"),
    ],
)
def test_format_iso_ms_matches_javascript_to_iso_string(moment: datetime, expected: str) -> None:
    assert format_iso_ms(moment) == expected


# ------------------------------------------------------------- lost updates across processes

WORKER = """
import json, sys
from pathlib import Path
from offload_registry.disk.agent_files import allocate_mmd_number, register_session
from offload_registry.disk.fsutil import FsyncPolicy

mode, agent_dir, worker, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # start barrier: every worker begins at once
out = []
for i in range(count):
    if mode == "allocate":
        out.append(allocate_mmd_number(agent_dir, FsyncPolicy.NEVER))
    else:
        register_session(agent_dir, f"agent:a:{worker}-{i}", f"{worker}-{i}", FsyncPolicy.NEVER)
print(json.dumps(out), flush=True)
"""


def run_workers(mode: str, agent_dir: Path, workers: int, count: int) -> list[list[int]]:
    src_dir = Path(agent_files.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src_dir), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, str(agent_dir), f"w{n}", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def test_concurrent_allocations_from_four_processes_never_repeat_a_number(
    tmp_path: Path,
) -> None:
    results = run_workers("allocate", tmp_path, workers=4, count=50)

    numbers = [n for result in results for n in result]
    assert len(numbers) == 200
    assert sorted(numbers) == list(range(1, 201))
    assert read_agent_state(tmp_path).mmd_counter == 200


def test_concurrent_registrations_from_four_processes_lose_no_key(tmp_path: Path) -> None:
    run_workers("register", tmp_path, workers=4, count=25)

    registry = read_session_registry(tmp_path)
    expected = {f"agent:a:w{w}-{i}" for w in range(4) for i in range(25)}
    assert set(registry) == expected
    assert all(rec.offload_file == f"offload-{rec.session_id}.jsonl" for rec in registry.values())
