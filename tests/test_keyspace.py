"""The key layout: one builder for every key, one hash tag per session, safe for any name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload_registry.disk.layout import DATA_ROOT_ID_FILE
from offload_registry.errors import ConfigurationError
from offload_registry.keys import resolve_identity
from offload_registry.store.keyspace import (
    DEFAULT_PREFIX,
    STATE_FIELDS,
    Keyspace,
    deployment_id,
    session_tag,
    validate_prefix,
)
from offload_registry.store.startup import INCLUDE, STATE_FIELDS_LINE, script_text

KEY_SHAPE = re.compile(
    r"offload-registry:v1:[0-9a-f]{12}:\{[0-9a-f]{32}\}:(state|claims|deltas|lock|lease|fence)"
)
# Every code point, lone surrogates included.
names = st.text(st.characters(exclude_categories=()), max_size=64)


def cluster_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first '{' and the next '}'."""
    start = key.find("{")
    end = key.find("}", start + 1)
    assert start >= 0 and end > start + 1, key
    return key[start + 1 : end]


@pytest.fixture
def keyspace(tmp_path: Path) -> Keyspace:
    return Keyspace.for_data_root(DEFAULT_PREFIX, tmp_path)


def test_session_keys_follow_the_documented_layout(keyspace: Keyspace) -> None:
    keys = keyspace.session("main", "s1")
    for key in keys.all:
        assert KEY_SHAPE.fullmatch(key), key
        assert key.startswith(f"offload-registry:v1:{keyspace.deployment}:{keys.tag}:")


def test_every_key_of_a_session_shares_one_cluster_hash_tag(keyspace: Keyspace) -> None:
    keys = keyspace.session("main", "s1")
    assert {cluster_tag(key) for key in keys.all} == {keys.tag.strip("{}")}


def test_data_keys_are_the_state_claims_and_deltas_keys(keyspace: Keyspace) -> None:
    keys = keyspace.session("main", "s1")
    assert keys.data == (keys.state, keys.claims, keys.deltas)
    assert set(keys.all) == {*keys.data, keys.lock, keys.lease, keys.fence}
    assert len(set(keys.all)) == 6


def test_session_keys_are_deterministic(keyspace: Keyspace) -> None:
    assert keyspace.session("main", "s1") == keyspace.session("main", "s1")


def test_agent_and_session_boundaries_are_unambiguous(keyspace: Keyspace) -> None:
    assert keyspace.session("ab", "c").tag != keyspace.session("a", "bc").tag


@given(agent=names, session=names)
def test_any_agent_and_session_strings_give_a_well_formed_tag(agent: str, session: str) -> None:
    keys = Keyspace(deployment="0123456789ab").session(agent, session)
    assert KEY_SHAPE.fullmatch(keys.state)
    assert cluster_tag(keys.state) == keys.tag[1:-1]


@given(agent=names, session=names)
def test_lone_surrogates_and_braces_in_names_are_safe(agent: str, session: str) -> None:
    tag = session_tag(agent + "\ud800{", session + "}*\n")
    assert re.fullmatch(r"\{[0-9a-f]{32}\}", tag)


@given(a=st.tuples(names, names), b=st.tuples(names, names))
def test_distinct_sessions_get_distinct_tags(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a != b:
        assert session_tag(*a) != session_tag(*b)


def test_names_never_appear_raw_in_keys(keyspace: Keyspace) -> None:
    keys = keyspace.session("agent-name", "session-id")
    assert not any("agent-name" in key or "session-id" in key for key in keys.all)


def test_session_for_uses_the_identitys_on_disk_names(keyspace: Keyspace) -> None:
    identity = resolve_identity("agent:main:s1", "real-id")
    assert keyspace.session_for(identity) == keyspace.session(identity.agent_name, "real-id")


def test_without_an_id_file_the_deployment_id_is_twelve_hex_digits_of_the_resolved_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert re.fullmatch(r"[0-9a-f]{12}", deployment_id(tmp_path / "real"))
    assert deployment_id(tmp_path / "link") == deployment_id(tmp_path / "real")
    assert deployment_id(tmp_path / "real" / ".." / "real") == deployment_id(tmp_path / "real")


def test_different_data_roots_share_no_key(tmp_path: Path) -> None:
    one = Keyspace.for_data_root(DEFAULT_PREFIX, tmp_path / "one")
    two = Keyspace.for_data_root(DEFAULT_PREFIX, tmp_path / "two")
    assert one.deployment != two.deployment
    one_keys = {*one.session("main", "s1").all, one.marker(), one.deployment_key()}
    assert not any(re.fullmatch(two.pattern().replace("*", ".*"), key) for key in one_keys)


def test_pattern_covers_every_key_of_the_deployment(keyspace: Keyspace) -> None:
    glob = re.escape(keyspace.pattern()[:-1]) + ".*"
    keys = [*keyspace.session("a", "b").all, keyspace.marker(), keyspace.deployment_key()]
    assert all(re.fullmatch(glob, key) for key in keys)
    assert keyspace.pattern() == f"offload-registry:v1:{keyspace.deployment}:*"


def test_state_pattern_matches_only_state_keys(keyspace: Keyspace) -> None:
    glob = re.escape(keyspace.state_pattern()).replace(r"\*", ".*")
    keys = keyspace.session("a", "b")
    assert re.fullmatch(glob, keys.state)
    assert not any(re.fullmatch(glob, key) for key in (keys.claims, keys.lock, keyspace.marker()))


def test_marker_deployment_key_and_channel_are_distinct_and_untagged(keyspace: Keyspace) -> None:
    names = [keyspace.marker(), keyspace.deployment_key(), keyspace.channel()]
    assert len(set(names)) == 3
    assert not any("{" in name or "}" in name for name in names)


def test_prefix_and_schema_appear_in_every_key() -> None:
    keyspace = Keyspace("my-app:offload", 3, deployment="dep")
    assert keyspace.session("a", "b").state.startswith("my-app:offload:v3:dep:{")
    assert keyspace.marker() == "my-app:offload:v3:dep:marker"


@pytest.mark.parametrize(
    "prefix",
    ["", "a{b", "a}b", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a*", "a?", "a[b]", "a\\b"],
)
def test_unsafe_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        Keyspace(prefix, deployment="dep")


def test_overlong_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        validate_prefix("p" * 129)


@pytest.mark.parametrize("deployment", ["", "a:b", "{x}", "a*", "x" * 65])
def test_unsafe_deployment_ids_are_refused(deployment: str) -> None:
    with pytest.raises(ConfigurationError, match="deployment"):
        Keyspace(deployment=deployment)


@pytest.mark.parametrize("schema", [0, -1, True, 1.0])
def test_non_positive_or_non_int_schemas_are_refused(schema: object) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        Keyspace(DEFAULT_PREFIX, schema, deployment="dep")  # type: ignore[arg-type]


def test_the_deployment_id_comes_from_the_data_roots_id_file_not_its_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "offload", tmp_path / "b" / "mnt"
    for root in (first, second):
        root.mkdir(parents=True)
        (root / DATA_ROOT_ID_FILE).write_text("0f" * 16 + "\n")  # one data root, two mounts
    assert deployment_id(first) == deployment_id(second)
    assert Keyspace.for_data_root(DEFAULT_PREFIX, first) == Keyspace.for_data_root(
        DEFAULT_PREFIX, second
    )
    (second / DATA_ROOT_ID_FILE).write_text("ab" * 16 + "\n")  # another disk at that path
    assert deployment_id(first) != deployment_id(second)
    assert deployment_id(tmp_path / "c", root_id="0f" * 16) == deployment_id(first)


def test_the_token_helpers_live_once_and_every_script_that_needs_them_includes_them() -> None:
    lua = Path(__file__).resolve().parents[1] / "src" / "offload_registry" / "lua"
    defining = [p.name for p in lua.glob("*.lua") if "local function canon" in p.read_text()]
    assert defining == ["_tokens.lua"]
    for name in ("publish.lua", "delta.lua", "lease.lua"):
        text = script_text(name)
        assert INCLUDE not in text and text.count("local function canon(") == 1, name
        assert text.startswith("#!lua")  # the shebang stays the first line


def test_the_state_hash_fields_are_named_once_and_the_scripts_take_those_names() -> None:
    """The ``state`` hash's field names live in ``store.keyspace``: a script writing the
    hash uses the Lua locals expanded from them, never a field name of its own."""
    lua = Path(__file__).resolve().parents[1] / "src" / "offload_registry" / "lua"
    assert len(set(STATE_FIELDS.values())) == len(STATE_FIELDS)
    quoted = re.compile("'(" + "|".join(STATE_FIELDS.values()) + ")'")
    for path in sorted(lua.glob("*.lua")):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        assert quoted.search(code) is None, path.name  # a loose field name in Lua
        named = set(re.findall(r"\b[A-Z_]+_FIELD\b", code))
        assert named <= set(STATE_FIELDS), (path.name, named - set(STATE_FIELDS))
        text = script_text(path.name)
        assert STATE_FIELDS_LINE not in text, path.name
        if named:  # every name it uses is defined, with the value Python reads and writes
            for name in named:
                assert f"local {name} = '{STATE_FIELDS[name]}'" in text, (path.name, name)
    assert "EPOCH_FIELD" in (lua / "publish.lua").read_text()
    assert "DELTA_COUNT_FIELD" in (lua / "delta.lua").read_text()
