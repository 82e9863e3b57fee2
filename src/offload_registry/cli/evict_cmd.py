"""``offload-registry evict``: drop Redis copies of sessions (journals stay)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from offload_registry.cli.ops_common import (
    EXIT_FAILURE,
    PROG,
    command_parser,
    existing_data_root,
    run_job,
    tls_files,
)
from offload_registry.errors import ConfigurationError
from offload_registry.ops.discover import session_for_key
from offload_registry.ops.evict import evict_idle, evict_keys, parse_duration
from offload_registry.ops.tier import check_url, open_tier

HELP = "drop the Redis copies of sessions (journals stay; workers rebuild on next use)"
EXAMPLE = """\
Example: offload-registry evict agent:main:s1 agent:review:pr-42
         offload-registry evict --idle-for 2h --json

Idle means OBJECT IDLETIME of the session's state hash (or, under an LFU policy, the idle
TTL minus its PTTL). Every evicted session is announced to live workers.
Exit status 0 when done (a session with no Redis copy is counted, not an error), 1 when a
KEY names no session (no files and no Redis copy), 2 for bad usage or a KEY that is not of
the form agent:NAME:ID."""


def register(commands: Any) -> None:
    parser = command_parser(commands, "evict", HELP, EXAMPLE)
    parser.add_argument("keys", nargs="*", metavar="KEY", help="sessions to evict")
    parser.add_argument("--idle-for", metavar="DURATION", help="every session idle this long")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.keys) == bool(args.idle_for):
        raise ConfigurationError("evict needs session keys or --idle-for DURATION (not both)")
    idle = parse_duration(args.idle_for) if args.idle_for else None
    url = check_url(args.redis_url, "evict")
    root = existing_data_root(args.data_root)
    sessions = [session_for_key(root, key) for key in args.keys]  # exit 2 on a non-key

    async def job() -> int:
        async with open_tier(
            root, url, key_prefix=args.key_prefix, read_only=True, tls=tls_files(args)
        ) as tier:
            if idle is None:
                report = await evict_keys(tier, sessions)
            else:
                report = await evict_idle(tier, idle)
        if args.json:
            print(json.dumps(report.as_json()))
        elif report.scanned or not report.not_found:
            kept = report.scanned - report.evicted
            why = "had no Redis copy" if idle is None else "were not idle that long"
            print(
                f"evict: {report.evicted} of {report.scanned} sessions dropped ({report.rule})"
                + (f"; {kept} {why}" if kept else "")
            )
        for key in report.not_found:
            print(
                f"{PROG}: error: no session {key}: no journal or claims record under {root}"
                " and no copy in Redis",
                file=sys.stderr,
            )
        return EXIT_FAILURE if report.not_found else 0

    return run_job(job())
