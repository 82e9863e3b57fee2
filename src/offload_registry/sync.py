"""Blocking, thread-safe twins of the asyncio API, with the same names.

from offload_registry.sync import SessionRegistry

with SessionRegistry(data_root) as reg:
    ctx = reg.resolve("agent:main:s1")
    ctx.manager.append_entries([{"tool_call_id": "call_1", "summary": "..."}])
"""

from offload_registry._sync.lease import Lease
from offload_registry._sync.manager import OffloadStateManager
from offload_registry._sync.registry import SessionCtx, SessionRegistry
from offload_registry._sync.tier import NoSharedTier, SharedTier
from offload_registry.keys import SessionKey, is_internal_memory_session, parse_session_key

__all__ = [
    "Lease",
    "NoSharedTier",
    "OffloadStateManager",
    "SessionCtx",
    "SessionKey",
    "SessionRegistry",
    "SharedTier",
    "is_internal_memory_session",
    "parse_session_key",
]
