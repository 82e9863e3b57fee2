"""``offload-registry verify``: compare Redis with the journals; ``--repair`` fixes Redis."""

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
from offload_registry.ops.tier import check_url, open_tier
from offload_registry.ops.verify import KINDS, VerifyReport, sessions_for_keys, verify

HELP = "compare Redis with the journals; exit 1 on drift unless --repair fixed it"
EXAMPLE = (
    """\
Example: offload-registry verify --json
         offload-registry verify --repair agent:main:s1

Kinds of drift: """
    + ", ".join(KINDS)
    + """.
Exit status 0 when Redis agrees with the journals (or --repair made it agree), 1 on drift
or when a KEY names no session (no files, no Redis copy), 2 for bad usage or a KEY that is
not of the form agent:NAME:ID. Sessions are printed as keys you can pass back as KEY.
Journals are never written."""
)


def register(commands: Any) -> None:
    parser = command_parser(commands, "verify", HELP, EXAMPLE)
    parser.add_argument("keys", nargs="*", metavar="KEY", help="only these sessions")
    parser.add_argument("--repair", action="store_true", help="rewrite Redis from the journals")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.set_defaults(run=run)


def _print_text(report: VerifyReport) -> None:
    if report.not_found and not report.sessions:
        return  # nothing was checked: the reason is on stderr, no summary that reads as OK
    for d in report.differences:
        print(f"{d.kind}: {d.session}" + (f" ({d.detail})" if d.detail else ""))
    kinds = ", ".join(f"{report.by_kind[k]} {k}" for k in KINDS if report.by_kind[k])
    print(
        f"verify: {report.sessions} sessions, {report.drift} differences"
        + (f" ({kinds})" if kinds else "")
        + f", {report.repaired} repaired, {report.seconds:.2f} s"
    )


def run(args: argparse.Namespace) -> int:
    url = check_url(args.redis_url, "verify")
    root = existing_data_root(args.data_root)
    sessions = sessions_for_keys(root, args.keys) if args.keys else None

    async def job() -> int:
        async with open_tier(
            root, url, key_prefix=args.key_prefix, read_only=not args.repair, tls=tls_files(args)
        ) as t:
            report = await verify(t, root, sessions=sessions, repair=args.repair)
        if args.json:
            print(json.dumps(report.as_json(), ensure_ascii=False))
        else:
            _print_text(report)
        for key in report.not_found:
            print(
                f"{PROG}: error: no session {key}: no journal or claims record under {root}"
                " and no copy in Redis",
                file=sys.stderr,
            )
        if report.not_found:
            return EXIT_FAILURE
        if args.repair:
            return 1 if report.unrepaired or report.by_kind["unreadable"] else 0
        return 1 if report.drift else 0

    return run_job(job())
