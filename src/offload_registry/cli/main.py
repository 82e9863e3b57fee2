"""Entry point: global options, logging set-up, and dispatch to one module per command.

Exit status, the same for every command (``exit_status`` is the one mapping):

* 0: success.
* 1: a runtime failure (Redis unreachable or lost midway, a journal or agent directory that
  cannot be read, drift found by ``verify``) - running again later may succeed.
* 2: bad usage or configuration (unknown option, bad URL, wrong Redis password or database,
  a URL of the wrong kind for the server, a data root that is not a directory, a missing
  optional extra) - nothing changes until the command or the set-up does.

Every error is one line on stderr, ``offload-registry: error: ...``, never a traceback
(``-vv`` adds the traceback of an unexpected error, for a bug report).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from redis.exceptions import RedisClusterException, RedisError

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
from offload_registry.errors import (
    ConfigurationError,
    InvalidSessionKeyError,
    JournalError,
    OffloadRegistryError,
    RedisUnavailableError,
    ServerBinaryNotFound,
    UsageError,
)
from offload_registry.store.diagnose import configuration_problem

PROG = "offload-registry"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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


def exit_status(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an error that ended a command."""
    if isinstance(exc, (UsageError, ConfigurationError, InvalidSessionKeyError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ServerBinaryNotFound):
        return EXIT_USAGE, f"{exc}; or pass --redis-url"
    problem = configuration_problem(exc)  # a raw Redis error that still names a bad setting
    if problem is not None:
        return EXIT_USAGE, problem
    if isinstance(exc, (RedisUnavailableError, JournalError, OffloadRegistryError)):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, (RedisError, RedisClusterException)):
        return EXIT_FAILURE, f"Redis failed: {exc}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return EXIT_FAILURE, f"cannot use{where}: {exc.strerror or exc}"
    return EXIT_FAILURE, f"unexpected {type(exc).__name__}: {exc} (-vv shows the traceback)"


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "failed"


def main(argv: Sequence[str] | None = None) -> int:
    # An id read from a journal may hold a lone surrogate: never let printing it crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    verbosity = 0
    try:
        args = build_parser().parse_args(argv)
        verbosity = args.verbose
        _configure_logging(args.verbose)
        status: int = args.run(args)
        return status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code, message = exit_status(exc)
        if verbosity >= 2:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
