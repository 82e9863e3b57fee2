"""The history checker catches what it must: small hand-written histories, good and bad.

Times are small integers (the checker only compares them); ``op`` builds an operation that
ran from ``at`` to ``until`` (``until=None``: the process died during it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from history.checker import (
    SessionFinal,
    Staleness,
    View,
    Window,
    check,
    check_appends,
    check_availability,
    check_claims,
    check_leases,
    check_live_views,
    check_marks,
    check_reads,
    check_views,
    expected_view,
    settled,
)
from history.record import HistoryWriter, Op, read_history

S = "agent:h:s0"


def op(
    process: str,
    index: int,
    f: str,
    args: dict[str, Any],
    result: Any = None,
    *,
    at: int,
    until: int | None,
    outcome: str = "ok",
    pid: int | None = None,
) -> Op:
    return Op(
        process=process,
        index=index,
        f=f,
        session=S,
        args=args,
        invoked=at,
        outcome=outcome if until is not None else None,
        result=result,
        completed=until,
        pid=pid if pid is not None else {"a": 1, "b": 2, "c": 3}[process],
    )


def entry(tool_call_id: str, op_id: str, **fields: Any) -> dict[str, Any]:
    return {"tool_call_id": tool_call_id, "op": op_id, **fields}


def claim_line(tool_call_id: str, pid: int) -> dict[str, Any]:
    return {"tool_call_id": tool_call_id, "owner": f"host:{pid}:7f00", "claimed_at": 0}


def append(process: str, index: int, ids: list[str], written: int | None, **kw: Any) -> Op:
    op_id = f"{process}:{index}"
    entries = [entry(i, op_id) for i in ids]
    result = None if written is None else {"written": written}
    return op(process, index, "append", {"entries": entries}, result, **kw)


def claim(process: str, index: int, ids: list[str], won: list[str] | None, **kw: Any) -> Op:
    result = None if won is None else {"won": won}
    return op(process, index, "claim", {"ids": ids}, result, **kw)


def mark(process: str, index: int, statuses: dict[str, Any], **kw: Any) -> Op:
    return op(process, index, "mark", {"statuses": statuses}, {"changed": 1}, **kw)


def final(
    journal: Sequence[dict[str, Any]] = (), claims: Sequence[dict[str, Any]] = ()
) -> SessionFinal:
    return SessionFinal(journal=list(journal), claims=list(claims))


# -- claims -------------------------------------------------------------------------------
def test_a_consistent_claim_history_passes() -> None:
    ops = [
        claim("a", 0, ["call_1", "call_2"], ["call_1", "call_2"], at=0, until=5),
        claim("b", 0, ["call1", "call_3"], ["call_3"], at=1, until=6),
    ]
    files = final(
        claims=[claim_line("call_1", 1), claim_line("call_2", 1), claim_line("call_3", 2)]
    )
    assert check_claims(ops, {S: files}) == []


def test_an_id_won_twice_under_two_spellings_is_a_violation() -> None:
    ops = [
        claim("a", 0, ["call_1"], ["call_1"], at=0, until=5),
        claim("b", 0, ["call1"], ["call1"], at=1, until=6),
    ]
    files = final(claims=[claim_line("call_1", 1), claim_line("call1", 2)])
    violations = check_claims(ops, {S: files})
    assert any("'call1' won 2 times" in v for v in violations)
    assert any("'call1' is 2 times in the claims record" in v for v in violations)


def test_an_indeterminate_claim_that_won_makes_a_later_win_a_double_win() -> None:
    # a died after writing the claims record; b then won the same id: the record shows it.
    ops = [
        claim("a", 0, ["call_1"], None, at=0, until=None),
        claim("b", 0, ["call_1"], ["call_1"], at=10, until=12),
    ]
    files = final(claims=[claim_line("call_1", 1), claim_line("call_1", 2)])
    assert any("2 times in the claims record" in v for v in check_claims(ops, {S: files}))


def test_an_acknowledged_win_missing_from_the_claims_record_is_a_violation() -> None:
    ops = [claim("a", 0, ["call_1"], ["call_1"], at=0, until=5)]
    assert any("record lacks" in v for v in check_claims(ops, {S: final()}))


def test_a_claims_record_line_no_claim_explains_is_a_violation() -> None:
    ops = [claim("a", 0, ["call_1"], [], at=0, until=5)]  # asked, and lost
    files = final(claims=[claim_line("call_1", 1)])
    assert any("no claim of that process" in v for v in check_claims(ops, {S: files}))


def test_a_claims_record_line_of_a_killed_claim_is_explained() -> None:
    ops = [claim("a", 0, ["call_1"], None, at=0, until=None)]
    files = final(claims=[claim_line("call_1", 1)])
    assert check_claims(ops, {S: files}) == []


def test_winning_an_id_an_acknowledged_append_had_journaled_is_a_violation() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=5),
        claim("b", 0, ["call1"], ["call1"], at=6, until=8),
    ]
    files = final(journal=[entry("call_1", "a:0")], claims=[claim_line("call1", 2)])
    assert any("already in the journal" in v for v in check_claims(ops, {S: files}))


def test_winning_an_id_appended_concurrently_is_allowed() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=5),
        claim("b", 0, ["call1"], ["call1"], at=4, until=8),
    ]
    files = final(journal=[entry("call_1", "a:0")], claims=[claim_line("call1", 2)])
    assert check_claims(ops, {S: files}) == []


# -- appends ------------------------------------------------------------------------------
def test_a_lost_acknowledged_append_is_a_violation() -> None:
    ops = [append("a", 0, ["call_1", "a_n1"], 2, at=0, until=5)]
    files = final(journal=[entry("call_1", "a:0")])
    violations = check_appends(ops, {S: files})
    assert any("reported 2 written, the journal holds 1" in v for v in violations)
    assert any("lost ['a_n1']" in v for v in violations)


def test_a_duplicate_journal_line_is_a_violation() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=5),
        append("b", 0, ["call1"], 1, at=1, until=6),
    ]
    files = final(journal=[entry("call_1", "a:0"), entry("call1", "b:0")])
    assert any("is on 2 journal lines" in v for v in check_appends(ops, {S: files}))


def test_a_line_no_append_asked_for_is_a_violation() -> None:
    ops = [append("a", 0, ["call_1"], 1, at=0, until=5)]
    files = final(journal=[entry("call_1", "a:0"), entry("call_9", "a:0")])
    assert any("no append that asked for it" in v for v in check_appends(ops, {S: files}))


def test_an_append_killed_midway_may_or_may_not_have_written() -> None:
    ops = [
        append("a", 0, ["call_1"], None, at=0, until=None),
        append("a", 1, ["call_2"], None, at=0, until=None),
    ]
    files = final(journal=[entry("call_1", "a:0")])
    assert check_appends(ops, {S: files}) == []


# -- marks --------------------------------------------------------------------------------
def test_the_last_acknowledged_mark_decides_the_status() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=1),
        mark("b", 0, {"call_1": True}, at=2, until=3),
        mark("c", 0, {"call1": "deleted"}, at=4, until=5),
    ]
    good = final(journal=[entry("call_1", "a:0", offloaded="deleted")])
    assert check_marks(ops, {S: good}) == []
    stale = final(journal=[entry("call_1", "a:0", offloaded=True)])
    assert any("ends with offloaded=True" in v for v in check_marks(ops, {S: stale}))
    unmarked = final(journal=[entry("call_1", "a:0")])
    assert any("offloaded=absent" in v for v in check_marks(ops, {S: unmarked}))


def test_concurrent_marks_may_end_either_way() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=1),
        mark("b", 0, {"call_1": True}, at=2, until=6),
        mark("c", 0, {"call_1": "deleted"}, at=3, until=5),
    ]
    for value in (True, "deleted"):
        assert check_marks(ops, {S: final(journal=[entry("call_1", "a:0", offloaded=value)])}) == []


def test_a_mark_before_the_line_existed_changes_nothing() -> None:
    ops = [
        mark("b", 0, {"call_1": "deleted"}, at=0, until=1),
        append("a", 0, ["call_1"], 1, at=2, until=3),
    ]
    assert check_marks(ops, {S: final(journal=[entry("call_1", "a:0")])}) == []
    deleted = final(journal=[entry("call_1", "a:0", offloaded="deleted")])
    assert check_marks(ops, {S: deleted}) != []


def test_a_killed_mark_may_or_may_not_have_applied() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=1),
        mark("b", 0, {"call_1": "deleted"}, at=2, until=None),
    ]
    for line in (entry("call_1", "a:0"), entry("call_1", "a:0", offloaded="deleted")):
        assert check_marks(ops, {S: final(journal=[line])}) == []


# -- reads --------------------------------------------------------------------------------
def test_not_seeing_ones_own_acknowledged_write_is_a_violation() -> None:
    ops = [
        append("a", 0, ["call_1"], 1, at=0, until=1),
        op("a", 1, "read", {"probe": ["call1"]}, {"unseen": ["call1"]}, at=2, until=3),
        op("b", 0, "read", {"probe": ["call1"]}, {"unseen": ["call1"]}, at=2, until=3),
    ]
    violations = check_reads(ops)
    assert len(violations) == 1 and "read a:1" in violations[0]  # b may lag


# -- views --------------------------------------------------------------------------------
def test_the_expected_view_follows_the_seed_rules() -> None:
    files = final(
        journal=[
            entry("call_1", "a:0", offloaded=True),
            entry("call_2", "a:0", offloaded="deleted"),
            entry("call3", "a:0", offloaded=False),
        ],
        claims=[claim_line("call_4", 1)],
    )
    assert expected_view(files) == View.of(
        {"call_1", "call1", "call_2", "call2"},
        {"call_2", "call2"},
        {"call_1", "call1", "call_2", "call2", "call3", "call_4", "call4"},
        3,
    )


def test_a_reader_that_disagrees_with_the_files_is_a_violation() -> None:
    files = final(journal=[entry("call_1", "a:0", offloaded=True)])
    right = expected_view(files)
    files.views["journal"] = right
    files.views["redis"] = View.of(set(), set(), right.processed, 1)
    violations = check_views({S: files})
    assert len(violations) == 1 and "redis disagrees: confirmed: missing ['call1'" in violations[0]


# -- leases -------------------------------------------------------------------------------
def lease(process: str, index: int, token: int, ttl: float = 100.0, **kw: Any) -> Op:
    """A grant; ``ttl`` in seconds, so the default outlives these histories' times (ns)."""
    return op(process, index, "lease-acquire", {"ttl": ttl}, {"token": token}, **kw)


def release(process: str, index: int, acquire: str, **kw: Any) -> Op:
    return op(process, index, "lease-release", {"acquire": acquire}, None, **kw)


def test_leases_held_one_after_another_with_increasing_tokens_pass() -> None:
    ops = [
        lease("a", 0, 1, at=0, until=1),
        release("a", 1, "a:0", at=5, until=6),
        lease("b", 0, 2, at=2, until=7),
        release("b", 1, "b:0", at=9, until=10),
    ]
    assert check_leases(ops) == []


def test_a_token_not_above_an_earlier_grant_is_a_violation() -> None:
    ops = [
        lease("a", 0, 5, at=0, until=1),
        release("a", 1, "a:0", at=2, until=3),
        lease("b", 0, 5, at=4, until=5),
        release("b", 1, "b:0", at=6, until=7),
    ]
    violations = check_leases(ops)
    assert any("token 5 granted 2 times" in v for v in violations)
    assert any("tokens must increase" in v for v in violations)


def test_two_holders_at_once_is_a_violation() -> None:
    ops = [
        lease("a", 0, 1, at=0, until=1),
        lease("b", 0, 2, at=2, until=3),
        release("b", 1, "b:0", at=4, until=5),
        release("a", 1, "a:0", at=6, until=7),
    ]
    assert any("held at the same time" in v for v in check_leases(ops))


def test_a_lease_past_its_ttl_may_be_granted_again() -> None:
    short = op("a", 0, "lease-acquire", {"ttl": 1e-9}, {"token": 1}, at=0, until=1)
    ops = [short, lease("b", 0, 2, at=2, until=3), release("b", 1, "b:0", at=4, until=5)]
    assert check_leases(ops) == []  # a never released, but its lease expired after 1 ns


def fenced_append(process: str, index: int, token: int, outcome: str = "ok", **kw: Any) -> Op:
    written = append(process, index, ["call_1"], 1 if outcome == "ok" else None, **kw)
    return Op(**{**_fields(written), "args": {**written.args, "token": token}, "outcome": outcome})


def _fields(o: Op) -> dict[str, Any]:
    return {name: getattr(o, name) for name in Op.__slots__}


def test_a_write_fenced_by_a_superseded_token_must_not_succeed() -> None:
    ops = [
        lease("a", 0, 1, ttl=100e-9, at=0, until=1),  # a pauses past its ttl (100 ns)...
        lease("b", 0, 2, at=200, until=201),  # ...b is granted a newer token...
        fenced_append("a", 1, token=1, at=300, until=301),  # ...and a's write still lands
    ]
    assert any("fenced by token 1 succeeded after b:0" in v for v in check_leases(ops))
    refused = [*ops[:2], fenced_append("a", 1, token=1, outcome="fail", at=300, until=301)]
    assert check_leases(refused) == []


def test_a_refused_write_that_left_a_line_is_a_violation() -> None:
    refused = fenced_append("a", 0, token=1, outcome="fail", at=0, until=1)
    files = final(journal=[entry("call_1", "a:0")])
    assert any("failed" in v for v in check_appends([refused], {S: files}))


# -- availability and the whole --------------------------------------------------------------
def test_an_operation_that_raised_an_error_of_unknown_effect_is_reported() -> None:
    failed = op("a", 0, "append", {"entries": []}, None, at=0, until=1, outcome="info")
    refused = op("a", 1, "lease-acquire", {"ttl": 1}, None, at=2, until=3, outcome="fail")
    assert len(check_availability([failed, refused])) == 1


def test_the_whole_check_passes_a_consistent_run() -> None:
    ops = [
        append("a", 0, ["call_1", "a_n1"], 2, at=0, until=2),
        append("b", 0, ["call1"], 0, at=3, until=4),
        claim("b", 1, ["call_2", "call2"], ["call_2"], at=5, until=6),
        mark("a", 1, {"call1": "deleted"}, at=7, until=8),
    ]
    files = final(
        journal=[entry("call_1", "a:0", offloaded="deleted"), entry("a_n1", "a:0")],
        claims=[claim_line("call_2", 2)],
    )
    files.views["fresh"] = expected_view(files)
    assert check(ops, {S: files}) == []


# -- live views ---------------------------------------------------------------------------
def view(process: str, index: int, processed: list[str], *, at: int, until: int) -> Op:
    return op(process, index, "view", {}, {"processed": processed}, at=at, until=until)


def test_settling_waits_for_a_fault_free_stretch_of_the_bound() -> None:
    windows = [Window("restart", 10, 20), Window("flushall", 25, 26)]
    assert settled(0, windows, 5) == 0  # [0, 5] is quiet
    assert settled(8, windows, 6) == 26  # 20 heals, but [20, 26] meets the flush
    assert settled(8, windows, 4) == 20  # [20, 24] is quiet
    assert settled(30, windows, 5) == 30


def test_a_live_view_past_the_bound_after_the_heal_must_show_the_write() -> None:
    windows = [Window("client-pause", 0, 100)]
    ops = [
        append("a", 0, ["call_1"], 1, at=10, until=20),  # acknowledged during the pause
        view("b", 0, [], at=50, until=51),  # during the fault: may be stale
        view("b", 1, [], at=120, until=121),  # healed at 100, within the bound of 30
        view("b", 2, [], at=131, until=132),  # past it
        view("b", 3, ["call1"], at=140, until=141),
    ]
    seen = Staleness()
    violations = check_live_views(ops, windows, 30, seen)
    assert len(violations) == 1 and "view b:2 missed ['call1']" in violations[0]
    assert seen.views == 4 and seen.longest == 131 - 100


def test_a_stopped_viewer_or_writer_has_its_own_fault_window() -> None:
    windows = [Window("worker-stop", 0, 100, process="b")]
    ops = [
        append("a", 0, ["call_1"], 1, at=10, until=20),
        view("b", 0, [], at=110, until=111),  # b itself was stopped until 100
        view("c", 0, [], at=110, until=111),  # c was not: 90 past the write
    ]
    violations = check_live_views(ops, windows, 30)
    assert [v.split(" missed")[0] for v in violations] == [f"{S}: view c:0"]


def test_claimed_ids_count_and_a_view_started_before_the_write_completed_does_not() -> None:
    ops = [
        claim("a", 0, ["call_1", "call_2"], ["call_2"], at=0, until=10),
        view("b", 0, [], at=5, until=200),  # began before the claim was acknowledged
        view("b", 1, ["call2"], at=100, until=101),  # call_1 was lost: not required
    ]
    assert check_live_views(ops, [], 30) == []
    assert check(ops, {S: final(claims=[claim_line("call_2", 1)])}, windows=[]) == []


def test_a_history_file_round_trips_and_a_killed_call_stays_open(tmp_path: Path) -> None:
    path = tmp_path / "w0.jsonl"
    writer = HistoryWriter(path, "w0", seed=7)
    done = writer.invoke("claim", S, {"ids": ["call_1"]})
    writer.ok(done, {"won": ["call_1"]})
    failed = writer.invoke("refresh", S, {})
    writer.failed(failed, OSError("disk"), definite=False)
    writer.invoke("append", S, {"entries": []})  # then the process is killed
    writer.close()
    with path.open("a") as torn:
        torn.write('{"type": "ok", "ind')
    first, second, third = read_history(path)
    assert (first.id, first.ok, first.result) == ("w0:0", True, {"won": ["call_1"]})
    assert (second.outcome, second.error) == ("info", "OSError('disk')")
    assert third.outcome is None and third.completed is None and third.indeterminate
