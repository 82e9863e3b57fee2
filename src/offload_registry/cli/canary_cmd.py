"""``offload-registry canary``: the long-lived deployment worker (see
:mod:`offload_registry.ops.canary`): agent-like traffic on the mounted data root in its own
agent namespace, continuous invariant checks, Prometheus metrics, a clean stop on SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from offload_registry.cli.ops_common import command_parser, existing_data_root, positive_int
from offload_registry.metrics import serve_metrics
from offload_registry.ops.canary import Canary, CanaryPlan
from offload_registry.sync import SessionRegistry

HELP = "run the deployment canary: agent-like traffic and invariant checks until SIGTERM"
EXAMPLE = (
    "Example: offload-registry --data-root /data canary --metrics-port 9464\n"
    "Exit status: 0 after a clean stop with no violation, 1 when any check failed."
)
log = logging.getLogger(__name__)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def register(commands: Any) -> None:
    parser = command_parser(commands, "canary", HELP, EXAMPLE)
    env = os.environ.get
    defaults = CanaryPlan()
    parser.add_argument("--agent", default=defaults.agent, help="its agent namespace")
    parser.add_argument("--sessions", type=positive_int, default=defaults.sessions)
    parser.add_argument(
        "--interval", type=_seconds, default=defaults.interval, help="seconds between rounds"
    )
    parser.add_argument(
        "--bucket-seconds",
        type=positive_int,
        default=defaults.bucket_seconds,
        help="how long one set of canary sessions is written (600)",
    )
    parser.add_argument(
        "--keep-buckets",
        type=positive_int,
        default=defaults.keep_buckets,
        help="buckets kept on disk; older canary sessions are deleted (2)",
    )
    parser.add_argument(
        "--seconds", type=_seconds, default=None, help="stop after this long (default: SIGTERM)"
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=env("OFFLOAD_REGISTRY_METRICS_PORT") or None,  # argparse applies the type
        help="serve Prometheus metrics here (env OFFLOAD_REGISTRY_METRICS_PORT; metrics extra)",
    )
    parser.add_argument(
        "--metrics-addr",
        default=env("OFFLOAD_REGISTRY_METRICS_ADDR", "0.0.0.0"),
        help="address the metrics listen on (env OFFLOAD_REGISTRY_METRICS_ADDR; 0.0.0.0)",
    )
    parser.set_defaults(run=run)


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.warning("canary: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("offload_registry.ops.canary").setLevel(logging.INFO)
    root = existing_data_root(args.data_root)
    plan = CanaryPlan(
        agent=args.agent,
        sessions=args.sessions,
        interval=args.interval,
        bucket_seconds=args.bucket_seconds,
        keep_buckets=args.keep_buckets,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    with SessionRegistry(
        root, redis_url=args.redis_url, key_prefix=args.key_prefix, max_cached=plan.sessions * 2
    ) as registry:
        canary = Canary(registry, plan)
        server = None
        if args.metrics_port is not None:
            server = serve_metrics(
                args.metrics_port, registry, addr=args.metrics_addr, canary=canary.stats
            )
        log.warning(
            "canary %s: agent %r under %s, metrics on %s",
            plan.replica,
            plan.agent,
            root,
            f"{args.metrics_addr}:{args.metrics_port}" if server else "off",
        )
        try:
            violations = canary.run(stop, max_seconds=args.seconds)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
    stats = canary.stats
    print(
        f"canary stopped: {stats.rounds} rounds, {stats.checks} checks, "
        f"{violations} violations, {stats.errors} failed rounds, "
        f"{stats.sessions_removed} old sessions removed"
    )
    return 1 if violations else 0
