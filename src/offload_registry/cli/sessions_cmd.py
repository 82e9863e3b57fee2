"""``offload-registry sessions``: the sessions under the data root, by pasteable key."""

from __future__ import annotations

import argparse
import json
from typing import Any

from offload_registry.cli.ops_common import (
    agent_option,
    command_parser,
    existing_data_root,
    run_job,
    tls_files,
)
from offload_registry.errors import ConfigurationError
from offload_registry.ops.discover import agent_names
from offload_registry.ops.sessions import SessionRow, list_sessions
from offload_registry.ops.tier import check_url, open_tier

HELP = "list the sessions under the data root (and, with a Redis, what it holds of each)"
EXAMPLE = """\
Example: offload-registry sessions --agent main
         offload-registry --redis-url redis://10.0.0.5:6379/0 sessions --json

Each session is printed as a key that resolves to its files: pass it to inspect, verify
or evict. A file no key resolves to is printed by its path with "(no key)". With a Redis
(--redis-url), each line also says whether Redis holds the session (ok, missing,
stale_epoch, broken_deltas, undecodable), its entries, its size (MEMORY USAGE, exact) and
how long nobody used it (OBJECT IDLETIME). recorded-as lists the keys sessions-registry.json
maps to the journal (a worker that passed a real session id); they reach it only with
--real-session-id, so paste the first key. --json prints one object per session and line.
Exit status 0, 1 when Redis cannot be reached, 2 for bad usage."""


def register(commands: Any) -> None:
    parser = command_parser(commands, "sessions", HELP, EXAMPLE)
    agent_option(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per session")
    parser.set_defaults(run=run)


def _text(row: SessionRow) -> str:
    name = row.key if row.key is not None else f"{row.path} (no key)"
    journal = f"journal={row.journal_bytes}B" if row.journal_bytes is not None else "journal=none"
    if row.recorded_keys:
        journal += " recorded-as=" + ",".join(row.recorded_keys)
    if row.redis is None:
        return f"{name}  {journal}"
    redis = f"redis={row.redis}"
    if row.entries is not None:
        redis += f" entries={row.entries}"
    if row.redis_bytes is not None:
        redis += f" size={row.redis_bytes}B"
    if row.idle_seconds is not None:
        redis += f" idle={row.idle_seconds}s"
    return f"{name}  {journal}  {redis}"


def run(args: argparse.Namespace) -> int:
    root = existing_data_root(args.data_root)
    agents = list(dict.fromkeys(args.agent or []))
    missing = sorted(set(agents) - set(agent_names(root)))
    if missing:
        raise ConfigurationError(f"no agent directory {missing[0]!r} under {root}")
    url = check_url(args.redis_url, "sessions") if args.redis_url else None

    async def show(tier: Any) -> int:
        count = held = 0
        async for row in list_sessions(root, tier, agents=agents):
            count += 1
            held += row.redis == "ok"
            print(json.dumps(row.as_json(), ensure_ascii=False) if args.json else _text(row))
        if not args.json:
            where = f", {held} held by Redis" if tier is not None else " (no Redis asked)"
            print(f"sessions: {count} under {root}{where}")
        return 0

    async def job() -> int:
        if url is None:
            return await show(None)
        async with open_tier(
            root, url, key_prefix=args.key_prefix, read_only=True, tls=tls_files(args)
        ) as tier:
            return await show(tier)

    return run_job(job())
