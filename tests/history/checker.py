"""The invariants of many workers sharing sessions, as pure functions over histories and the
final state. Each rule returns its violations as sentences (none when it holds).

The model. Ids are compared by their normalized form (``_`` removed), as the library does.
``ok`` operations certainly happened; indeterminate ones (``info``, or no completion because
the process was killed) may or may not have; an operation that completed before another was
invoked took effect first.

* **claims**: each normalized id is won once per session across every ``ok`` claim, appears
  once in the claims record (so an indeterminate claim never caused a second win), every
  ``ok`` win is in the record under its process, every record line is explained by a claim
  that asked for that id and won it or may have, and no claim wins an id whose journal line
  an ``ok`` append had written before the claim began.
* **appends**: no normalized id on two journal lines; an ``ok`` append that reported ``n``
  written left exactly ``n`` lines tagged with its operation id, and every id it asked for is
  in the journal; every line was written by an append that asked for it (no phantoms).
* **marks**: each line's final ``offloaded`` is the value it was appended with or one an
  overlapping-or-later mark naming it set, and is not overwritten for certain: a value is
  ruled out when an ``ok`` mark naming the id with another value began after the line was
  certainly written and after that value was certainly in place.
* **reads**: a process sees its own acknowledged writes (appended or won ids).
* **live views**: after each fault heals, every live worker's resolve shows every write
  acknowledged before the heal. Precisely: an id appended or won by an ``ok`` operation that
  completed at ``c`` is in every ``view`` (a worker's resolve, all its processed ids) invoked
  at or after ``settled(c) + bound``, where ``settled(c)`` is the first moment from ``c`` on
  that starts ``bound`` seconds free of every fault window concerning the writer or the
  viewer (Redis faults concern every process; a stopped worker, itself).
* **views**: every fresh reader (a registry with Redis, one rebuilding from the journal,
  ``inspect --json`` with and without Redis, the raw Redis snapshot when it claims to reflect
  the whole journal) agrees exactly with the state computed here from the raw files.
* **leases**: per session, tokens are distinct and increase in grant order, no two holders
  certainly held the lease at the same moment, and no write fenced by a token succeeds
  once a newer token had certainly been granted.
* **availability**: no operation raised an error of unknown effect (Redis outages must fall
  back to the journals silently; only definite refusals, such as a lease held elsewhere,
  may fail).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from history.record import Op

ABSENT = object()  # a line without an "offloaded" field


def normalize(tool_call_id: str) -> str:
    return tool_call_id.replace("_", "")


def forms(tool_call_id: str) -> set[str]:
    return {tool_call_id, normalize(tool_call_id)}


def js_truthy(value: Any) -> bool:
    if value is None or value is False or value is ABSENT:
        return False
    if isinstance(value, float):
        return value != 0.0 and not math.isnan(value)
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return True


@dataclass(frozen=True, slots=True)
class View:
    """What one reader reports of a session."""

    confirmed: frozenset[str]
    deleted: frozenset[str]
    processed: frozenset[str]
    entry_count: int

    @classmethod
    def of(cls, confirmed: Iterable[str], deleted: Iterable[str], processed: Iterable[str],
           entry_count: int) -> View:  # fmt: skip
        return cls(frozenset(confirmed), frozenset(deleted), frozenset(processed), entry_count)


@dataclass(slots=True)
class SessionFinal:
    """A session after the run: its valid journal lines and claims-record lines (file order),
    and what each fresh reader reported (by reader name)."""

    journal: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    views: dict[str, View] = field(default_factory=dict)


def expected_view(final: SessionFinal) -> View:
    """The state the journal and claims record imply, computed without the library."""
    confirmed: set[str] = set()
    deleted: set[str] = set()
    processed: set[str] = set()
    for line in final.journal:
        ids = forms(line["tool_call_id"])
        processed |= ids
        status = line.get("offloaded", ABSENT)
        if js_truthy(status):
            confirmed |= ids
            if status == "deleted":
                deleted |= ids
    for line in final.claims:
        processed |= forms(line["tool_call_id"])
    return View.of(confirmed, deleted, processed, len(final.journal))


# -- claims -------------------------------------------------------------------------------
def _owner_pid(owner: str) -> int:
    """The pid in a claims record's ``owner`` (``node:pid:object``)."""
    try:
        return int(owner.split(":")[-2])
    except (IndexError, ValueError):
        return -1


def _line_writers(ops: list[Op], finals: Mapping[str, SessionFinal]) -> dict[tuple[str, str], Op]:
    """(session, normalized id) -> the append operation that wrote its journal line."""
    by_id = {op.id: op for op in ops}
    writers = {}
    for session, final in finals.items():
        for line in final.journal:
            writer = by_id.get(line.get("op", ""))
            if writer is not None:
                writers[session, normalize(line["tool_call_id"])] = writer
    return writers


def check_claims(ops: list[Op], finals: Mapping[str, SessionFinal]) -> list[str]:
    violations = []
    claims = [op for op in ops if op.f == "claim"]
    winners: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in claims:
        if not op.ok:
            continue
        won = op.result["won"]
        if not set(won) <= set(op.args["ids"]):
            violations.append(f"claim {op.id} won ids it did not ask for: {won}")
        for tool_call_id in won:
            winners[op.session, normalize(tool_call_id)].append(op)
    for (session, norm), ops_won in sorted(winners.items()):
        if len(ops_won) > 1:
            names = ", ".join(op.id for op in ops_won)
            violations.append(f"{session}: id {norm!r} won {len(ops_won)} times (by {names})")

    for session, final in finals.items():
        in_record = Counter(normalize(line["tool_call_id"]) for line in final.claims)
        for norm, n in sorted(in_record.items()):
            if n > 1:
                violations.append(f"{session}: id {norm!r} is {n} times in the claims record")
        record = {(line["tool_call_id"], _owner_pid(line["owner"])) for line in final.claims}
        for op in claims:
            if op.ok and op.session == session:
                for tool_call_id in op.result["won"]:
                    if (tool_call_id, op.pid) not in record:
                        violations.append(
                            f"{session}: claim {op.id} won {tool_call_id!r}, which the claims "
                            f"record lacks (or holds for another process)"
                        )
        for tool_call_id, pid in sorted(record):
            if not any(
                op.session == session
                and op.pid == pid
                and tool_call_id in op.args["ids"]
                and (op.indeterminate or tool_call_id in op.result["won"])
                for op in claims
            ):
                violations.append(
                    f"{session}: the claims record holds {tool_call_id!r} for pid {pid}, "
                    f"which no claim of that process won or may have won"
                )

    writers = _line_writers(ops, finals)
    for op in claims:
        if not op.ok:
            continue
        for tool_call_id in op.result["won"]:
            writer = writers.get((op.session, normalize(tool_call_id)))
            if writer is not None and writer.ok and writer.precedes(op):
                violations.append(
                    f"{op.session}: claim {op.id} won {tool_call_id!r}, already in the journal "
                    f"(appended by {writer.id}, which completed before the claim began)"
                )
    return violations


# -- appends ------------------------------------------------------------------------------
def check_appends(ops: list[Op], finals: Mapping[str, SessionFinal]) -> list[str]:
    violations = []
    by_id = {op.id: op for op in ops}
    tagged: Counter[str] = Counter()
    for session, final in finals.items():
        lines = Counter(normalize(line["tool_call_id"]) for line in final.journal)
        for norm, n in sorted(lines.items()):
            if n > 1:
                violations.append(f"{session}: id {norm!r} is on {n} journal lines")
        for line in final.journal:
            tag = line.get("op", "")
            tagged[tag] += 1
            writer = by_id.get(tag)
            asked = [] if writer is None else [e["tool_call_id"] for e in writer.args["entries"]]
            if writer is None or writer.session != session or line["tool_call_id"] not in asked:
                violations.append(
                    f"{session}: journal line {line['tool_call_id']!r} (tagged {tag!r}) was "
                    f"written by no append that asked for it"
                )
    for op in ops:
        if op.f != "append":
            continue
        if op.outcome == "fail" and tagged[op.id]:
            violations.append(
                f"{op.session}: append {op.id} failed ({op.error}), yet the journal holds "
                f"{tagged[op.id]} of its lines"
            )
        if op.ok and tagged[op.id] != op.result["written"]:
            violations.append(
                f"{op.session}: append {op.id} reported {op.result['written']} written, "
                f"the journal holds {tagged[op.id]} of its lines"
            )
        if op.ok:
            present = {normalize(line["tool_call_id"]) for line in finals[op.session].journal}
            lost = [e["tool_call_id"] for e in op.args["entries"]
                    if normalize(e["tool_call_id"]) not in present]  # fmt: skip
            if lost:
                violations.append(f"{op.session}: acknowledged append {op.id} lost {lost}")
    return violations


# -- marks --------------------------------------------------------------------------------
def _statuses_by_normalized(op: Op) -> dict[str, Any]:
    # As the library: the last of several forms of one id wins.
    return {normalize(k): v for k, v in op.args["statuses"].items()}


def _last_value_possible(final_value: Any, original: Any, append: Op,
                         marks: list[tuple[Op, Any]]) -> bool:  # fmt: skip
    """Whether ``final_value`` may be the last value written to a line ``append`` wrote with
    ``original``, given the marks naming its id."""
    # (value, when it was certainly in place) for every write that may have set it; a mark
    # that completed before the append began found no line to change.
    candidates = [(original, append.done_by)] + [
        (value, mark.done_by) for mark, value in marks if not mark.precedes(append)
    ]

    def overwritten(value: Any, in_place_by: float) -> bool:
        # An ok mark that began once the line and this value were certainly in place set
        # another value over it.
        return any(
            mark.ok and later != value and mark.invoked > max(in_place_by, append.done_by)
            for mark, later in marks
        )

    return any(value == final_value and not overwritten(value, by) for value, by in candidates)


def check_marks(ops: list[Op], finals: Mapping[str, SessionFinal]) -> list[str]:
    violations = []
    by_id = {op.id: op for op in ops}
    marks: dict[tuple[str, str], list[tuple[Op, Any]]] = defaultdict(list)
    for op in ops:
        if op.f == "mark":
            for norm, value in _statuses_by_normalized(op).items():
                marks[op.session, norm].append((op, value))
    for session, final in finals.items():
        for line in final.journal:
            append = by_id.get(line.get("op", ""))
            if append is None:
                continue  # reported by check_appends
            tool_call_id = line["tool_call_id"]
            naming = marks[session, normalize(tool_call_id)]
            original = next(
                (e.get("offloaded", ABSENT) for e in append.args["entries"]
                 if e["tool_call_id"] == tool_call_id),
                ABSENT,
            )  # fmt: skip
            final_value = line.get("offloaded", ABSENT)
            if not _last_value_possible(final_value, original, append, naming):
                shown = "absent" if final_value is ABSENT else repr(final_value)
                violations.append(
                    f"{session}: {tool_call_id!r} ends with offloaded={shown}, which no "
                    f"append or mark could have left last (appended by {append.id}; marks: "
                    f"{[(m.id, v) for m, v in naming]})"
                )
    return violations


# -- reads --------------------------------------------------------------------------------
def check_reads(ops: list[Op]) -> list[str]:
    """A process sees its own acknowledged writes: an id it appended (``ok``) or won."""
    violations = []
    mine: dict[tuple[str, str], list[tuple[Op, set[str]]]] = defaultdict(list)
    for op in ops:
        if op.ok and op.f == "append":
            written = {normalize(e["tool_call_id"]) for e in op.args["entries"]}
            mine[op.process, op.session].append((op, written))
        elif op.ok and op.f == "claim":
            mine[op.process, op.session].append((op, {normalize(i) for i in op.result["won"]}))
    for op in ops:
        if not (op.ok and op.f == "read"):
            continue
        for tool_call_id in op.result["unseen"]:
            norm = normalize(tool_call_id)
            for write, ids in mine[op.process, op.session]:
                if norm in ids and write.precedes(op):
                    violations.append(
                        f"{op.session}: read {op.id} did not see {tool_call_id!r}, which its own "
                        f"process wrote in {write.id} before"
                    )
                    break
    return violations


# -- views --------------------------------------------------------------------------------
def _diff(name: str, want: frozenset[str], got: frozenset[str]) -> str:
    missing, extra = sorted(want - got)[:5], sorted(got - want)[:5]
    return f"{name}: missing {missing}, unexpected {extra}"


def check_views(finals: Mapping[str, SessionFinal]) -> list[str]:
    violations = []
    for session, final in finals.items():
        want = expected_view(final)
        for reader, got in sorted(final.views.items()):
            problems = [
                _diff(name, getattr(want, name), getattr(got, name))
                for name in ("confirmed", "deleted", "processed")
                if getattr(want, name) != getattr(got, name)
            ]
            if want.entry_count != got.entry_count:
                problems.append(f"entry_count {got.entry_count}, journal has {want.entry_count}")
            if problems:
                violations.append(f"{session}: {reader} disagrees: " + "; ".join(problems))
    return violations


# -- live views ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """A fault, from when it began until it healed (nanoseconds, as the histories'
    times); ``process`` names the one worker it concerns (``None``: Redis, so all)."""

    kind: str
    start: int
    healed: int
    process: str | None = None


def settled(at: int, windows: Iterable[Window], bound: int) -> int:
    """The first moment from ``at`` on after which ``bound`` passes with no fault of
    ``windows`` going on."""
    spans = sorted((w.start, w.healed) for w in windows)
    moment = at
    for start, healed in spans:
        if start < moment + bound and healed > moment:
            moment = max(moment, healed)
    return moment


@dataclass(slots=True)
class Staleness:
    """What the live-view rule saw: views checked, and the longest time a view missed an
    acknowledged write after the faults around it had healed (ns; 0 when none missed)."""

    views: int = 0
    longest: int = 0
    longest_what: str = ""


def _acknowledged_ids(op: Op) -> set[str]:
    if op.f == "append":
        return {normalize(e["tool_call_id"]) for e in op.args["entries"]}
    if op.f == "claim":
        return {normalize(i) for i in op.result["won"]}
    return set()


def check_live_views(
    ops: list[Op], windows: list[Window], bound: int, seen: Staleness | None = None
) -> list[str]:
    """Every ``view`` shows every id acknowledged ``bound`` after the faults around it (the
    writer's and the viewer's) healed; ``seen`` collects the longest staleness observed."""
    seen = seen if seen is not None else Staleness()
    writes = [op for op in ops if op.ok and op.f in ("append", "claim") and op.completed]
    views = [op for op in ops if op.ok and op.f == "view"]
    seen.views += len(views)
    violations = []
    by_pair: dict[tuple[str | None, str | None], list[Window]] = {}
    for view in views:
        shown = set(view.result["processed"])
        for write in writes:
            if write.session != view.session or write.completed is None:
                continue
            if write.completed >= view.invoked:
                continue
            missing = _acknowledged_ids(write) - shown
            if not missing:
                continue
            pair = (write.process, view.process)
            if pair not in by_pair:
                by_pair[pair] = [w for w in windows if w.process in (None, *pair)]
            since = settled(write.completed, by_pair[pair], 0)
            late = view.invoked - since
            if late > seen.longest:
                seen.longest = late
                seen.longest_what = f"view {view.id} missed {sorted(missing)[:3]} of {write.id}"
            if view.invoked >= settled(write.completed, by_pair[pair], bound) + bound:
                violations.append(
                    f"{view.session}: view {view.id} missed {sorted(missing)[:5]}, acknowledged "
                    f"by {write.id} {late / 1e9:.2f} s before, past the faults around it"
                )
    return violations


# -- leases -------------------------------------------------------------------------------
def _held(acquire: Op, releases: Mapping[str, Op]) -> tuple[float, float]:
    """When the lease was certainly held: from the grant's completion to the release's
    invocation, and no longer than its ttl after the request (it may have expired then)."""
    release = releases.get(acquire.id)
    until = acquire.invoked + acquire.args["ttl"] * 1e9
    if release is not None:
        until = min(until, release.invoked)
    return float(acquire.completed or 0), until


def check_leases(ops: list[Op]) -> list[str]:
    violations = []
    releases = {op.args["acquire"]: op for op in ops if op.f == "lease-release"}
    grants: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.f == "lease-acquire" and op.ok:
            grants[op.session].append(op)
    for session, granted in grants.items():
        tokens = Counter(op.result["token"] for op in granted)
        for token, n in sorted(tokens.items()):
            if n > 1:
                violations.append(f"{session}: lease token {token} granted {n} times")
        for a in granted:
            for b in granted:
                if a.precedes(b) and a.result["token"] >= b.result["token"]:
                    violations.append(
                        f"{session}: lease {b.id} got token {b.result['token']} after "
                        f"{a.id} got {a.result['token']}: tokens must increase"
                    )
                if a is b:
                    continue
                (a_from, a_until), (b_from, b_until) = _held(a, releases), _held(b, releases)
                if a.id < b.id and a_from < b_until and b_from < a_until:
                    violations.append(
                        f"{session}: leases {a.id} (token {a.result['token']}) and {b.id} "
                        f"(token {b.result['token']}) were held at the same time"
                    )
    for write in ops:
        if not (write.ok and "token" in write.args):
            continue
        newer = [
            grant
            for grant in grants.get(write.session, [])
            if grant.result["token"] > write.args["token"] and grant.precedes(write)
        ]
        if newer:
            violations.append(
                f"{write.session}: {write.f} {write.id} fenced by token {write.args['token']} "
                f"succeeded after {newer[0].id} was granted token {newer[0].result['token']}"
            )
    return violations


# -- availability -------------------------------------------------------------------------
def check_availability(ops: list[Op]) -> list[str]:
    return [f"{op.session}: {op.f} {op.id} raised {op.error}" for op in ops if op.outcome == "info"]


STALENESS_BOUND = 1_000_000_000
"""The README's bound (1 s): a live resolve shows a write this long after Redis answers."""
LIVE_SLACK = 1_000_000_000
"""Allowed on top of the bound: scheduling on a busy two-core machine running the workers."""


def check(
    ops: list[Op],
    finals: Mapping[str, SessionFinal],
    windows: list[Window] | None = None,
    staleness: Staleness | None = None,
) -> list[str]:
    """Every violation of every rule (empty when the run is consistent); the live-view rule
    runs when the fault ``windows`` are given."""
    live = (
        []
        if windows is None
        else check_live_views(ops, windows, STALENESS_BOUND + LIVE_SLACK, staleness)
    )
    return [
        *live,
        *check_claims(ops, finals),
        *check_appends(ops, finals),
        *check_marks(ops, finals),
        *check_reads(ops),
        *check_views(finals),
        *check_leases(ops),
        *check_availability(ops),
    ]
