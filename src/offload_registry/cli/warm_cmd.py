"""``offload-registry warm``: load every journal under the data root into Redis."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from offload_registry.cli.ops_common import (
    agent_option,
    command_parser,
    existing_data_root,
    positive_int,
    run_job,
    show_progress_logs,
    tls_files,
)
from offload_registry.errors import ConfigurationError
from offload_registry.ops.discover import Unreadable, agent_names, count_sessions
from offload_registry.ops.progress import Progress
from offload_registry.ops.tier import check_url, open_tier
from offload_registry.ops.warm import DEFAULT_BATCH, WarmReport, warm
from offload_registry.ops.warm_processes import TierSpec, warm_processes

HELP = "load every journal under the data root into Redis (idempotent, resumable)"
EXAMPLE = """\
Example: offload-registry --redis-url redis://10.0.0.5:6379/0 warm --agent main --json

Exit status 0 when every session is in Redis (damaged lines are reported, not fatal),
1 when a session could not be loaded, 2 for bad usage."""


def register(commands: Any) -> None:
    parser = command_parser(commands, "warm", HELP, EXAMPLE)
    agent_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="sessions per round trip (256)"
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="processes to warm with, each taking the next batch of sessions (1)",
    )
    parser.set_defaults(run=run)


def summary(report: WarmReport) -> str:
    return (
        f"warm: {report.sessions} sessions ({report.published} published, {report.skipped} "
        f"skipped, {report.raced} raced, {report.failed} failed), {report.entries} entries, "
        f"{report.corrupt} corrupt and {report.invalid} invalid lines, "
        f"{report.seconds:.2f} s ({report.as_json()['entries_per_second']:,} entries/s)"
    )


def run(args: argparse.Namespace) -> int:
    url = check_url(args.redis_url, "warm")
    root = existing_data_root(args.data_root)
    agents = list(dict.fromkeys(args.agent or []))
    missing = sorted(set(agents) - set(agent_names(root)))
    if missing:
        raise ConfigurationError(f"no agent directory {missing[0]!r} under {root}")
    show_progress_logs("offload_registry.ops.warm")

    unreadable = Unreadable()  # each logged when met; the exit status is then 1

    async def job() -> int:
        if args.processes > 1:
            with contextlib.closing(progress_for(root, agents)) as progress:
                report = await warm_processes(
                    TierSpec(url, args.key_prefix, tls_files(args)),
                    root,
                    processes=args.processes,
                    agents=agents,
                    batch_size=args.batch,
                    progress=progress,
                    unreadable=unreadable,
                )
        else:
            report = await warm_here(args, root, url, agents=agents, unreadable=unreadable)
        if args.json:
            print(json.dumps(report.as_json()))
        else:
            print(summary(report))
        return 1 if report.failed or unreadable else 0

    return run_job(job())


async def warm_here(
    args: argparse.Namespace, root: Path, url: str, *, agents: list[str], unreadable: Unreadable
) -> WarmReport:
    """The one-process warm: in this process, on one tier (as before ``--processes``)."""
    async with open_tier(
        root, url, key_prefix=args.key_prefix, read_only=False, tls=tls_files(args)
    ) as tier:
        with contextlib.closing(progress_for(root, agents)) as progress:
            return await warm(
                tier,
                root,
                agents=agents,
                batch_size=args.batch,
                progress=progress,
                unreadable=unreadable,
            )


def progress_for(root: Path, agents: list[str]) -> Progress:
    """Warm's progress reporter: counted against the sessions on disk when a terminal shows
    it (listing them costs a walk of the root), open-ended otherwise."""
    total = count_sessions(root, agents) if sys.stderr.isatty() else None
    return Progress("warm", total, logger=logging.getLogger("offload_registry.ops.warm"))
