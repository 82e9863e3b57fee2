"""``offload-registry inspect``: show what a session's state is, without writing anything."""

from __future__ import annotations

import argparse
from typing import Any

from offload_registry.cli.ops_common import command_parser, existing_data_root, tls_files
from offload_registry.config import TierOptions
from offload_registry.jsjson import dumps_js
from offload_registry.sync import SessionCtx, SessionRegistry

HELP = "show the offload state of sessions (never writes to the data root)"
EXAMPLE = "Example: offload-registry inspect --json agent:main:s1 agent:review:pr-42"


def register(commands: Any) -> None:
    parser = command_parser(commands, "inspect", HELP, EXAMPLE)
    parser.add_argument("keys", nargs="+", metavar="KEY", help="session keys (agent:NAME:ID)")
    parser.add_argument("--real-session-id", help="the real session id the caller would pass")
    parser.add_argument("--json", action="store_true", help="one JSON object per key and line")
    parser.set_defaults(run=run)


def describe(ctx: SessionCtx) -> dict[str, Any]:
    """The CONTRACT's JSON object for one resolved session."""
    manager = ctx.manager
    return {
        "session_key": ctx.session_key,
        "agent_name": manager.agent_name,
        "session_id": manager.session_id,
        "confirmed": sorted(manager.confirmed_offload_ids),
        "deleted": sorted(manager.deleted_offload_ids),
        "processed": sorted(manager.processed_tool_call_ids),
        "entry_count": manager.entry_count,
        "source": manager.source,
    }


def run(args: argparse.Namespace) -> int:
    # A missing root would read as an empty session: refuse it as the other commands do.
    root = existing_data_root(args.data_root)
    with SessionRegistry(
        root,
        redis_url=args.redis_url,
        redis_options=TierOptions(key_prefix=args.key_prefix, **tls_files(args)),
        read_only=True,
        max_cached=len(args.keys),
    ) as registry:
        for key in args.keys:
            info = describe(registry.resolve(key, args.real_session_id))
            if args.json:
                print(dumps_js(info))
            else:
                print(
                    f"{info['session_key']}: agent={info['agent_name']} "
                    f"session={info['session_id']} entries={info['entry_count']} "
                    f"confirmed={len(info['confirmed'])} deleted={len(info['deleted'])} "
                    f"processed={len(info['processed'])} source={info['source']}"
                )
    return 0
