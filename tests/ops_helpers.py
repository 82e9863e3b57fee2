"""Helpers shared by the operator-tool suites: generated data roots and the truth to compare
Redis with (a plain module, imported by the test files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

from offload_registry import sync as sync_api
from offload_registry.cli.main import main as cli_main


def unique_prefix() -> str:
    return f"t{uuid4().hex[:12]}"


def write_sessions(
    root: Path, sessions: int, entries: int, *, agents: int = 3, damaged_every: int = 0
) -> list[str]:
    """Journals ``<root>/a<k>/offload-s<n>.jsonl``; every ``damaged_every``-th one gets a
    corrupt line, an invalid one and a torn last line. Returns their session keys."""
    keys = []
    for s in range(sessions):
        agent = f"a{s % agents}"
        (root / agent).mkdir(parents=True, exist_ok=True)
        lines = []
        for e in range(entries):
            status = ',"offloaded":true' if e % 3 == 0 else ',"offloaded":"deleted"' * (e == 1)
            lines.append(f'{{"tool_call_id":"call_{s}_{e}","summary":"s"{status}}}\n')
        if damaged_every and s % damaged_every == 0:
            lines[1:1] = ["{not json\n", '{"tool_call_id": ""}\n']
            lines.append('{"tool_call_id":"torn')
        (root / agent / f"offload-s{s:05d}.jsonl").write_text("".join(lines))
        keys.append(f"agent:{agent}:s{s:05d}")
    return keys


def describe(manager: Any) -> dict[str, Any]:
    return {
        "confirmed": sorted(manager.confirmed_offload_ids),
        "deleted": sorted(manager.deleted_offload_ids),
        "processed": sorted(manager.processed_tool_call_ids),
        "entry_count": manager.entry_count,
    }


def journal_truth(root: Path, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each session as a journal-only, read-only registry rebuilds it."""
    with sync_api.SessionRegistry(root, read_only=True, max_cached=1) as reg:
        return {key: describe(reg.resolve(key).manager) for key in keys}


def redis_view(root: Path, url: str, prefix: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each session as a fresh Redis-backed registry resolves it, with its source."""
    with sync_api.SessionRegistry(root, redis_url=url, key_prefix=prefix, max_cached=1) as reg:
        out = {}
        for key in keys:
            manager = reg.resolve(key).manager
            out[key] = {**describe(manager), "source": manager.source}
        return out


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload_registry.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(capsys: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the CLI in-process; ``(exit status, the JSON object it printed)``."""
    status = cli_main(list(args))
    captured = capsys.readouterr()
    out = captured.out
    return status, json.loads(out) if out.strip() else {"stderr": captured.err}


def warm_json(capsys: Any, root: Path, url: str, prefix: str, *extra: str) -> dict[str, Any]:
    """`offload-registry warm --json` on `root` into `prefix`: its report (exit 0 asserted)."""
    status, report = cli_json(
        capsys, "--data-root", str(root), "--redis-url", url, "--key-prefix", prefix,
        "warm", "--json", *extra,
    )  # fmt: skip
    assert status == 0, report
    return report
