#!/usr/bin/env python3
"""A fresh process's first resolve, timed from inside (run by ``bench_cold.bench_fresh``).

    python scripts/bench_fresh.py async|sync DATA_ROOT REDIS_URL KEY_PREFIX SESSION_KEY

Prints one JSON object of ``time.perf_counter_ns`` marks: ``start`` (this script's first
line, before ``offload_registry`` is imported), ``imported``, ``constructed``
(``SessionRegistry(...)``), ``connected`` (``start()``: connect and check the server),
``resolved`` (the first ``resolve`` returned: listener started, session loaded) and
``subscribed`` (the invalidation listener confirmed its subscription; it may come before or
after ``resolved``), and the resolve's ``source``. Nothing is imported before ``start`` but
``time``.
"""

import time

START = time.perf_counter_ns()

import asyncio  # noqa: E402 - after the first mark, on purpose
import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

POLL_S = 0.0002
TIMEOUT_S = 10.0


def subscribed(registry: Any, identity: Any) -> bool:
    return bool(registry.tier.hears(identity))


async def run_async(root: str, url: str, prefix: str, key: str, marks: dict[str, Any]) -> None:
    import offload_registry  # noqa: PLC0415 - the import is what is timed

    marks["imported"] = time.perf_counter_ns()
    registry = offload_registry.SessionRegistry(root, redis_url=url, key_prefix=prefix)
    marks["constructed"] = time.perf_counter_ns()
    await registry.start()
    marks["connected"] = time.perf_counter_ns()
    ctx = await registry.resolve(key)
    marks["resolved"] = time.perf_counter_ns()
    marks["source"] = ctx.manager.source
    deadline = time.monotonic() + TIMEOUT_S
    while not subscribed(registry, ctx.manager.identity) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
    marks["subscribed"] = time.perf_counter_ns()
    await registry.close()


def run_sync(root: str, url: str, prefix: str, key: str, marks: dict[str, Any]) -> None:
    import offload_registry.sync  # noqa: PLC0415 - the import is what is timed

    marks["imported"] = time.perf_counter_ns()
    registry = offload_registry.sync.SessionRegistry(root, redis_url=url, key_prefix=prefix)
    marks["constructed"] = time.perf_counter_ns()
    registry.start()
    marks["connected"] = time.perf_counter_ns()
    ctx = registry.resolve(key)
    marks["resolved"] = time.perf_counter_ns()
    marks["source"] = ctx.manager.source
    deadline = time.monotonic() + TIMEOUT_S
    while not subscribed(registry, ctx.manager.identity) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    marks["subscribed"] = time.perf_counter_ns()
    registry.close()


def main() -> int:
    api, root, url, prefix, key = sys.argv[1:6]
    marks: dict[str, Any] = {"start": START}
    if api == "async":
        asyncio.run(run_async(root, url, prefix, key, marks))
    else:
        run_sync(root, url, prefix, key, marks)
    print(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
