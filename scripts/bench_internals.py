"""Every non-public ``offload_registry`` name the benchmark scripts use, imported here only.

``src/`` is being restructured (issue 14): when a module moves, fix its import in this file
and nothing else. The other scripts import public names (``offload_registry``,
``offload_registry.sync``, ``offload_registry.testing.server``) or take these from here; they
reach the rest through public objects (``registry.tier``, ``ctx.manager``) rather than imports.
"""

from __future__ import annotations

from offload_registry import codec
from offload_registry.codec import decode_snapshot, encode_snapshot
from offload_registry.disk.journal import parse_journal_bytes, read_journal, scan_journal
from offload_registry.disk.journal_write import append_entries_to_file
from offload_registry.disk.session_files import SessionFiles, SessionPaths
from offload_registry.jsjson import encode_entry, js_trim
from offload_registry.keys import resolve_identity
from offload_registry.ops.discover import iter_sessions
from offload_registry.ops.tier import open_tier
from offload_registry.ops.warm import WarmReport, warm
from offload_registry.ops.warm_processes import TierSpec, warm_processes
from offload_registry.session_state import SessionState
from offload_registry.store.keyspace import Keyspace

__all__ = [
    "Keyspace",
    "SessionFiles",
    "SessionPaths",
    "SessionState",
    "TierSpec",
    "WarmReport",
    "append_entries_to_file",
    "codec",
    "decode_snapshot",
    "encode_entry",
    "encode_snapshot",
    "iter_sessions",
    "js_trim",
    "open_tier",
    "parse_journal_bytes",
    "read_journal",
    "resolve_identity",
    "scan_journal",
    "warm",
    "warm_processes",
]
