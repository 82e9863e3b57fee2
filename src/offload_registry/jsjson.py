"""JavaScript-compatible text and JSON helpers, so Python reads journals exactly as the seed.

The seed is Node code: it trims journal lines with ``String.prototype.trim``, parses them
with ``JSON.parse``, tests ``offloaded`` with JavaScript truthiness and writes entries with
``JSON.stringify``. Each helper here reproduces one of those, with the differences that
remain written down next to it. Everything is pure (no I/O).

Number semantics, shared by every parse path (so the fast and the slow path agree): an
integer literal in the 64-bit range ``[-2**63, 2**64)`` becomes an exact ``int``; one outside
it becomes the nearest ``float``, which is what ``JSON.parse`` gives for every number (and
so ``1e400`` or a 400-digit integer is ``inf``, JavaScript's ``Infinity``). Other numbers are
floats, correctly rounded, as in JavaScript.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

__all__ = [
    "JS_WHITESPACE",
    "UNSAFE_CHARS",
    "clean_json",
    "dumps_js",
    "encode_entry",
    "js_trim",
    "js_truthy",
    "parse_json_line",
    "strip_unsafe",
]

# --- String.prototype.trim --------------------------------------------------------------

#: ECMAScript WhiteSpace and LineTerminator: what ``String.prototype.trim`` strips. Not
#: U+0085, U+180E, U+200B or the C0 separators U+001C-U+001F (Python's ``str.strip()``
#: strips those, which is why it must not be used on journal lines).
JS_WHITESPACE: Final[str] = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_trim(s: str) -> str:
    """``s.trim()`` in JavaScript: strip ECMAScript whitespace and line terminators."""
    return s.strip(JS_WHITESPACE)


# --- unsafe characters --------------------------------------------------------------------

_UNSAFE_RANGES: Final[tuple[tuple[int, int], ...]] = (
    (0xFFFD, 0xFFFD),  # the replacement character left by undecodable bytes
    (0x0000, 0x0008),
    (0x000B, 0x000C),
    (0x000E, 0x001F),
    (0x0080, 0x009F),  # C1 controls, including U+0085
    (0xD800, 0xDFFF),  # surrogate code points: always lone in a Python str from JSON
    (0x200B, 0x200F),  # zero-width and direction marks
    (0x2028, 0x2029),
    (0xFEFF, 0xFEFF),  # byte-order mark / zero-width no-break space
)

#: Characters the seed strips from strings before writing and from a line before retrying
#: its parse. Tab, line feed and carriage return are not among them.
UNSAFE_CHARS: Final[frozenset[str]] = frozenset(
    chr(c) for lo, hi in _UNSAFE_RANGES for c in range(lo, hi + 1)
)

_UNSAFE_RE: Final[re.Pattern[str]] = re.compile(
    "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _UNSAFE_RANGES) + "]+"
)


def strip_unsafe(s: str) -> str:
    """``s`` without any character of :data:`UNSAFE_CHARS`."""
    return _UNSAFE_RE.sub("", s)


# --- JSON.parse ---------------------------------------------------------------------------

_INT64_MIN: Final = -(2**63)
_UINT64_END: Final = 2**64


def _parse_int(literal: str) -> int | float:
    # Same rule as orjson's fast path (see the module docstring); float() never hits the
    # int max-str-digits limit, so a huge literal is inf as in JavaScript, not an error.
    if len(literal) <= 18:
        return int(literal)
    if len(literal) <= 20:
        value = int(literal)
        if _INT64_MIN <= value < _UINT64_END:
            return value
    return float(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The string scanner json.loads itself uses (C when available): same escapes, lone
# surrogates and control-character rule. Not in typeshed, but public in json.decoder.
_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS_RE: Final = re.compile(r"[ \t\n\r]+")
_NUMBER_RE: Final = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS: Final[tuple[tuple[str, Any], ...]] = (("true", True), ("false", False), ("null", None))


def _skip_ws(s: str, idx: int) -> int:
    match = _WS_RE.match(s, idx)
    return idx if match is None else match.end()


def _syntax_error(what: str, idx: int) -> ValueError:
    return ValueError(f"expected {what} at char {idx}")


def _parse_key(s: str, idx: int) -> tuple[str, int]:
    """``"key" :`` at ``idx``; returns the key and the index of its value."""
    if s[idx : idx + 1] != '"':
        raise _syntax_error("a property name", idx)
    key, idx = _scanstring(s, idx + 1, True)
    idx = _skip_ws(s, idx)
    if s[idx : idx + 1] != ":":
        raise _syntax_error("':'", idx)
    return key, _skip_ws(s, idx + 1)


def _parse_scalar(s: str, idx: int) -> tuple[Any, int]:
    """A string, number, ``true``, ``false`` or ``null`` at ``idx``."""
    if s[idx : idx + 1] == '"':
        return _scanstring(s, idx + 1, True)
    number = _NUMBER_RE.match(s, idx)
    if number is not None:
        integer, frac, exp = number.groups()
        value = float(number.group()) if frac or exp else _parse_int(integer)
        return value, number.end()
    for literal, literal_value in _LITERALS:
        if s.startswith(literal, idx):
            return literal_value, idx + len(literal)
    raise _syntax_error("a JSON value", idx)


def _parse_nested(s: str) -> Any:
    """A non-recursive JSON parser with ``json.loads`` semantics, for any nesting depth.

    Used only when ``json.loads`` hits its recursion limit. Open containers live on an
    explicit stack, with the pending key of each open object; objects keep a duplicate key
    at its first position with its last value, as ``json.loads`` and ``JSON.parse`` do.
    """
    stack: list[tuple[list[Any] | dict[str, Any], str]] = []
    idx = _skip_ws(s, 0)
    while True:
        # A value starts at idx: open a container and descend, or read a whole value.
        opener = s[idx : idx + 1]
        value: Any
        if opener in ("[", "{"):
            closer = "]" if opener == "[" else "}"
            idx = _skip_ws(s, idx + 1)
            if s[idx : idx + 1] == closer:
                value, idx = ([] if opener == "[" else {}), idx + 1
            elif opener == "[":
                stack.append(([], ""))
                continue
            else:
                key, idx = _parse_key(s, idx)
                stack.append(({}, key))
                continue
        else:
            value, idx = _parse_scalar(s, idx)
        # The value is complete: store it, closing every container it completes.
        while stack:
            container, key = stack[-1]
            if isinstance(container, list):
                container.append(value)
                closer = "]"
            else:
                container[key] = value
                closer = "}"
            idx = _skip_ws(s, idx)
            if s[idx : idx + 1] == ",":
                idx = _skip_ws(s, idx + 1)
                if isinstance(container, dict):
                    key, idx = _parse_key(s, idx)
                    stack[-1] = (container, key)
                break  # the next member's value starts at idx
            if s[idx : idx + 1] != closer:
                raise _syntax_error(f"',' or '{closer}'", idx)
            idx += 1
            stack.pop()
            value = container
        else:
            if _skip_ws(s, idx) != len(s):
                raise _syntax_error("the end of the document", _skip_ws(s, idx))
            return value


def parse_json_line(text: str, *, any_depth: bool = True) -> Any:
    """Parse ``text`` as ``JSON.parse`` does; raise ``ValueError`` when it would throw.

    Rejects ``NaN``, ``Infinity`` and ``-Infinity`` (``json.loads`` accepts them), a byte-order
    mark, trailing commas and raw control characters in strings; accepts lone-surrogate
    escapes such as ``"\\ud800"`` and raw lone surrogates (orjson refuses both); the last of
    duplicate keys wins, at the position of the first; numbers follow the rule in the module
    docstring. Only space, tab, line feed and carriage return may surround tokens.

    Any nesting depth is accepted, as in V8, whose JSON parser is not recursive: orjson stops
    at 1,024 levels and ``json.loads`` at the recursion limit, and past both an iterative
    parser takes over (about a microsecond per level), so depth is bounded by memory only.
    ``any_depth=False`` raises ``RecursionError`` there instead, and skips orjson (which goes
    a little deeper): for a document that is written back with :func:`dumps_js`, whose encoder
    stops where ``json.loads`` does.

    Fast path: ``orjson.loads``; only when it refuses the text does the stdlib parser decide.
    """
    if any_depth:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        if not any_depth:
            raise
        return _parse_nested(text)


# --- truthiness ---------------------------------------------------------------------------


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a parsed JSON value.

    False for ``None`` (null), ``False``, ``0``, ``0.0``, ``-0.0``, NaN and ``""``; true for
    everything else, including ``[]``, ``{}``, ``"false"``, ``"0"`` and non-zero numbers.
    """
    if value is None or value is False:
        return False
    if isinstance(value, float):
        return value != 0.0 and not math.isnan(value)
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return True


# --- JSON.stringify -----------------------------------------------------------------------


def _clean(value: Any) -> Any:
    if type(value) is str:
        return _UNSAFE_RE.sub("", value)
    if isinstance(value, Mapping):
        return {
            (_UNSAFE_RE.sub("", k) if type(k) is str else k): _clean(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if type(value) is float and not math.isfinite(value):
        return None  # JSON.stringify writes NaN and the infinities as null
    if isinstance(value, str):  # a str subclass: plain str, as JavaScript would see it
        return _UNSAFE_RE.sub("", str(value))
    return value


def clean_json(value: Any) -> Any:
    """``value`` as :func:`encode_entry` writes it, so as a reader gets it back: unsafe
    characters stripped from every string (keys too: keys that become equal merge, the later
    value wins), tuples as lists, non-finite floats as ``None``. Idempotent; copies.

    (A reader would also see an integer beyond 64 bits as a float; truthiness and equality
    with ``"deleted"``, all the state reads of a status, are the same either way.)
    """
    return _clean(value)


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """One journal line: ``JSON.stringify(entry)`` of the entry with unsafe characters
    stripped from every string (keys and values, at any depth), then ``b"\\n"``.

    Compact, UTF-8 (non-ASCII is not escaped), key order kept. Non-finite floats become
    ``null`` as in JavaScript. Floats keep Python's spelling (``100.0``, ``-0.0``) where
    JavaScript would print ``100`` and ``0``: the same numbers for every JSON reader.
    Integers outside 64 bits are written exactly. Stripping can merge two keys that differ
    only by unsafe characters; the later value wins, as in a JavaScript object.

    Raises ``TypeError`` for a value JSON cannot hold and ``ValueError`` (``RecursionError``)
    for nesting deeper than the interpreter's recursion limit.
    """
    cleaned = _clean(entry)
    try:
        return orjson.dumps(cleaned, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits, non-str keys or nesting past orjson's 255 levels.
        text = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"


_LONE_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")


def _finite(value: Any) -> Any:
    """``value`` with NaN and the infinities as ``None`` (plain loops: one frame a level)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            out[key] = _finite(item)
        return out
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for item in value:
            items.append(_finite(item))
        return items
    return value


def dumps_js(value: Any, *, indent: int | None = None) -> str:
    """JSON as ``JSON.stringify(value, null, indent)`` writes it: one line without ``indent``,
    non-ASCII characters as they are, but each lone surrogate (a journal may hold
    ``"\\ud800"``, which the seed reads fine) as a ``\\uXXXX`` escape, so the text always
    encodes to UTF-8 (JSON syntax is ASCII, so every surrogate in the output is inside a
    string, where the escape means the same code point); NaN and the infinities (which
    :func:`parse_json_line` gives for an overflowing number such as ``1e400``) as ``null``.
    Floats keep Python's spelling, as in :func:`encode_entry`. Nesting deeper than the
    interpreter's recursion limit raises ``RecursionError``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False)
    except ValueError:  # a non-finite float somewhere (rare): write it as null
        text = json.dumps(_finite(value), ensure_ascii=False, indent=indent, allow_nan=False)
    return _LONE_SURROGATE_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
