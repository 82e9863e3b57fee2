#!/usr/bin/env python3
"""Measure the staleness window: a write acknowledged in registry A until registry B's
``resolve`` shows it, over an embedded Redis (or ``--redis-url``), and print p50/p99.

Both registries run in this one process and event loop (one data root, one Redis), so the
figure covers the invalidation message, the listener and B's revalidation from the journal,
not a cross-host network. Issue 5 will add a multi-process measurement under load.

    python scripts/bench_staleness.py --writes 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from offload_registry import SessionRegistry
from offload_registry.testing.server import RedisServerProcess

KEY = "agent:main:staleness"


async def measure(url: str, writes: int) -> list[float]:
    root = tempfile.mkdtemp(prefix="offload-staleness-")
    async with (
        SessionRegistry(root, redis_url=url) as writer,
        SessionRegistry(root, redis_url=url) as reader,
    ):
        written = (await writer.resolve(KEY)).manager
        await reader.resolve(KEY)
        await asyncio.sleep(0.2)  # let the reader's listener subscribe
        windows = []
        for i in range(writes):
            await written.append_entries([{"tool_call_id": f"call_{i}"}])
            started = time.perf_counter()
            while f"call_{i}" not in (await reader.resolve(KEY)).manager.processed_tool_call_ids:
                await asyncio.sleep(0)
            windows.append(time.perf_counter() - started)
        return windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=200, help="writes to time (200)")
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.redis_url:
        windows = asyncio.run(measure(args.redis_url, args.writes))
    else:
        with RedisServerProcess() as server:
            windows = asyncio.run(measure(server.url, args.writes))
    cuts = statistics.quantiles(windows, n=100)
    result = {"writes": len(windows), "p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"staleness over {result['writes']} writes: p50 {result['p50_ms']:.3f} ms, "
            f"p99 {result['p99_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
