"""Crash a worker at an exact point: SIGKILL the process right after a named function returns.

``die_after("offload_registry.disk.session_files:SessionFiles.append", call=3)`` kills the process
when the third call of ``SessionFiles.append`` has returned: the journal holds the batch,
Redis does not yet, and the caller never learns the result. Pointed at
``offload_registry._sync.redis_tier:RedisTier.publish_change`` it kills after the Redis step
instead. Any function or method reachable from a module works, blocking or ``async``, so a
future step (say a Redis claim filter in front of the claims record) can be targeted by name.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import signal
from typing import Any

# The crash points of the current write paths, each right after one step of a write.
JOURNAL_THEN_DIE = (
    "offload_registry.disk.session_files:SessionFiles.append",  # append: journal done, Redis not
    "offload_registry.disk.session_files:SessionFiles.claim",  # claim: record done, Redis not
    "offload_registry.disk.session_files:SessionFiles.mark",  # mark: journal replaced, Redis not
)
REDIS_THEN_DIE = (
    "offload_registry._sync.redis_tier:RedisTier.publish_change",  # append/claim: Redis done
    "offload_registry._sync.redis_tier:RedisTier.publish",  # mark: Redis done, not returned
)
CRASH_POINTS = JOURNAL_THEN_DIE + REDIS_THEN_DIE


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_after(target: str, call: int) -> None:
    """Replace ``module:attribute.path`` so that its ``call``-th call kills the process right
    after returning (earlier and later calls behave as before)."""
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = 0

    def counted() -> bool:
        nonlocal calls
        calls += 1
        return calls == call

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_hook(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            if counted():
                _kill_self()
            return result

        setattr(owner, name, async_hook)
    else:

        @functools.wraps(original)
        def hook(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if counted():
                _kill_self()
            return result

        setattr(owner, name, hook)
