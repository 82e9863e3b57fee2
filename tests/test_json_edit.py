"""set_member: one member of a JSON object set, every other character left in place."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_registry.disk.json_edit import member_spans, set_member
from offload_registry.jsjson import parse_json_line

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=8), values, max_size=6)
spacing = st.sampled_from(["", " ", "\t", "\r\n ", "  "])


def spaced_json(obj: dict[str, Any], gap: str, ascii_only: bool) -> str:
    """``obj`` as JSON with ``gap`` around every separator (and escapes when ``ascii_only``)."""
    return json.dumps(
        obj,
        ensure_ascii=ascii_only,
        separators=(gap + "," + gap, gap + ":" + gap),
    )


@settings(max_examples=300, deadline=None)
@given(objects, values, spacing, st.booleans())
def test_set_member_changes_only_that_members_value(
    obj: dict[str, Any], value: Any, gap: str, ascii_only: bool
) -> None:
    text = gap + spaced_json(obj, gap, ascii_only) + gap
    encoded = json.dumps(value)
    edited = set_member(text, "offloaded", encoded)
    assert parse_json_line(edited) == {**obj, "offloaded": value}
    if "offloaded" in obj:  # replaced where it stood: the text around the value is kept
        (start, end) = next((s, e) for k, s, e in member_spans(text)[0] if k == "offloaded")
        assert edited == text[:start] + encoded + text[end:]
    else:  # added at the end: the text before the closing brace is kept
        assert edited.startswith(text[: text.rindex("}")])


def test_set_member_sets_the_last_of_duplicate_keys_as_json_parse_keeps() -> None:
    text = '{"offloaded":1,"tool_call_id":"a","offloaded":2}'
    assert (
        set_member(text, "offloaded", "true")
        == '{"offloaded":1,"tool_call_id":"a","offloaded":true}'
    )


def test_set_member_finds_an_escaped_key_and_ignores_lookalikes_in_strings() -> None:
    text = '{"x":"\\"offloaded\\":1}","offloade\\u0064":false,"y":["}",{"offloaded":3}]}'
    assert set_member(text, "offloaded", '"deleted"') == (
        '{"x":"\\"offloaded\\":1}","offloade\\u0064":"deleted","y":["}",{"offloaded":3}]}'
    )


def test_set_member_handles_any_depth_without_recursion() -> None:
    depth = sys.getrecursionlimit() * 10
    text = '{"tool_call_id":"d","x":' + "[" * depth + "]" * depth + "}"
    assert set_member(text, "offloaded", "true") == text[:-1] + ',"offloaded":true}'


def test_set_member_adds_to_an_empty_object() -> None:
    assert set_member("{ }", "offloaded", "true") == '{ "offloaded":true}'


@pytest.mark.parametrize("text", ["[1]", '{"a" 1}', '{"a":1', '{"a":"x}', "{"])
def test_set_member_refuses_what_is_not_an_object(text: str) -> None:
    with pytest.raises(ValueError):
        set_member(text, "offloaded", "true")
