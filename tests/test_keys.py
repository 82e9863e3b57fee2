"""Session keys: the seed's parsing rules, and the safe names the registry writes under."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_registry.errors import InvalidSessionKeyError
from offload_registry.keys import (
    MAX_AGENT_NAME_BYTES,
    MAX_SESSION_ID_BYTES,
    SessionIdentity,
    SessionKey,
    _safe_component,
    is_internal_memory_session,
    is_safe_agent_name,
    is_safe_component,
    is_safe_session_id,
    parse_session_key,
    resolve_identity,
    sanitize_name,
)
from seed_sample import expected_rows


def _sample_rows() -> list[Any]:
    # Read at collection time; a missing fixture raises here and fails the run (never a skip).
    return [pytest.param(row, id=row["session_key"]) for row in expected_rows()]


def _utf8_len(name: str) -> int:
    return len(name.encode("utf-8"))


def _fallback_id(key: str) -> str:
    return "fallback-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- The seed's rules, as a table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # SEED-SPEC examples
        ("agent:main:a:b:c", ("main", "a_b_c")),
        ("agent:main:../../escape", ("main", "____escape")),
        ('agent:ma"in:se<ss>|1', ("ma_in", "se_ss__1")),
        ("agent:we|rd:s*1", ("we_rd", "s_1")),
        ("agent:ops:x:y:z", ("ops", "x_y_z")),
        ("agent:main:swebench-w7-flask-9", ("main-w7", "swebench-w7-flask-9")),
        ("agent:main:s1", ("main", "s1")),
        # format
        ("nope", None),
        ("", None),
        ("agent", None),
        ("agent:main", None),
        ("agent:main:", None),
        ("agent::s1", None),
        ("Agent:main:s1", None),
        ("xagent:main:s1", None),
        (":agent:main:s1", None),
        ("agent:main::", ("main", "_")),
        # every sanitized character, in the agent and in the session id
        ("agent:a<b>c:d:e", ("a_b_c", "d_e")),
        ('agent:"/\\|?*:<>', ("______", "__")),
        ("agent:a\x00b:c\x1fd", ("a_b", "c_d")),
        ("agent:tab\there:nl\nhere", ("tab_here", "nl_here")),
        ("agent:del\x7f:nbsp\xa0", ("del\x7f", "nbsp\xa0")),
        # dot runs
        ("agent:a.b:c.d", ("a.b", "c.d")),
        ("agent:a..b:c...d", ("a_b", "c_d")),
        ("agent:..:....", ("_", "_")),
        ("agent:.:.", (".", ".")),
        ("agent:x:./.", ("x", "._.")),
        # worker isolation
        ("agent:main:run-swebench-w12", ("main-w12", "run-swebench-w12")),
        ("agent:main:swebench-w007", ("main-w007", "swebench-w007")),
        ("agent:main:swebench-w", ("main", "swebench-w")),
        ("agent:main:swebench-wx1", ("main", "swebench-wx1")),
        ("agent:swebench-w3:s", ("swebench-w3", "s")),
    ],
)
def test_parse_session_key_follows_the_seed(key: str, expected: tuple[str, str] | None) -> None:
    result = parse_session_key(key)
    if expected is None:
        assert result is None
    else:
        assert result == SessionKey(*expected)


def test_parse_returns_a_named_tuple() -> None:
    parsed = parse_session_key("agent:main:s1")
    assert isinstance(parsed, SessionKey)
    assert parsed.agent_name == "main"
    assert parsed.session_id == "s1"


def test_session_id_keeps_colons_after_the_second() -> None:
    assert parse_session_key("agent:main:a:b:c") == ("main", "a_b_c")


def test_session_id_must_be_non_empty() -> None:
    assert parse_session_key("agent:main:") is None


def test_agent_name_must_be_non_empty() -> None:
    assert parse_session_key("agent::s1") is None


def test_first_part_must_be_exactly_agent() -> None:
    assert parse_session_key("AGENT:main:s1") is None
    assert parse_session_key(" agent:main:s1") is None


def test_non_empty_is_checked_on_the_raw_parts_before_sanitizing() -> None:
    # ":" is a non-empty raw session id; it becomes "_" only after the check.
    assert parse_session_key("agent:main::") == ("main", "_")
    assert parse_session_key("agent:\x00:s") == ("_", "s")


def test_worker_isolation_appends_the_worker_number_to_the_agent() -> None:
    assert parse_session_key("agent:main:swebench-w7-flask-9") == (
        "main-w7",
        "swebench-w7-flask-9",
    )


def test_worker_isolation_uses_the_first_worker_in_the_session_id() -> None:
    assert parse_session_key("agent:main:swebench-w1-swebench-w2") == (
        "main-w1",
        "swebench-w1-swebench-w2",
    )


def test_worker_number_takes_ascii_digits_only() -> None:
    # JavaScript's \d is [0-9]; ARABIC-INDIC DIGIT THREE is not a worker number.
    assert parse_session_key("agent:main:swebench-w\u0663") == ("main", "swebench-w\u0663")


def test_worker_pattern_in_the_agent_name_is_ignored() -> None:
    assert parse_session_key("agent:swebench-w3:s") == ("swebench-w3", "s")


def test_worker_suffix_gives_the_same_name_whether_added_before_or_after_sanitizing() -> None:
    parsed = parse_session_key("agent:a..b.:swebench-w4|x")
    assert parsed == ("a_b.-w4", "swebench-w4_x")
    assert parsed.agent_name == sanitize_name("a..b.-w4")


def test_sanitize_replaces_each_forbidden_character_with_an_underscore() -> None:
    forbidden = '<>:"/\\|?*' + "".join(chr(c) for c in range(0x20))
    assert sanitize_name(forbidden) == "_" * len(forbidden)


def test_sanitize_keeps_characters_outside_the_seed_rules() -> None:
    kept = "\x7f\x80\u2028é😀 -_.a"
    assert sanitize_name(kept) == kept


def test_sanitize_turns_every_run_of_two_or_more_dots_into_one_underscore() -> None:
    assert sanitize_name("a..b...c.d") == "a_b_c.d"


def test_sanitize_applies_the_character_rule_before_the_dot_rule() -> None:
    assert sanitize_name("../../escape") == "____escape"
    assert sanitize_name(".:.") == "._."


# --- The seed's sample data root ---------------------------------------------------------------


@pytest.mark.parametrize("row", _sample_rows())
def test_identity_matches_the_seed_sample(row: dict[str, Any]) -> None:
    identity = resolve_identity(row["session_key"], row["real_session_id"])
    assert (identity.agent_name, identity.session_id) == (row["agent_name"], row["session_id"])
    assert identity.fallback is False


@pytest.mark.parametrize("row", _sample_rows())
def test_parse_matches_the_seed_sample_agent(row: dict[str, Any]) -> None:
    parsed = parse_session_key(row["session_key"])
    assert parsed is not None
    assert parsed.agent_name == row["agent_name"]
    if row["real_session_id"] is None:
        assert parsed.session_id == row["session_id"]


# --- Internal memory sessions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "internal"),
    [
        ("memory-t1-session-17", True),
        ("xmemory-a-b-session-1y", True),
        ("agent:main:memory-task-session-1700000000", True),
        ("memory--session-1", True),
        ("memory-a:b:c-session-9", True),
        ("memory--session-", False),
        ("memory-x-session-abc", False),
        ("memory-x-session-\u0661", False),
        ("memory-a\nb-session-1", False),
        ("memory-a\rb-session-1", False),
        ("memory-a\u2028b-session-1", False),
        ("memory-a\u2029b-session-1", False),
        ("memory-a\x85b-session-1", True),
        ("memory-a\tb-session-1", True),
        ("memory-a\nmemory-b-session-2", True),
        ("Memory-t1-session-17", False),
        ("agent:main:s1", False),
        ("", False),
    ],
)
def test_internal_memory_session_detection(key: str, internal: bool) -> None:
    assert is_internal_memory_session(key) is internal


def test_internal_memory_pattern_is_searched_anywhere_in_the_key() -> None:
    assert is_internal_memory_session("xmemory-a-b-session-1y")


def test_internal_memory_pattern_dot_does_not_cross_a_newline() -> None:
    assert not is_internal_memory_session("memory-t1\n-session-17")


# --- resolve_identity: parsed keys -------------------------------------------------------------


def test_identity_of_a_parsed_key_uses_the_parsed_names() -> None:
    assert resolve_identity("agent:main:s1") == SessionIdentity(
        session_key="agent:main:s1", agent_name="main", session_id="s1", fallback=False
    )


def test_real_session_id_replaces_the_parsed_session_id() -> None:
    identity = resolve_identity("agent:review:pr-42", "real-abc")
    assert (identity.agent_name, identity.session_id) == ("review", "real-abc")


def test_real_session_id_is_used_as_given_like_the_seed() -> None:
    # The seed passes the real id straight to its journal path: offload-r:1.jsonl.
    assert resolve_identity("agent:main:s1", "r:1").session_id == "r:1"
    assert resolve_identity("agent:main:s1", "a..b|c*").session_id == "a..b|c*"


def test_real_session_id_changes_only_what_would_leave_the_agent_directory() -> None:
    assert resolve_identity("agent:main:s1", "../x|y").session_id == ".._x|y"
    assert resolve_identity("agent:main:s1", "a\0b").session_id == "a_b"


def test_empty_real_session_id_counts_as_absent() -> None:
    assert resolve_identity("agent:main:s1", "").session_id == "s1"


def test_identity_keeps_the_key_as_given() -> None:
    assert resolve_identity("agent:ma|in:s1").session_key == "agent:ma|in:s1"


# --- resolve_identity: keys that do not parse --------------------------------------------------


def test_fallback_agent_is_the_key_with_the_first_rule_only() -> None:
    identity = resolve_identity("a..b|c")
    assert identity.agent_name == "a..b_c"
    assert identity.fallback is True


def test_fallback_agent_is_cut_to_64_characters() -> None:
    assert resolve_identity("k" * 100).agent_name == "k" * 64


def test_fallback_agent_is_cut_in_utf16_units_as_javascript_does() -> None:
    # "😀" is two UTF-16 units: slice(0, 64) keeps 62 "x", the emoji, and no more.
    assert resolve_identity("x" * 62 + "😀" + "y").agent_name == "x" * 62 + "😀"
    # A cut inside the pair leaves a lone surrogate, which becomes U+FFFD as Node writes it.
    assert resolve_identity("x" * 63 + "😀").agent_name == "x" * 63 + "\ufffd"


def test_fallback_agent_is_unknown_for_an_empty_key() -> None:
    assert resolve_identity("").agent_name == "unknown"


def test_fallback_session_id_is_derived_from_the_key_not_the_clock() -> None:
    assert resolve_identity("nope").session_id == _fallback_id("nope")


def test_fallback_session_ids_differ_between_keys() -> None:
    assert resolve_identity("nope").session_id != resolve_identity("nope2").session_id


def test_fallback_uses_the_real_session_id_when_given() -> None:
    identity = resolve_identity("nope", "real:1")
    assert (identity.agent_name, identity.session_id, identity.fallback) == (
        "nope",
        "real:1",
        True,
    )


def test_same_malformed_key_gives_the_same_identity_twice() -> None:
    for key in ["nope", "..", "", "/etc/passwd", "x" * 10_000, "\ud800"]:
        assert resolve_identity(key) == resolve_identity(key)


# --- Safety: hostile keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "agent_name", "session_id"),
    [
        ("..", "__", _fallback_id("..")),
        (".", "_", _fallback_id(".")),
        ("...", "...", _fallback_id("...")),
        (".hidden", ".hidden", _fallback_id(".hidden")),
        ("", "unknown", _fallback_id("")),
        ("/etc/passwd", "_etc_passwd", _fallback_id("/etc/passwd")),
        ("../../etc", ".._.._etc", _fallback_id("../../etc")),
        ("agent:..:x", "_", "x"),
        ("agent:.:x", "_", "x"),
        ("agent:main:..", "main", "_"),
        ("agent:x:\0", "x", "_"),
        ("agent:x:/", "x", "_"),
    ],
)
def test_hostile_key_is_mapped_to_safe_names(key: str, agent_name: str, session_id: str) -> None:
    identity = resolve_identity(key)
    assert (identity.agent_name, identity.session_id) == (agent_name, session_id)
    assert is_safe_agent_name(identity.agent_name)
    assert is_safe_session_id(identity.session_id)


@pytest.mark.parametrize(
    ("key", "agent_name", "session_id"),
    [
        ("agent:main:.s", "main", ".s"),
        ("agent:main:.", "main", "."),
        ("agent:.hidden:s", ".hidden", "s"),
        ("agent:.x:.y", ".x", ".y"),
    ],
)
def test_leading_dots_reach_the_seeds_own_file(key: str, agent_name: str, session_id: str) -> None:
    identity = resolve_identity(key)
    assert (identity.agent_name, identity.session_id) == (agent_name, session_id)


def test_fallback_name_of_dot_dot_no_longer_escapes_the_root(tmp_path: Path) -> None:
    identity = resolve_identity("..")
    agent_dir = (tmp_path / identity.agent_name).resolve()
    assert agent_dir.parent == tmp_path.resolve()


def test_hostile_real_session_id_is_mapped_to_a_safe_name() -> None:
    for real in [".", "..", "../x", "/", "\0", ".hidden", "\udc80"]:
        assert is_safe_session_id(resolve_identity("agent:main:s", real).session_id)


def test_ten_thousand_character_key_yields_components_within_the_byte_cap() -> None:
    key = "agent:" + "a" * 5_000 + ":" + "s" * 5_000
    identity = resolve_identity(key)
    assert _utf8_len(identity.agent_name) <= MAX_AGENT_NAME_BYTES
    assert _utf8_len(identity.session_id) <= MAX_SESSION_ID_BYTES
    assert identity.session_id.startswith("s" * 100)


def test_long_component_ends_with_a_hash_of_the_whole_component() -> None:
    session_id = "s" * 10_000
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    assert resolve_identity(f"agent:a:{session_id}").session_id == "s" * 224 + "-" + digest


def test_long_components_that_share_a_prefix_stay_distinct() -> None:
    first = resolve_identity("agent:a:" + "s" * 300 + "1").session_id
    second = resolve_identity("agent:a:" + "s" * 300 + "2").session_id
    assert first != second


def test_names_up_to_the_file_system_limit_are_the_seeds_own() -> None:
    # The seed reads any name the file system takes: 255 bytes for the agent directory and
    # for offload-<id>.jsonl (so 241 bytes of session id).
    assert 255 - len("offload-.jsonl") == MAX_SESSION_ID_BYTES
    agent, session_id = "a" * 255, "s" * MAX_SESSION_ID_BYTES
    identity = resolve_identity(f"agent:{agent}:{session_id}")
    assert (identity.agent_name, identity.session_id) == (agent, session_id)
    assert resolve_identity("agent:a:" + "é" * 120).session_id == "é" * 120  # 240 bytes


def test_component_one_byte_over_the_limit_is_shortened() -> None:
    session_id = "s" * (MAX_SESSION_ID_BYTES + 1)
    result = resolve_identity(f"agent:a:{session_id}").session_id
    assert result != session_id
    assert _utf8_len(result) <= MAX_SESSION_ID_BYTES
    agent = "a" * (MAX_AGENT_NAME_BYTES + 1)
    assert _utf8_len(resolve_identity(f"agent:{agent}:s").agent_name) <= MAX_AGENT_NAME_BYTES


def test_multibyte_component_is_cut_at_a_character_boundary() -> None:
    for char in ["é", "€", "😀"]:
        session_id = char * 300
        result = resolve_identity(f"agent:a:{session_id}").session_id
        assert _utf8_len(result) <= MAX_SESSION_ID_BYTES
        prefix = result[: -len("-0123456789abcdef")]
        assert prefix and set(prefix) == {char}


def test_long_fallback_key_with_a_real_session_id_is_capped() -> None:
    identity = resolve_identity("z" * 10_000, "r" * 10_000)
    assert identity.agent_name == "z" * 64
    assert _utf8_len(identity.session_id) <= MAX_SESSION_ID_BYTES


def test_short_name_shaped_like_a_shortened_one_cannot_alias_it() -> None:
    shortened = resolve_identity("agent:a:" + "s" * 300).session_id
    assert _utf8_len(shortened) > MAX_SESSION_ID_BYTES - 17
    assert resolve_identity("agent:a:" + shortened).session_id != shortened


def test_lone_surrogates_become_the_replacement_character() -> None:
    identity = resolve_identity("agent:\ud800x:s\udfff")
    assert (identity.agent_name, identity.session_id) == ("\ufffdx", "s\ufffd")


def test_a_surrogate_pair_held_as_two_code_points_is_joined() -> None:
    assert resolve_identity("agent:a:\ud83d\ude00").session_id == "😀"


def test_lone_surrogate_fallback_key_gets_a_stable_session_id() -> None:
    identity = resolve_identity("\ud800")
    assert (identity.agent_name, identity.session_id) == ("\ufffd", _fallback_id("\ud800"))


def test_an_empty_component_is_refused() -> None:
    # No str input reaches this guard (see the module docstring); it is tested directly.
    with pytest.raises(InvalidSessionKeyError) as excinfo:
        _safe_component("", "agent:x:y", "session id", MAX_SESSION_ID_BYTES)
    assert excinfo.value.key == "agent:x:y"


# --- is_safe_component -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "a.b",
        "a..b",
        "...",
        ".hidden",
        "a:b",
        "a\\b",
        "a\nb",
        "_",
        "-",
        "x" * MAX_SESSION_ID_BYTES,
        "é" * 120,
        "😀",
        "\ufffd",
    ],
)
def test_safe_component_examples(name: str) -> None:
    assert is_safe_component(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "a\0b",
        "x" * (MAX_SESSION_ID_BYTES + 1),
        "é" * 121,
        "\ud800",
    ],
)
def test_unsafe_component_examples(name: str) -> None:
    assert not is_safe_component(name)


# --- Properties --------------------------------------------------------------------------------

_ANY_TEXT = st.text(st.characters())
_KEYS = st.one_of(
    _ANY_TEXT,
    st.builds(lambda a, b: f"agent:{a}:{b}", _ANY_TEXT, _ANY_TEXT),
    st.builds(
        lambda a, b: f"agent:{a}:{b}",
        st.text(st.sampled_from(".:/\\\0a")),
        st.text(st.sampled_from(".:/\\\0a")),
    ),
    st.builds(lambda a, n: f"agent:{a}:{'é' * n}", _ANY_TEXT, st.integers(0, 400)),
)
_REAL_IDS = st.one_of(st.none(), _ANY_TEXT)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data-root").resolve()


def _assert_safe_identity(identity: SessionIdentity, root: Path) -> None:
    assert is_safe_agent_name(identity.agent_name)
    assert is_safe_session_id(identity.session_id)
    journal = (root / identity.agent_name / f"offload-{identity.session_id}.jsonl").resolve(
        strict=False
    )
    assert journal.parent.parent == root
    assert journal.is_relative_to(root)


@settings(max_examples=300, deadline=None)
@given(key=_KEYS, real_session_id=_REAL_IDS)
def test_every_key_is_refused_or_stays_inside_the_data_root(
    data_root: Path, key: str, real_session_id: str | None
) -> None:
    try:
        identity = resolve_identity(key, real_session_id)
    except InvalidSessionKeyError:
        return
    _assert_safe_identity(identity, data_root)


@settings(max_examples=300, deadline=None)
@given(key=_KEYS, real_session_id=_REAL_IDS)
def test_resolve_identity_is_deterministic(key: str, real_session_id: str | None) -> None:
    assert resolve_identity(key, real_session_id) == resolve_identity(key, real_session_id)


@settings(max_examples=300, deadline=None)
@given(agent=_ANY_TEXT.filter(lambda s: s != "" and ":" not in s), rest=_ANY_TEXT.filter(bool))
def test_well_formed_keys_parse_to_the_sanitized_parts(agent: str, rest: str) -> None:
    parsed = parse_session_key(f"agent:{agent}:{rest}")
    assert parsed is not None
    assert parsed.session_id == sanitize_name(rest)
    assert parsed.agent_name.startswith(sanitize_name(agent))


_PLAIN_TEXT = st.text(
    st.characters(
        codec="utf-8",
        exclude_characters='<>:"/\\|?*.' + "".join(chr(c) for c in range(0x20)),
    )
)


@settings(max_examples=300, deadline=None)
@given(first=_PLAIN_TEXT, second=_PLAIN_TEXT)
def test_distinct_long_session_ids_stay_distinct(first: str, second: str) -> None:
    pad = "p" * 250
    one = resolve_identity("agent:a:" + pad + first).session_id
    two = resolve_identity("agent:a:" + pad + second).session_id
    assert (one == two) == (first == second)


def _seed_names(key: str, real_session_id: str | None) -> tuple[str, str] | None:
    """The seed's own (agent, session id) for a key that parses, or None."""
    parsed = parse_session_key(key)
    if parsed is None:
        return None
    return parsed.agent_name, real_session_id or parsed.session_id


def _seed_path_is_usable(agent: str, session_id: str) -> bool:
    """The seed's path stays one file in one directory inside the root, and the file system
    takes both names."""
    try:
        agent_bytes, journal_bytes = agent.encode(), f"offload-{session_id}.jsonl".encode()
    except UnicodeEncodeError:
        return False
    return (
        agent not in (".", "..")
        and "/" not in agent + session_id
        and "\0" not in agent + session_id
        and len(agent_bytes) <= 255
        and len(journal_bytes) <= 255
    )


@settings(max_examples=500, deadline=None)
@given(key=_KEYS, real_session_id=_REAL_IDS)
def test_every_usable_seed_path_is_the_very_file_the_seed_uses(
    key: str, real_session_id: str | None
) -> None:
    seed = _seed_names(key, real_session_id)
    if seed is None or not _seed_path_is_usable(*seed):
        return
    identity = resolve_identity(key, real_session_id)
    assert (identity.agent_name, identity.session_id) == seed
