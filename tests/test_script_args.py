"""The scripts' positional arguments are built in one place (``store.script_args``): each
builder passes exactly the KEYS and ARGV its script reads."""

from __future__ import annotations

import re

from offload_registry.changes import APPEND, CLAIMS, SessionChange, TierSnapshot
from offload_registry.session_state import SessionState
from offload_registry.store import script_args
from offload_registry.store.keyspace import (
    CLAIMS_POSITION_FIELD,
    JOURNAL_POSITION_FIELD,
    Keyspace,
)
from offload_registry.store.startup import script_text

KEYS = Keyspace(deployment="0123456789ab").session("agent", "session")
STAMP = script_args.WriteStamp("epoch", 60_000, "chan", "tag origin -", 7, sharded=False)


def highest(script: str, array: str) -> int:
    """The highest ``KEYS[n]`` or ``ARGV[n]`` a script's code (not its comments) reads."""
    code = "\n".join(line.split("--", 1)[0] for line in script_text(script).splitlines())
    return max(int(n) for n in re.findall(rf"\b{array}\[(\d+)\]", code))


def test_each_builder_passes_exactly_what_its_script_reads() -> None:
    snapshot = TierSnapshot(SessionState(), set(), None)
    change = SessionChange(APPEND, ["a"], None, None)
    for script, (keys, args) in (
        ("publish.lua", script_args.publish_call(KEYS, STAMP, snapshot, "always")),
        ("delta.lua", script_args.delta_call(KEYS, STAMP, change)),
        ("lease.lua", script_args.lease_call(KEYS, "acquire", "h", 0, 1000, fence_ttl_ms=60_000)),
        ("unlock.lua", script_args.unlock_call(KEYS, "token")),
    ):
        assert (len(keys), len(args)) == (highest(script, "KEYS"), highest(script, "ARGV")), script
    keys, args = script_args.claim_call(KEYS, "filter", 60_000, [["a", "b"], ["c"]])
    assert (keys, args) == ([KEYS.claims], ["filter", 60_000, 2, "a", "b", 1, "c"])
    keys, args = script_args.claim_call(KEYS, "commit", 60_000, [["a", "b"], ["c"]])
    assert args == ["commit", 60_000, "a", "b", "c"]


def test_a_write_is_stamped_with_its_epoch_announcement_and_fence() -> None:
    change = SessionChange(CLAIMS, ["a"], None, None)
    _, args = script_args.delta_call(KEYS, STAMP, change)
    assert args[:2] == ["epoch", CLAIMS_POSITION_FIELD]
    assert args[5:] == [60_000, "chan", "tag origin -", "7", "plain"]
    assert (
        script_args.chained_field(SessionChange(APPEND, [], None, None)) == JOURNAL_POSITION_FIELD
    )
    unfenced = script_args.WriteStamp("e", 1, "", "m", None, sharded=True)
    _, args = script_args.publish_call(
        KEYS, unfenced, TierSnapshot(SessionState(), set(), None), "9"
    )
    assert args[6:] == ["9", "", "m", "", "sharded"]
