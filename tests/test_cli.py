"""The command line: CONTRACT outputs, exit statuses, and no writes from inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from offload_registry.cli.main import main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload_registry.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_inspect_json_prints_the_contract_object_for_every_sample_session(
    sample_root: Path, sample_expected: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    for want in sample_expected:
        args = ["--data-root", str(sample_root), "inspect", "--json", want["session_key"]]
        if want["real_session_id"]:
            args += ["--real-session-id", want["real_session_id"]]
        assert main(args) == 0
        got = json.loads(capsys.readouterr().out)
        expected = {k: v for k, v in want.items() if k != "real_session_id"}
        assert got == {**expected, "source": "journal"}


def test_inspect_prints_one_line_per_key(
    sample_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["agent:support:ticket-1", "agent:ops:x:y:z"]
    assert main(["--data-root", str(sample_root), "inspect", "--json", *keys]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["session_key"] for line in lines] == keys


def test_inspect_never_writes_to_the_data_root(sample_root: Path) -> None:
    before = tree(sample_root)
    keys = ["agent:support:ticket-1", "agent:new:never", "..", "agent:review:pr-42"]
    assert main(["--data-root", str(sample_root), "inspect", *keys]) == 0
    assert tree(sample_root) == before
    assert sorted(p.name for p in sample_root.iterdir()) == sorted(
        ["ops", "review", "raw", "main-w7", "we_rd", "support", "main"]
    )


def test_the_data_root_comes_from_the_environment(sample_root: Path) -> None:
    env = {**os.environ, "OFFLOAD_REGISTRY_DATA_ROOT": str(sample_root)}
    done = run_cli("inspect", "--json", "agent:ops:x:y:z", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entry_count"] == 5


@pytest.mark.parametrize(
    "args",
    [
        ["inspect"],
        ["no-such-command"],
        ["inspect", "--no-such-flag", "agent:a:b"],
        ["simulate", "--workers", "0"],
        ["--redis-url", "mongodb://127.0.0.1:1/0", "inspect", "agent:a:b"],
        ["--redis-url", "memory://", "simulate", "--seconds", "1"],
    ],
)
def test_bad_usage_exits_2_with_one_line_on_stderr(args: list[str], tmp_path: Path) -> None:
    done = run_cli("--data-root", str(tmp_path), *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_every_command_has_help_with_an_example() -> None:
    for command in ["inspect", "simulate"]:
        done = run_cli(command, "--help")
        assert done.returncode == 0
        assert "Example:" in done.stdout


def test_simulate_runs_workers_and_reports_no_violation() -> None:
    done = run_cli("simulate", "--workers", "3", "--sessions", "2", "--seconds", "1.5", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["violations"] == []
    assert report["operations"]["claim"]["count"] > 0
    assert report["claims"]["won"] > 0 and report["written"] > 0
    assert report["leases"]["granted"] > 0
    assert 0 < report["cache_hit_ratio"] < 1
    staleness = report["staleness_ms"]
    assert staleness["samples"] > 0 and 0 <= staleness["p50"] <= staleness["p99"]


def test_inspect_json_prints_a_lone_surrogate_id_as_a_json_escape(tmp_path: Path) -> None:
    # The seed reads this journal fine (JSON.parse accepts the escape); JSON.stringify writes
    # a lone surrogate back as "\ud800". Printing it raw cannot be encoded as UTF-8.
    journal = tmp_path / "main" / "offload-s.jsonl"
    journal.parent.mkdir()
    journal.write_bytes(b'{"tool_call_id": "a\\ud800", "offloaded": true}\n')
    done = run_cli("--data-root", str(tmp_path), "inspect", "--json", "agent:main:s")
    assert done.returncode == 0, done.stderr
    assert "\\ud800" in done.stdout
    assert json.loads(done.stdout)["confirmed"] == ["a\ud800"]
    text = run_cli("--data-root", str(tmp_path), "inspect", "agent:main:s")
    assert text.returncode == 0, text.stderr
    assert "entries=1" in text.stdout


def test_inspect_of_a_key_holding_a_lone_surrogate_prints_it_escaped(tmp_path: Path) -> None:
    done = run_cli("--data-root", str(tmp_path), "inspect", "--json", "agent:main:s\udcff")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_key"] == "agent:main:s\udcff"
    text = run_cli("--data-root", str(tmp_path), "inspect", "agent:main:s\udcff")
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
