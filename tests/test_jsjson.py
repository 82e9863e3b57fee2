"""The JavaScript-compatible helpers: trim, truthiness, JSON.parse and JSON.stringify."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_registry.jsjson import (
    JS_WHITESPACE,
    UNSAFE_CHARS,
    encode_entry,
    js_trim,
    js_truthy,
    parse_json_line,
    strip_unsafe,
)

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run_node(script: str, stdin: str = "") -> Any:
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "-e", script], input=stdin, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(proc.stdout)


def nested_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


# --- js_trim ------------------------------------------------------------------------------

TRIMMED = [
    "\t",
    "\n",
    "\v",
    "\f",
    "\r",
    " ",
    "\u00a0",
    "\u1680",
    *[chr(c) for c in range(0x2000, 0x200B)],
    "\u2028",
    "\u2029",
    "\u202f",
    "\u205f",
    "\u3000",
    "\ufeff",
]
KEPT = ["\u0085", "\x1c", "\x1d", "\x1e", "\x1f", "\u180e", "\u200b", "\u2060", "\x00", "x"]


@pytest.mark.parametrize("char", TRIMMED, ids=lambda c: f"U+{ord(c):04X}")
def test_js_trim_strips_ecmascript_whitespace(char: str) -> None:
    assert js_trim(f"{char}{char}a{char}b{char}") == f"a{char}b"


@pytest.mark.parametrize("char", KEPT, ids=lambda c: f"U+{ord(c):04X}")
def test_js_trim_keeps_what_python_strip_would_remove_or_javascript_keeps(char: str) -> None:
    assert js_trim(f"{char}a{char}") == f"{char}a{char}"


def test_js_trim_set_is_exactly_the_trimmed_table() -> None:
    assert set(JS_WHITESPACE) == set(TRIMMED)


@needs_node
def test_js_trim_set_equals_nodes_trim_over_the_whole_bmp() -> None:
    node_set = run_node(
        "const out = []; for (let c = 0; c < 0x10000; c++)"
        " if (String.fromCharCode(c).trim() === '') out.push(c);"
        " console.log(JSON.stringify(out));"
    )
    assert {chr(c) for c in node_set} == set(JS_WHITESPACE)


# --- strip_unsafe -------------------------------------------------------------------------

SPEC_UNSAFE = {
    0xFFFD,
    *range(0x00, 0x09),
    0x0B,
    0x0C,
    *range(0x0E, 0x20),
    *range(0x80, 0xA0),
    *range(0xD800, 0xE000),
    *range(0x200B, 0x2010),
    0x2028,
    0x2029,
    0xFEFF,
}


def test_unsafe_chars_are_exactly_the_spec_list() -> None:
    assert {ord(c) for c in UNSAFE_CHARS} == SPEC_UNSAFE


def test_strip_unsafe_removes_every_unsafe_char_and_keeps_the_rest_of_the_bmp() -> None:
    bmp = "".join(chr(c) for c in range(0x10000))
    assert strip_unsafe(bmp) == "".join(chr(c) for c in range(0x10000) if c not in SPEC_UNSAFE)


@pytest.mark.parametrize("char", ["\t", "\n", "\r", " ", "\u00a0", "\u2060", "é", "😀"])
def test_strip_unsafe_keeps_ordinary_whitespace_and_text(char: str) -> None:
    assert strip_unsafe(f"a{char}b") == f"a{char}b"


def test_strip_unsafe_removes_lone_surrogates_and_the_replacement_char() -> None:
    assert strip_unsafe("a\ud800b\udfffc\ufffd") == "abc"


# --- js_truthy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        (False, False),
        (0, False),
        (0.0, False),
        (-0.0, False),
        (math.nan, False),
        ("", False),
        (True, True),
        (1, True),
        (-1, True),
        (0.5, True),
        (math.inf, True),
        (2**70, True),
        ("false", True),
        ("0", True),
        (" ", True),
        ("deleted", True),
        ([], True),
        ({}, True),
        ([0], True),
    ],
    ids=repr,
)
def test_js_truthy_follows_javascript(value: Any, truthy: bool) -> None:
    assert js_truthy(value) is truthy


# --- parse_json_line ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a":-Infinity}'])
def test_parse_rejects_non_finite_constants(text: str) -> None:
    with pytest.raises(ValueError):
        parse_json_line(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\ufeff{}",
        "{}\x0c",
        "\v[]",
        "[1,]",
        "{'a':1}",
        '"a\x01b"',
        '"a\tb"',
        "01",
        "1.",
        "{}{}",
    ],
    ids=repr,
)
def test_parse_rejects_what_json_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_json_line(text)


@pytest.mark.parametrize("text", [" {} ", "\t[]\r\n", "\r\n1\n"], ids=repr)
def test_parse_allows_json_whitespace_around_the_value(text: str) -> None:
    assert parse_json_line(text) == json.loads(text)


@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\udc00b"', '["\\udbff", "\\ud83d\\ude00"]'])
def test_parse_accepts_lone_surrogate_escapes_like_json(text: str) -> None:
    assert parse_json_line(text) == json.loads(text)


def test_parse_accepts_a_raw_lone_surrogate_inside_a_string() -> None:
    assert parse_json_line('{"a":"x\ud800y"}') == {"a": "x\ud800y"}


def test_parse_keeps_the_last_duplicate_key_at_the_first_position() -> None:
    value = parse_json_line('{"a":1,"b":2,"a":3}')
    assert value == {"a": 3, "b": 2}
    assert list(value) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (str(2**64 - 1), 2**64 - 1),
        (str(-(2**63)), -(2**63)),
        ("9007199254740993", 9007199254740993),
        (str(2**64), float(2**64)),
        (str(-(2**63) - 1), float(-(2**63) - 1)),
        ("1" * 400, math.inf),
        ("1e400", math.inf),
        ("-1e400", -math.inf),
        ("1e-400", 0.0),
        ("-0", 0),
    ],
    ids=lambda v: str(v)[:24],
)
def test_parse_numbers_exact_in_64_bits_and_doubles_beyond(text: str, expected: Any) -> None:
    value = parse_json_line(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_is_the_same_for_a_big_int_nested_past_the_fast_path() -> None:
    deep = "[" * 1100 + str(2**64) + "]" * 1100
    value: Any = parse_json_line(deep)
    for _ in range(1100):
        value = value[0]
    assert value == float(2**64)


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_parse_accepts_any_nesting_depth_like_v8(depth: int) -> None:
    assert nested_depth(parse_json_line("[" * depth + "1" + "]" * depth)) == depth


def test_parse_accepts_deeply_nested_objects() -> None:
    value = parse_json_line('{"k":' * 5000 + "null" + "}" * 5000)
    for _ in range(5000):
        value = value["k"]
    assert value is None


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 4999,
        "[" * 5000 + "1,]" + "]" * 4999,
        "[" * 5000 + "NaN" + "]" * 5000,
        "[" * 5000 + "]" * 5000 + "x",
        '{"k":' * 5000 + "1" + "}" * 4999 + "]",
        '{"k":' * 5000 + '"\x01"' + "}" * 5000,
    ],
    ids=["unclosed", "trailing-comma", "nan", "extra-data", "wrong-closer", "control-char"],
)
def test_parse_rejects_invalid_deeply_nested_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_json_line(text)


@needs_node
def test_parse_agrees_with_nodes_json_parse_on_edge_cases() -> None:
    cases = [
        "NaN",
        '"\\ud800"',
        '{"a":1,"a":2}',
        "\ufeff{}",
        "{}\u00a0",
        '"\u2028"',
        '"\x7f\u0085"',
        '"\x01"',
        "[1,]",
        "-0",
        "1E2",
        "[" * 5000 + "]" * 5000,
    ]
    # Node answers [parsed?, JSON.stringify(value) or null when too deep to stringify].
    node = run_node(
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf-8'));"
        "const str = v => { try { return JSON.stringify(v); } catch { return null; } };"
        "console.log(JSON.stringify(cases.map(c => { try { return [true, str(JSON.parse(c))]; }"
        " catch { return [false, null]; } })));",
        json.dumps(cases),
    )
    for text, (ok, node_json) in zip(cases, node, strict=True):
        try:
            ours: Any = parse_json_line(text)
        except ValueError:
            assert not ok, f"node parsed {text[:20]!r}"
            continue
        assert ok, f"node refused {text[:20]!r}"
        if node_json is not None:
            assert ours == json.loads(node_json), text


# --- property: the orjson fast path equals the stdlib slow path ---------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=()))
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values, st.booleans(), st.sampled_from([None, 0, 2]))
def test_fast_path_equals_stdlib_json(value: Any, ascii_only: bool, indent: int | None) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert parse_json_line(text) == json.loads(text)


@given(json_values)
@settings(max_examples=50)
def test_deep_path_equals_stdlib_json(value: Any) -> None:
    text = json.dumps(value)
    parsed: Any = parse_json_line("[" * 1100 + text + "]" * 1100)
    for _ in range(1100):
        (parsed,) = parsed
    assert parsed == json.loads(text)


NUMBER_LITERAL = r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?"


@given(st.from_regex(NUMBER_LITERAL, fullmatch=True))
def test_number_literals_follow_the_documented_rule(text: str) -> None:
    is_int = not any(c in text for c in ".eE")
    in_range = is_int and -(2**63) <= int(text) < 2**64
    expected = int(text) if in_range else float(text)
    value = parse_json_line(text)
    assert value == expected
    assert type(value) is type(expected)


# --- encode_entry -------------------------------------------------------------------------


def test_encode_is_compact_utf8_in_key_order_with_one_newline() -> None:
    line = encode_entry({"z": 1, "a": "é 😀", "m": [True, None, {"k": "v"}]})
    assert line == '{"z":1,"a":"é 😀","m":[true,null,{"k":"v"}]}\n'.encode()


def test_encode_strips_unsafe_chars_from_keys_and_values_at_any_depth() -> None:
    line = encode_entry({"a\u200b": ["x\u2028y", {"k\ufeff": "\x01v\ud800"}], "s": "\ufffd"})
    assert line == b'{"a":["xy",{"k":"v"}],"s":""}\n'


def test_encode_never_writes_a_lone_surrogate() -> None:
    line = encode_entry({"tool_call_id": "a\udc00b", "summary": "\ud83d"})
    line.decode("utf-8")  # strict: a surrogate would not encode
    assert parse_json_line(line.decode()) == {"tool_call_id": "ab", "summary": ""}


def test_encode_escapes_tab_newline_and_carriage_return_like_json_stringify() -> None:
    assert encode_entry({"s": "a\tb\nc\rd"}) == b'{"s":"a\\tb\\nc\\rd"}\n'


def test_encode_writes_non_finite_floats_as_null_like_json_stringify() -> None:
    assert encode_entry({"a": math.nan, "b": math.inf, "c": -math.inf}) == (
        b'{"a":null,"b":null,"c":null}\n'
    )


def test_encode_writes_integers_beyond_64_bits_exactly() -> None:
    assert encode_entry({"n": 2**70, "s": "\u2028"}) == f'{{"n":{2**70},"s":""}}\n'.encode()


def test_encode_rejects_values_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        encode_entry({"a": object()})


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return strip_unsafe(value)
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, dict):
        return {strip_unsafe(k): _cleaned(v) for k, v in value.items()}
    return value


@given(st.dictionaries(st.text(st.characters(codec=None, exclude_categories=())), json_values))
def test_encode_round_trips_to_the_cleaned_entry_on_one_line(entry: dict[str, Any]) -> None:
    line = encode_entry(entry)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert parse_json_line(line.decode("utf-8")) == _cleaned(entry)
