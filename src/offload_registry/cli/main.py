"""Entry point: global options, logging set-up, and dispatch to one module per command.

Exit status: 0 success, 1 failure or drift, 2 bad usage or bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from offload_registry.cli import (
    canary_cmd,
    evict_cmd,
    inspect_cmd,
    simulate_cmd,
    stats_cmd,
    verify_cmd,
    warm_cmd,
)
from offload_registry.errors import ConfigurationError, InvalidSessionKeyError, JournalError

PROG = "offload-registry"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or bad input: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: callers parse stderr and humans have --help.
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Shared per-session context-offload state for LLM-agent workers.",
        epilog="Example: offload-registry --data-root /srv/offload inspect --json agent:main:s1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    parser.add_argument(
        "--data-root",
        default=env("OFFLOAD_REGISTRY_DATA_ROOT"),
        help="journal root (env OFFLOAD_REGISTRY_DATA_ROOT; default ~/.openclaw/context-offload)",
    )
    parser.add_argument(
        "--redis-url",
        default=env("OFFLOAD_REGISTRY_REDIS_URL"),
        help="shared tier URL (env OFFLOAD_REGISTRY_REDIS_URL); journals only when unset",
    )
    parser.add_argument(
        "--key-prefix",
        default=env("OFFLOAD_REGISTRY_KEY_PREFIX", "offload-registry"),
        help="prefix of every Redis key (env OFFLOAD_REGISTRY_KEY_PREFIX)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    inspect_cmd.register(commands)
    simulate_cmd.register(commands)
    warm_cmd.register(commands)
    verify_cmd.register(commands)
    stats_cmd.register(commands)
    evict_cmd.register(commands)
    canary_cmd.register(commands)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _configure_logging(args.verbose)
        status: int = args.run(args)
        return status
    except (UsageError, InvalidSessionKeyError, ConfigurationError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:  # e.g. a link or FIFO planted in the data root: one line
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
