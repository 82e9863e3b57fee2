#!/usr/bin/env python3
"""Benchmark journal parsing: ours against stdlib json, bare orjson and the seed's Node code.

Generates a large (20,000 entries, about 9 MB) and a small (500 entries) journal of
realistic entries in a temporary directory, times each way of reading them (median of
``--runs``), and prints a table with each figure's ratio to the stdlib-json baseline measured
in the same run. The Node row runs the seed's read loop (``readFileSync`` + split + ``trim``
+ ``JSON.parse`` with the retry) when ``node`` is on the PATH.

    python scripts/bench_journal.py            # table
    python scripts/bench_journal.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from offload_registry.disk.fsutil import FsyncPolicy
from offload_registry.disk.journal import parse_journal_bytes, read_journal, scan_journal
from offload_registry.disk.journal_write import append_entries_to_file
from offload_registry.jsjson import encode_entry, js_trim
from offload_registry.session_state import SessionState

# A sentence reads better than forty quoted words.
WORDS = (  # noqa: SIM905
    "the file contains a function that parses the config and returns a dict of options "
    "test passed failed error warning module class method import return value line output "
    "traceback assert expected actual diff patch commit branch build install package"
).split()

BASELINE = "stdlib json, line by line (baseline)"

NODE_SEED_READ = r"""
const fs = require("fs");
const UNSAFE = new RegExp(
  "[\\uFFFD\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u0080-\\u009F\\u200B-\\u200F" +
  "\\u2028\\u2029\\uFEFF]|[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])" +
  "[\\uDC00-\\uDFFF]", "g");
function read(path) {
  const out = []; let corrupt = 0, invalid = 0;
  for (const piece of fs.readFileSync(path, "utf-8").split("\n")) {
    const line = piece.trim();
    if (!line) continue;
    let v;
    try { v = JSON.parse(line); } catch {
      try { v = JSON.parse(line.replace(UNSAFE, "")); } catch { corrupt++; continue; }
    }
    if (v && typeof v === "object" && !Array.isArray(v) && typeof v.tool_call_id === "string"
        && v.tool_call_id) out.push(v); else invalid++;
  }
  return [out.length, corrupt, invalid];
}
const [path, runs] = [process.argv[1], Number(process.argv[2])];
read(path); read(path);  // warm up the JIT
const times = [];
for (let i = 0; i < runs; i++) {
  const t = process.hrtime.bigint();
  read(path);
  times.push(Number(process.hrtime.bigint() - t) / 1e6);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ms: times[Math.floor(runs / 2)], count: read(path)[0]}));
"""


def make_entry(rng: random.Random, index: int) -> dict[str, Any]:
    """An entry shaped like the seed's, with a summary of a few hundred bytes."""
    call_id = f"toolu_{index:06d}_{rng.getrandbits(32):08x}"
    summary = " ".join(rng.choice(WORDS) for _ in range(rng.randint(22, 36)))
    entry: dict[str, Any] = {
        "timestamp": f"2026-02-03T04:{index // 60 % 60:02d}:{index % 60:02d}.000Z",
        "node_id": None if index % 3 else f"node-{index // 3}",
        "tool_call": f"bash -lc 'sed -n 1,200p src/pkg/module_{index % 97}.py'",
        "summary": summary,
        "result_ref": f"refs/{call_id}.md",
        "tool_call_id": call_id,
        "session_key": "agent:main:bench-session",
        "score": rng.randint(0, 10),
    }
    roll = rng.random()
    if roll < 0.25:
        entry["offloaded"] = True
    elif roll < 0.30:
        entry["offloaded"] = "deleted"
    return entry


def write_journal(path: Path, count: int, seed: int) -> int:
    rng = random.Random(seed)
    data = b"".join(encode_entry(make_entry(rng, i)) for i in range(count))
    path.write_bytes(data)
    return len(data)


def stdlib_line_by_line(data: bytes) -> int:
    """The baseline: the seed's rules with the standard library only."""
    count = 0
    for piece in data.decode("utf-8", "replace").split("\n"):
        line = js_trim(piece)
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("tool_call_id"), str):
            count += 1
    return count


def orjson_parse_only(data: bytes) -> int:
    """The floor: split and ``orjson.loads`` each line, values kept, no checks at all."""
    loads = orjson.loads
    values = [loads(line) for line in data.split(b"\n") if line]
    return len(values)


def _rebuild(path: Path) -> SessionState:
    scan = scan_journal(path)
    return SessionState.from_scan(scan.ids, scan.statuses)


def median_ms(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each function, in ms. Runs are interleaved (one call of each per
    round) so a slow spell of the machine hits every reader alike, not just one."""
    for fn in fns.values():
        fn()  # warm up caches and the allocator
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def node_ms(path: Path, runs: int) -> float | None:
    node = shutil.which("node")
    if node is None:
        return None
    proc = subprocess.run(
        [node, "-e", NODE_SEED_READ, str(path), str(runs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(json.loads(proc.stdout)["ms"])


def bench_one(path: Path, count: int, runs: int, with_node: bool) -> dict[str, Any]:
    data = path.read_bytes()
    assert stdlib_line_by_line(data) == count == len(parse_journal_bytes(data)[0])
    # Incremental: a reader catching up with one entry appended after its watermark (the
    # full-read rows below then read count + 1 entries, a 0.005% difference at 20,000).
    since = read_journal(path).watermark
    append_entries_to_file(path, [make_entry(random.Random(0), count)], FsyncPolicy.NEVER)
    assert len(read_journal(path, since).entries) == 1
    fns: dict[str, Callable[[], object]] = {
        BASELINE: lambda: stdlib_line_by_line(data),
        "orjson parse only (split + loads, kept)": lambda: orjson_parse_only(data),
        "parse_journal_bytes": lambda: parse_journal_bytes(data),
        "read_journal (lock + read + parse)": lambda: read_journal(path),
        "read_journal since watermark (+1 entry)": lambda: read_journal(path, since),
        "rebuild via read_journal (entries + id sets)": lambda: SessionState.from_entries(
            read_journal(path).entries
        ),
        "rebuild via scan_journal (what resolve does)": lambda: _rebuild(path),
    }
    rows: dict[str, float | None] = dict(median_ms(fns, runs))
    if with_node:
        rows["seed's read loop in Node (JSON.parse)"] = node_ms(path, runs)
    baseline = rows[BASELINE]
    assert baseline is not None
    return {
        "entries": count,
        "bytes": len(data),
        "runs": runs,
        "rows": [
            {"name": name, "ms": ms, "vs_baseline": None if ms is None else baseline / ms}
            for name, ms in rows.items()
        ],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    for result in results:
        print(
            f"\n{result['entries']:,} entries, {result['bytes'] / 1e6:.2f} MB, "
            f"median of {result['runs']} runs"
        )
        print(f"  {'reader':<42} {'ms':>9}  {'speed-up vs stdlib':>18}")
        for row in result["rows"]:
            if row["ms"] is None:
                continue
            print(f"  {row['name']:<42} {row['ms']:>9.2f}  {row['vs_baseline']:>17.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000, help="large journal size")
    parser.add_argument("--small-entries", type=int, default=500, help="small journal size")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the entries")
    parser.add_argument("--no-node", action="store_true", help="skip the Node row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.entries < 1 or args.small_entries < 1:
        parser.error("--runs, --entries and --small-entries must be positive")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        for count in (args.entries, args.small_entries):
            path = Path(tmp) / f"offload-bench-{count}.jsonl"
            write_journal(path, count, args.seed)
            results.append(bench_one(path, count, args.runs, not args.no_node))
    if args.json:
        json.dump({"python": sys.version.split()[0], "results": results}, sys.stdout)
        print()
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
