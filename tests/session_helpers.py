"""Small builders and views shared by the test modules (a plain module, imported by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from offload_registry import SessionRegistry


def entry(tool_call_id: str, **extra: Any) -> dict[str, Any]:
    """A journal entry as the seed writes one, with any extra fields (``offloaded=True``...)."""
    return {"tool_call_id": tool_call_id, "summary": f"result of {tool_call_id}", **extra}


def described(manager: Any) -> dict[str, Any]:
    """What must agree between two copies of a session: its id sets and entry count."""
    return {
        "confirmed": sorted(manager.confirmed_offload_ids),
        "deleted": sorted(manager.deleted_offload_ids),
        "processed": sorted(manager.processed_tool_call_ids),
        "entry_count": manager.entry_count,
    }


async def truth(root: Path, key: str) -> dict[str, Any]:
    """The session as a fresh journal-only, read-only registry reads it (writes nothing)."""
    async with SessionRegistry(root, read_only=True) as journal_only:
        return described((await journal_only.resolve(key)).manager)
