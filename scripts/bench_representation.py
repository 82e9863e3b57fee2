#!/usr/bin/env python3
"""Benchmark how a session's id sets are stored in Redis, against rebuilding from the journal.

Starts its own Redis-compatible server on a free loopback port (never 6379; see
``offload_registry.testing.server``), generates a session of ``--entries`` entries (ids
``toolu_01ABCDEFGH<n>``, about 10 % confirmed of which 3 points deleted, ~450-byte entries:
~9 MB of JSONL for 20,000) and stores it four ways:

* ``SETs``: one Redis SET per id set (every id and its normalized form, as ``SessionState``
  holds them), read with three ``SMEMBERS`` and an ``HGET`` in one pipeline;
* ``msgpack arrays``: one msgpack value holding the three sets as arrays of strings, in a
  hash field read with ``HGET``, decoded with ``msgpack.unpackb`` and ``set()``;
* ``ids once``: the runner-up layout, each journal id once (its normalized form is not
  stored) joined by NUL in one msgpack bin; decoding recomputes the normalized forms with one
  ``replace`` and a second ``split``: half the bytes, a little more decoding;
* ``codec``: the snapshot of :mod:`offload_registry.codec` (every string of the sets once,
  normalized forms included, joined by NUL) in a hash field read with ``HGET`` and decoded
  with ``decode_snapshot``.

Each is timed as a cold read (the fetch, then the decode into ``SessionState``), median of
``--runs`` interleaved runs, and compared with the baseline measured in the same run:
``read_journal`` + ``SessionState.from_entries`` on the journal. The commands one cold read
sends are counted from ``INFO commandstats`` deltas.

    python scripts/bench_representation.py                    # table, 20,000 entries
    python scripts/bench_representation.py --entries 500 --entries 20000 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis
import redis.utils

from offload_registry.codec import decode_snapshot, encode_snapshot
from offload_registry.disk.journal import read_journal
from offload_registry.jsjson import encode_entry
from offload_registry.session_state import SessionState
from offload_registry.store.keyspace import Keyspace
from offload_registry.testing.server import RedisServerProcess

WORDS = (  # noqa: SIM905 - a sentence reads better than thirty quoted words
    "the file contains a function that parses the config and returns a dict of options test "
    "passed failed error warning module class method import return value line output traceback"
).split()

JOURNAL = "journal: read_journal + from_entries"


@dataclass
class Method:
    """One way of storing the session: how to fetch it and how to decode what came back."""

    name: str
    fetch: Callable[[], Any]
    decode: Callable[[Any], SessionState]
    value_bytes: int
    fetch_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)

    def cold_read(self) -> SessionState:
        return self.decode(self.fetch())


def make_entries(count: int, seed: int) -> list[dict[str, Any]]:
    """Journal entries shaped like the seed's: ~10 % confirmed, ~3 % deleted."""
    rng = random.Random(seed)
    entries = []
    for n in range(count):
        entry: dict[str, Any] = {
            "timestamp": f"2026-02-03T04:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "node_id": None if n % 3 else f"node-{n // 3}",
            "tool_call": f"bash -lc 'sed -n 1,200p src/pkg/module_{n % 97}.py'",
            "summary": " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 42))),
            "result_ref": f"refs/toolu_01ABCDEFGH{n}.md",
            "tool_call_id": f"toolu_01ABCDEFGH{n}",
            "session_key": "agent:main:bench-session",
            "score": rng.randint(0, 10),
        }
        roll = rng.random()
        if roll < 0.03:
            entry["offloaded"] = "deleted"
        elif roll < 0.10:
            entry["offloaded"] = True
        entries.append(entry)
    return entries


def pack_ids_once(state: SessionState) -> bytes:
    """The runner-up to the codec's layout: each journal id once, without the normalized
    forms it implies, ordered deleted / confirmed / rest so the smaller sets are prefixes.
    Half the bytes; decoding recomputes the normalized forms with one ``replace`` and a
    second ``split`` (valid for journal states, where deleted <= confirmed <= processed)."""

    def generators(members: set[str]) -> set[str]:
        return members - {i.replace("_", "") for i in members if "_" in i}

    processed = generators(state.processed)
    confirmed = generators(state.confirmed)
    deleted = list(generators(state.deleted))
    ordered = deleted + list(confirmed - set(deleted)) + list(processed - confirmed)
    n_confirmed = len(confirmed)
    joined = "\x00".join(ordered).encode()
    packed: bytes = msgpack.packb([joined, len(deleted), n_confirmed, state.entry_count])
    return packed


def unpack_ids_once(data: bytes) -> SessionState:
    joined, n_deleted, n_confirmed, count = msgpack.unpackb(data)
    text = joined.decode()
    ids = text.split("\x00")
    normalized = text.replace("_", "").split("\x00")
    processed = set(ids)
    processed.update(normalized)
    confirmed = set(ids[:n_confirmed])
    confirmed.update(normalized[:n_confirmed])
    deleted = set(ids[:n_deleted])
    deleted.update(normalized[:n_deleted])
    return SessionState(confirmed, deleted, processed, count)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def command_counts(client: redis.Redis, action: Callable[[], object]) -> dict[str, int]:
    """Commands the server executed during ``action`` (from ``INFO commandstats`` deltas)."""

    def calls() -> dict[str, int]:
        stats = client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    before = calls()
    action()
    after = calls()
    deltas = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
    return {name: n for name, n in sorted(deltas.items()) if n}


def store_methods(
    client: redis.Redis, text_client: redis.Redis, keyspace: Keyspace, state: SessionState
) -> list[Method]:
    """Write the session four ways and return how to read each back."""
    sets = keyspace.session("bench", "sets")
    # One SET per id set; keys come from the keyspace only (a session's set key each).
    set_keys = [keyspace.session("bench-sets", name).claims for name in ("p", "c", "d")]
    packed = keyspace.session("bench", "packed")
    once = keyspace.session("bench", "ids-once")
    codec = keyspace.session("bench", "codec")
    client.delete(*sets.all, *set_keys, *packed.all, *once.all, *codec.all)
    pipe = client.pipeline(transaction=False)
    for key, members in zip(
        set_keys, (state.processed, state.confirmed, state.deleted), strict=True
    ):
        ordered = sorted(members)
        for start in range(0, len(ordered), 5_000):
            pipe.sadd(key, *ordered[start : start + 5_000])
    pipe.hset(sets.state, "entry_count", state.entry_count)
    plain = msgpack.packb(
        [list(state.processed), list(state.confirmed), list(state.deleted), state.entry_count]
    )
    pipe.hset(packed.state, "snapshot", plain)
    ids_once = pack_ids_once(state)
    pipe.hset(once.state, "snapshot", ids_once)
    snapshot = encode_snapshot(state, set(), None, 1)
    pipe.hset(codec.state, "snapshot", snapshot)
    pipe.execute()
    set_bytes = sum(
        len(m.encode()) for s in (state.processed, state.confirmed, state.deleted) for m in s
    )

    def fetch_sets() -> list[Any]:
        pipe = text_client.pipeline(transaction=False)
        for key in set_keys:
            pipe.smembers(key)
        pipe.hget(sets.state, "entry_count")
        return pipe.execute()

    def decode_sets(reply: list[Any]) -> SessionState:
        processed, confirmed, deleted, count = reply
        return SessionState(confirmed, deleted, processed, int(count))

    def decode_plain(data: bytes) -> SessionState:
        processed, confirmed, deleted, count = msgpack.unpackb(data)
        return SessionState(set(confirmed), set(deleted), set(processed), count)

    return [
        Method("redis SETs: 3x SMEMBERS + HGET, pipelined", fetch_sets, decode_sets, set_bytes),
        Method(
            "msgpack arrays in a hash field: HGET",
            lambda: client.hget(packed.state, "snapshot"),
            decode_plain,
            len(plain),
        ),
        Method(
            "ids once, forms recomputed, hash field: HGET",
            lambda: client.hget(once.state, "snapshot"),
            unpack_ids_once,
            len(ids_once),
        ),
        Method(
            "codec snapshot in a hash field: HGET",
            lambda: client.hget(codec.state, "snapshot"),
            lambda data: decode_snapshot(data).state,
            len(snapshot),
        ),
    ]


def time_journal(path: Path, runs: int) -> tuple[list[float], SessionState]:
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        state = SessionState.from_entries(read_journal(path).entries)
        times.append((time.perf_counter() - started) * 1e3)
        if len(times) < runs:
            del state  # freed outside the timed region
    return times, state


def bench_size(
    server: RedisServerProcess, count: int, runs: int, journal_runs: int, seed: int
) -> dict[str, Any]:
    entries = make_entries(count, seed)
    with tempfile.TemporaryDirectory(prefix="bench-representation-") as tmp:
        path = Path(tmp) / "offload-bench.jsonl"
        path.write_bytes(b"".join(encode_entry(entry) for entry in entries))
        journal_bytes = path.stat().st_size
        journal_ms, state = time_journal(path, journal_runs)
    client = server.client()
    text_client = server.client(decode_responses=True)
    try:
        keyspace = Keyspace("bench-representation", deployment=f"n{count}")
        methods = store_methods(client, text_client, keyspace, state)
        for method in methods:
            if method.cold_read() != state:
                raise SystemExit(f"{method.name}: decoded state differs from the journal's")
            method.commands = command_counts(client, method.cold_read)
        for _ in range(runs):
            for method in methods:
                gc.collect()
                started = time.perf_counter()
                reply = method.fetch()
                fetched = time.perf_counter()
                decoded = method.decode(reply)
                done = time.perf_counter()
                del reply, decoded  # freed outside the timed region
                method.fetch_ms.append((fetched - started) * 1e3)
                method.decode_ms.append((done - fetched) * 1e3)
                method.total_ms.append((done - started) * 1e3)
        client.delete(*client.keys(keyspace.pattern()))
    finally:
        client.close()
        text_client.close()
    baseline = median(journal_ms)
    rows: list[dict[str, Any]] = [
        {
            "method": JOURNAL,
            "fetch_ms": None,
            "decode_ms": None,
            "total_ms": round(baseline, 3),
            "share_of_journal": 1.0,
            "commands": {},
            "round_trips": 0,
            "value_bytes": journal_bytes,
        }
    ]
    for method in methods:
        total = median(method.total_ms)
        rows.append(
            {
                "method": method.name,
                "fetch_ms": round(median(method.fetch_ms), 3),
                "decode_ms": round(median(method.decode_ms), 3),
                "total_ms": round(total, 3),
                "total_p10_ms": round(sorted(method.total_ms)[len(method.total_ms) // 10], 3),
                "share_of_journal": round(total / baseline, 4),
                "commands": method.commands,
                "round_trips": 1,
                "value_bytes": method.value_bytes,
            }
        )
    return {
        "entries": count,
        "ids": {
            "processed": len(state.processed),
            "confirmed": len(state.confirmed),
            "deleted": len(state.deleted),
        },
        "journal_bytes": journal_bytes,
        "runs": runs,
        "journal_runs": journal_runs,
        "rows": rows,
    }


def print_table(result: dict[str, Any], server_line: str) -> None:
    ids = result["ids"]
    print(
        f"\n{result['entries']:,}-entry session ({ids['processed']:,} processed, "
        f"{ids['confirmed']:,} confirmed, {ids['deleted']:,} deleted strings; journal "
        f"{result['journal_bytes'] / 1e6:.1f} MB); medians of {result['runs']} runs "
        f"({result['journal_runs']} for the journal); {server_line}"
    )
    header = (
        f"{'method':46} {'fetch ms':>9} {'decode ms':>10} {'total ms':>9} "
        f"{'vs journal':>11} {'value':>10}  commands per cold read (1 round trip)"
    )
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        fetch = "-" if row["fetch_ms"] is None else f"{row['fetch_ms']:.2f}"
        decode = "-" if row["decode_ms"] is None else f"{row['decode_ms']:.2f}"
        share = row["share_of_journal"]
        ratio = "baseline" if share == 1.0 else f"1/{1 / share:.0f}"
        commands = ", ".join(f"{n} {name.upper()}" for name, n in row["commands"].items())
        print(
            f"{row['method']:46} {fetch:>9} {decode:>10} {row['total_ms']:>9.2f} "
            f"{ratio:>11} {row['value_bytes'] / 1024:>7.0f} KiB  {commands or '-'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The server is started by the script on a free loopback port and stopped after.",
    )
    parser.add_argument(
        "--entries",
        type=int,
        action="append",
        metavar="N",
        help="session size in journal entries (repeatable; default 20000)",
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per method (default 30)")
    parser.add_argument(
        "--journal-runs", type=int, default=7, help="timed journal rebuilds (default 7)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    sizes = args.entries or [20_000]
    if any(n < 1 for n in sizes) or args.runs < 1 or args.journal_runs < 1:
        parser.error("--entries, --runs and --journal-runs must be positive")
    with RedisServerProcess() as server:
        version = server.version()
        results = [bench_size(server, n, args.runs, args.journal_runs, args.seed) for n in sizes]
        server_line = (
            f"{server.binary.name} {version} on {server.host}:{server.port}, "
            f"hiredis {'yes' if redis.utils.HIREDIS_AVAILABLE else 'no'}"
        )
    if args.json:
        print(json.dumps({"server": server_line, "sizes": results}, indent=2))
    else:
        for result in results:
            print_table(result, server_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
