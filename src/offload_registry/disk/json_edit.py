"""Set one member of a JSON object given as text, leaving every other character in place.

A status mark must change only the ``offloaded`` value of a journal line: re-encoding the
whole entry would strip the seed's unsafe characters from its id (so a reader would find a
different id, or none) and recurse through its nesting (so one deep entry would break every
mark). Here the object's top-level members are found by a scan that never recurses: strings
are skipped by a regular expression and containers by counting brackets, so any depth costs
only time. Pure (no I/O).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final

__all__ = ["set_member"]

# The string scanner json.loads uses (escapes decoded, strict about control characters).
_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS: Final = re.compile(r"[ \t\n\r]*")
_STRING_REST: Final = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""A string's body after its opening quote, up to and including the closing quote."""
_DEPTH_TOKEN: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
"""What changes or hides a container's depth: a whole string, or a bracket."""
_SCALAR: Final = re.compile(r"[-+.0-9a-zA-Z]+")
"""A number, ``true``, ``false`` or ``null`` (the text is known to be JSON)."""


def _skip_ws(text: str, at: int) -> int:
    match = _WS.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(text: str, at: int, char: str) -> None:
    if text[at : at + 1] != char:
        raise ValueError(f"expected {char!r} at char {at}")


def _value_end(text: str, at: int) -> int:
    """Where the JSON value starting at ``at`` ends (iterative at any depth)."""
    first = text[at : at + 1]
    if first == '"':
        match = _STRING_REST.match(text, at + 1)
        if match is None:
            raise ValueError(f"unterminated string at char {at}")
        return match.end()
    if first in ("[", "{"):
        depth = 0
        for token in _DEPTH_TOKEN.finditer(text, at):
            bracket = token.group()
            if bracket[0] == '"':
                continue
            depth += 1 if bracket in "[{" else -1
            if depth == 0:
                return token.end()
        raise ValueError(f"unclosed container at char {at}")
    match = _SCALAR.match(text, at)
    if match is None:
        raise ValueError(f"expected a JSON value at char {at}")
    return match.end()


def member_spans(text: str) -> tuple[list[tuple[str, int, int]], int]:
    """The top-level members of the JSON object ``text`` as ``(key, value start, value end)``
    in order, and the index of the object's closing ``}``.

    ``text`` must be one JSON object, optionally surrounded by JSON whitespace; keys are
    decoded (``"offloade\\u0064"`` is ``offloaded``). Raises ``ValueError`` on text that is
    not such an object (it does not validate the members' values)."""
    at = _skip_ws(text, 0)
    _expect(text, at, "{")
    at = _skip_ws(text, at + 1)
    members: list[tuple[str, int, int]] = []
    if text[at : at + 1] == "}":
        return members, at
    while True:
        _expect(text, at, '"')
        key, at = _scanstring(text, at + 1, True)
        at = _skip_ws(text, at)
        _expect(text, at, ":")
        start = _skip_ws(text, at + 1)
        end = _value_end(text, start)
        members.append((key, start, end))
        at = _skip_ws(text, end)
        if text[at : at + 1] == ",":
            at = _skip_ws(text, at + 1)
            continue
        _expect(text, at, "}")
        return members, at


def set_member(text: str, key: str, encoded_value: str) -> str:
    """``text`` (one JSON object) with its member ``key`` set to ``encoded_value`` (JSON).

    Only that value's characters change: when ``key`` occurs more than once at the top
    level, the last one (the one ``JSON.parse`` keeps) gets the value; when it is absent,
    ``,"key":value`` is inserted just before the closing ``}``. Raises ``ValueError`` as
    :func:`member_spans` does.
    """
    members, close = member_spans(text)
    for name, start, end in reversed(members):
        if name == key:
            return text[:start] + encoded_value + text[end:]
    encoded_key = json.dumps(key, ensure_ascii=False)
    separator = "," if members else ""
    return text[:close] + separator + encoded_key + ":" + encoded_value + text[close:]
