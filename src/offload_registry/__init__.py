"""offload-registry: one shared, fast, durable view of each agent session's offload state.

The asyncio API is here; ``offload_registry.sync`` holds blocking twins of the same names.
"""

from offload_registry._async.lease import Lease
from offload_registry._async.manager import OffloadStateManager
from offload_registry._async.registry import SessionCtx, SessionRegistry
from offload_registry._async.tier import NoSharedTier, SharedTier
from offload_registry.config import TierOptions
from offload_registry.disk.fsutil import FsyncPolicy
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
    UsageError,
)
from offload_registry.keys import SessionKey, is_internal_memory_session, parse_session_key
from offload_registry.stats import RegistryStats

__all__ = [
    "CodecError",
    "ConfigurationError",
    "FsyncPolicy",
    "InvalidSessionKeyError",
    "InvalidToolCallIdError",
    "JournalError",
    "Lease",
    "LeaseError",
    "LeaseLostError",
    "LeaseUnavailableError",
    "NoSharedTier",
    "OffloadRegistryError",
    "OffloadStateManager",
    "RedisPermissionError",
    "RedisUnavailableError",
    "RegistryClosedError",
    "RegistryStats",
    "ServerBinaryNotFound",
    "ServerNotRunningError",
    "ServerStartError",
    "SessionCtx",
    "SessionKey",
    "SessionRegistry",
    "SharedTier",
    "TierOptions",
    "UnsafePathError",
    "UsageError",
    "is_internal_memory_session",
    "parse_session_key",
]
__version__ = "0.1.0"
