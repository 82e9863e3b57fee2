"""The staleness benchmark runs end to end (a smoke run: it prints figures, asserts none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_staleness.py"


def test_bench_staleness_runs_and_reports_percentiles() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--writes", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["writes"] == 20
    assert 0 < result["p50_ms"] <= result["p99_ms"]
