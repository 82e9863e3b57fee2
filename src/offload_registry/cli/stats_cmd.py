"""``offload-registry stats``: sessions and memory in Redis, journals on disk."""

from __future__ import annotations

import argparse
import json
from typing import Any

from offload_registry.cli.ops_common import (
    command_parser,
    existing_data_root,
    positive_int,
    run_job,
    tls_files,
)
from offload_registry.ops.discover import Unreadable
from offload_registry.ops.stats import DEFAULT_SAMPLE, Stats, stats
from offload_registry.ops.tier import check_url, open_tier

HELP = "sessions and memory in Redis (SCAN, sampled MEMORY USAGE), journals on disk"
EXAMPLE = "Example: offload-registry stats --json --sample 500"


def register(commands: Any) -> None:
    parser = command_parser(commands, "stats", HELP, EXAMPLE)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--sample",
        type=positive_int,
        default=DEFAULT_SAMPLE,
        help="sessions to measure exactly (MEMORY USAGE SAMPLES 0; default 200)",
    )
    parser.set_defaults(run=run)


def _print_text(result: Stats, prefix: str) -> None:
    r, d = result.redis, result.disk
    policy = r.maxmemory_policy or "unknown (CONFIG GET denied)"
    if not r.sampled:
        print(f"redis: no sessions under the key prefix {prefix!r}; maxmemory-policy {policy}")
    else:
        per_entry = (
            f"{r.bytes_per_entry:,.0f} bytes/entry"
            if r.bytes_per_entry is not None
            else "no entries"
        )
        print(
            f"redis: {r.sessions} sessions; measured {r.sampled}: "
            f"{r.bytes_per_session:,.0f} bytes/session, {per_entry}; maxmemory-policy {policy}"
        )
    print(
        f"disk:  {d.sessions} sessions, {d.journals} journals ({d.journal_bytes} bytes), "
        f"{d.claims_records} claims records ({d.claims_bytes} bytes), {d.entries} entries, "
        f"{d.corrupt} corrupt and {d.invalid} invalid lines"
    )


def run(args: argparse.Namespace) -> int:
    url = check_url(args.redis_url, "stats")
    root = existing_data_root(args.data_root)

    unreadable = Unreadable()  # each logged when met; the exit status is then 1

    async def job() -> int:
        async with open_tier(
            root, url, key_prefix=args.key_prefix, read_only=True, tls=tls_files(args)
        ) as tier:
            result = await stats(tier, root, sample=args.sample, unreadable=unreadable)
        if args.json:
            print(json.dumps(result.as_json()))
        else:
            _print_text(result, args.key_prefix)
        return 1 if unreadable else 0

    return run_job(job())
