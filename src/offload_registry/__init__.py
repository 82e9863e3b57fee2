"""offload-registry: one shared, fast, durable view of each agent session's offload state.

The asyncio API is here; ``offload_registry.sync`` holds blocking twins of the same names.
"""

from offload_registry._async.manager import OffloadStateManager
from offload_registry._async.registry import SessionCtx, SessionRegistry
from offload_registry.errors import (
    CodecError,
    ConfigurationError,
    InvalidSessionKeyError,
    InvalidToolCallIdError,
    JournalError,
    LeaseError,
    LeaseLostError,
    LeaseUnavailableError,
    OffloadRegistryError,
    RedisPermissionError,
    RedisUnavailableError,
    RegistryClosedError,
    ServerBinaryNotFound,
    ServerNotRunningError,
    ServerStartError,
    UnsafePathError,
)
from offload_registry.keys import SessionKey, is_internal_memory_session, parse_session_key

__all__ = [
    "CodecError",
    "ConfigurationError",
    "InvalidSessionKeyError",
    "InvalidToolCallIdError",
    "JournalError",
    "LeaseError",
    "LeaseLostError",
    "LeaseUnavailableError",
    "OffloadRegistryError",
    "OffloadStateManager",
    "RedisPermissionError",
    "RedisUnavailableError",
    "RegistryClosedError",
    "ServerBinaryNotFound",
    "ServerNotRunningError",
    "ServerStartError",
    "SessionCtx",
    "SessionKey",
    "SessionRegistry",
    "UnsafePathError",
    "is_internal_memory_session",
    "parse_session_key",
]
__version__ = "0.1.0"
