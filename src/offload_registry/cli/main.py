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

from offload_registry import __version__
from offload_registry.cli import (
    canary_cmd,
    evict_cmd,
    inspect_cmd,
    sessions_cmd,
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
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    inspect_cmd.register(commands)
    simulate_cmd.register(commands)
    warm_cmd.register(commands)
    verify_cmd.register(commands)
    stats_cmd.register(commands)
    evict_cmd.register(commands)
    canary_cmd.register(commands)
    sessions_cmd.register(commands)
    for sub in commands.choices.values():
        # Also accepted after the command (``inspect --data-root R KEY``); given there,
        # they win over the same option before the command and over the environment.
        _global_options(sub, suppress=True)
    return parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    env = os.environ.get

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--data-root",
        default=default(env("OFFLOAD_REGISTRY_DATA_ROOT")),
        help="journal root (env OFFLOAD_REGISTRY_DATA_ROOT; default ~/.openclaw/context-offload)",
    )
    group.add_argument(
        "--redis-url",
        default=default(env("OFFLOAD_REGISTRY_REDIS_URL")),
        help="shared tier URL (env OFFLOAD_REGISTRY_REDIS_URL); journals only when unset",
    )
    group.add_argument(
        "--key-prefix",
        default=default(env("OFFLOAD_REGISTRY_KEY_PREFIX", "offload-registry")),
        help="prefix of every Redis key (env OFFLOAD_REGISTRY_KEY_PREFIX)",
    )
    for option, name, what in TLS_OPTIONS:
        group.add_argument(
            option,
            default=default(env(name)),
            metavar="FILE",
            help=f"{what} for rediss:// (env {name}; overrides the URL's parameter)",
        )
    group.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more log output"
    )


TLS_OPTIONS = (
    ("--tls-ca-file", "OFFLOAD_REGISTRY_TLS_CA_FILE", "CA bundle to verify the server"),
    ("--tls-cert-file", "OFFLOAD_REGISTRY_TLS_CERT_FILE", "client certificate"),
    ("--tls-key-file", "OFFLOAD_REGISTRY_TLS_KEY_FILE", "client certificate's private key"),
)


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
