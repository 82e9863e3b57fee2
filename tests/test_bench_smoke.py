"""Smoke run of ``scripts/bench_resolve.py``: it runs end to end and reports every figure.

Benchmarks print; this asserts no timing, only that the run completes (with the embedded
server it starts itself) and that its JSON holds the expected rows with positive numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_resolve.py"

COLD_ROWS = {
    "cold_journal",
    "cold_redis",
    "load_round_trip",
    "ping_round_trip",
    "hget_round_trip",
    "decode_snapshot",
    "catch_up",
    "catch_up_claims",
    "record_session",
    "thread_hop",
}
HOT_ROWS = {"baseline_sync", "hot_sync", "baseline_async", "hot_async"}


@pytest.mark.redis
def test_bench_resolve_smoke_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--entries", "200", "--runs", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SCRIPT.parents[1],
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)

    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["python"] == sys.version.split()[0]
    assert machine["server"]
    assert report["runs"] == 2
    assert report["api"] == "async"

    (size,) = report["sizes"]
    assert size["entries"] == 200
    assert size["journal_bytes"] > 200 * 300  # ~450-byte entries
    assert size["ids"]["processed"] == 400  # every id and its normalized form
    assert 0 < size["ids"]["deleted"] <= size["ids"]["confirmed"] < size["ids"]["processed"]
    rows = {row["key"]: row for row in size["rows"]}
    assert set(rows) == COLD_ROWS
    for row in rows.values():
        assert row["ms"] > 0, row
        assert row["p10_ms"] > 0, row
        assert row["vs_rebuild"] > 0, row
    assert rows["cold_journal"]["vs_rebuild"] == 1
    assert rows["cold_journal"]["round_trips"] == 0
    assert rows["cold_redis"]["round_trips"] >= 1

    commands = size["commands"]
    # A cold resolve answered by Redis is one transaction of plain reads: one round trip.
    assert commands["round_trips"] == len(commands["client_commands"]) == 1
    assert commands["commandstats_delta"]["exec"] == 1
    assert commands["commandstats_total"] >= commands["round_trips"]
    assert all(n > 0 for n in commands["commandstats_delta"].values())
    assert size["goal"]["speedup"] > 0

    memory = size["memory"]
    assert memory["session_bytes"] > memory["raw_id_bytes"] > 0
    assert memory["bytes_per_id"] > 0
    assert memory["snapshot_value_bytes"] > 0

    hot = report["hot"]
    assert hot["loops"] > 0
    hot_rows = {row["key"]: row for row in hot["rows"]}
    assert set(hot_rows) == HOT_ROWS
    for row in hot_rows.values():
        assert row["ns_per_op"] > 0, row
        assert row["vs_baseline"] > 0, row


BENCHMARK = SCRIPT.parent / "benchmark.py"
ROW_KEYS = {
    "row",
    "name",
    "value",
    "unit",
    "baseline",
    "baseline_value",
    "ratio",
    "ratio_text",
    "goal",
    "met",
}


@pytest.mark.redis
@pytest.mark.timeout(300)
def test_benchmark_quick_writes_every_row_as_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=BENCHMARK.parents[1],
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "quick"
    assert report["command"].startswith("python scripts/benchmark.py --quick")
    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["python"] == sys.version.split()[0]
    assert machine["server"].startswith(("redis ", "valkey "))
    assert {"redis_py", "hiredis"} <= set(machine)

    rows = report["rows"]
    assert {r["row"] for r in rows} == set(range(1, 9))
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert row["value"] >= 0, row
        assert row["met"] in (True, False, None), row
        if row["baseline"]:
            assert row["baseline_value"] > 0 and row["ratio"] > 0, row
    names = [r["name"] for r in rows]
    assert any("hot resolve, async" in n for n in names)
    assert any("hot resolve, sync" in n for n in names)
    # Correctness checks are not timings: these must hold on any machine.
    claims = next(r for r in rows if r["row"] == 7 and r["goal"] == "each id won once")
    assert claims["met"] is True
    assert all(s["commands"]["round_trips"] == 1 for s in report["details"]["resolve"]["sizes"])

    details = report["details"]
    assert set(details) == {
        "resolve",
        "journal",
        "warm",
        "writes",
        "staleness",
        "claims",
        "scaling",
    }
    assert set(details["writes"]["policies"]) == {"always", "never"}
    assert set(details["writes"]["policies"]["always"]) == {
        "append_1",
        "append_10",
        "append_100",
        "mark",
        "claim",
    }
    assert details["staleness"]["missing"] == 0
    assert [p["processes"] for p in details["scaling"]] == [1, 2]
    assert set(report["growth"]) == {"cold_resolve", "warm"}
    assert "hot resolve" in proc.stdout  # the table is printed too
