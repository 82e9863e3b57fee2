"""What the commands share: the data root the operator commands (warm, verify, stats,
evict) work on, the Redis they need, running their asyncio job with one-line errors, and
argument types."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from offload_registry._async.registry import default_data_root
from offload_registry.errors import ConfigurationError
from offload_registry.ops.tier import TierTlsFiles

PROG = "offload-registry"
EXIT_FAILURE = 1


def command_parser(commands: Any, name: str, help_text: str, epilog: str) -> Any:
    """The subcommand ``name``: its help line doubles as its description, and its epilog
    (examples, exit statuses) is printed as written."""
    return commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def agent_option(parser: Any) -> None:
    """``--agent NAME`` (repeatable): limit a scan of the data root to these agent directories."""
    parser.add_argument(
        "--agent", action="append", metavar="NAME", help="only this agent directory (repeatable)"
    )


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def tls_files(args: argparse.Namespace) -> TierTlsFiles:
    """The global ``--tls-*-file`` options as :class:`TierOptions` fields."""
    return {
        "ssl_ca_certs": getattr(args, "tls_ca_file", None),
        "ssl_certfile": getattr(args, "tls_cert_file", None),
        "ssl_keyfile": getattr(args, "tls_key_file", None),
    }


def port_number(text: str) -> int:
    """An ``argparse`` type: a TCP port, 1 to 65535."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535, got {value}")
    return value


def existing_data_root(configured: str | None) -> Path:
    """The data root to work on; :class:`ConfigurationError` (exit 2) when it is missing."""
    root = Path(configured) if configured else default_data_root()
    if not root.is_dir():
        raise ConfigurationError(f"the data root {root} is not a directory")
    return root


def show_progress_logs(name: str) -> logging.Logger:
    """The job's logger, at INFO at least, so its periodic progress lines reach stderr
    without ``-v`` (other loggers stay at WARNING)."""
    logger = logging.getLogger(name)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return logger


def run_job(job: Coroutine[Any, Any, int]) -> int:
    """Run an operator job. Its errors (a Redis that fails midway, a data root that cannot be
    listed) reach ``cli.main``, which maps every error to one line and one exit status."""
    return asyncio.run(job)
