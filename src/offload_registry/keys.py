"""Session keys: parsing, sanitizing, and the safe names the registry writes under.

Pure functions only: no I/O, no clock, no randomness.

Two layers:

``parse_session_key`` / ``sanitize_name`` / ``is_internal_memory_session``
    Exactly the seed's behaviour (``SEED-SPEC.md``, "Session keys"), so a data root the seed
    wrote is found again. Their results are *not* guaranteed to be safe path components
    (``agent:.:x`` parses to agent ``"."``, a 10,000-character key to a 10,000-character id).

``resolve_identity``
    What the registry uses to pick ``<root>/<agent>/offload-<session_id>.jsonl``. It starts from
    the seed's names and then makes both components safe: each is a single path component that
    stays inside the data root, encodes to UTF-8 and is at most ``MAX_COMPONENT_BYTES`` bytes.
    The seed's defects are fixed: a key that does not parse gets a deterministic session id
    (never the wall clock) and can no longer name ``..``.

Safety rules, applied in this order to both components of every identity. Every case is
**mapped** to a deterministic name; the only **refused** case (``InvalidSessionKeyError``) is an
empty component, which no ``str`` input can produce (parsed parts are checked non-empty, the
fallback name becomes ``unknown``, an empty real session id counts as absent), so it is a guard
rather than a reachable outcome.

1. ``/``, ``\\``, NUL and the other seed characters: already ``_`` (the seed's first rule runs
   on every component before these rules). Mapped.
2. Surrogates: a high/low surrogate pair held as two code points is joined into the character
   it encodes (as JavaScript sees the key); each remaining lone surrogate becomes U+FFFD, which
   is what Node writes on disk for a lone surrogate in a path, so the seed's directories are
   still found. Mapped.
3. Empty: refused (unreachable, see above).
4. Only dots (``.``, ``..``, ``...``): every dot becomes ``_`` (``..`` -> ``__``). Mapped.
5. A leading dot (``.hidden``): that dot becomes ``_`` so nothing hides from listings and no
   component is ``.`` or ``..``. This applies to session ids too, so both components obey one
   rule and either can stand alone as a path component. Mapped.
6. Length: a component longer than ``MAX_COMPONENT_BYTES`` (200) UTF-8 bytes is cut at a
   character boundary to at most 183 bytes and ``-`` plus the first 16 hex digits of the
   SHA-256 of the whole component (after rules 1-5) is appended, so the result is at most 200
   bytes. 200 leaves room for the longest sibling file name,
   ``.offload-<session_id>.jsonl.tmp-<pid>``, under the 255-byte limit. A component of 184 to
   200 bytes that already ends in ``-`` plus 16 lowercase hex digits is hashed the same way,
   so a short name can never equal the shortened form of a long one: distinct components stay
   distinct (up to a 64-bit hash collision). Mapped.

Hostile inputs and where they end up (agent, session id):

==========================  ======================================================  =======
key                         identity                                                outcome
==========================  ======================================================  =======
``..``                      (``__``, ``fallback-<hash>``); the seed used ``..``      mapped
``.``                       (``_``, ``fallback-<hash>``)                            mapped
empty key                   (``unknown``, ``fallback-<hash>``)                      mapped
``/etc/passwd``             (``_etc_passwd``, ``fallback-<hash>``)                  mapped
``agent:..:x``              (``_``, ``x``): the seed's dot rule                     mapped
``agent:.:x``               (``_``, ``x``): leading dot                             mapped
``agent:main:.``            (``main``, ``_``): leading dot                          mapped
``agent:main:..``           (``main``, ``_``): the seed's dot rule                  mapped
``agent:x:\\0``             (``x``, ``_``): the seed's control-character rule       mapped
10,000-character key        cut to <= 200 bytes plus a hash suffix                  mapped
multi-byte characters       cut at a character boundary, <= 200 bytes               mapped
lone surrogates             each becomes U+FFFD                                     mapped
==========================  ======================================================  =======

Windows-only hazards (reserved names such as ``CON``, trailing dots or spaces) are out of
scope: the data root lives on a POSIX file system.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from offload_registry.errors import InvalidSessionKeyError

__all__ = [
    "MAX_COMPONENT_BYTES",
    "SessionIdentity",
    "SessionKey",
    "is_internal_memory_session",
    "is_safe_component",
    "parse_session_key",
    "resolve_identity",
    "sanitize_name",
]

MAX_COMPONENT_BYTES = 200
"""Largest size, in UTF-8 bytes, of an agent name or session id used in a path."""

_HASH_HEX_CHARS = 16
_HASH_SUFFIX_BYTES = 1 + _HASH_HEX_CHARS  # "-" + hex digits
_PREFIX_BYTES = MAX_COMPONENT_BYTES - _HASH_SUFFIX_BYTES

_FALLBACK_NAME_UTF16_UNITS = 64
"""The seed cuts a fallback name with JavaScript ``slice(0, 64)``: UTF-16 code units."""

# The seed's first rule: < > : " / \ | ? * and U+0000-U+001F become "_".
_UNSAFE_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
# The seed's second rule: every run of two or more dots becomes "_".
_DOT_RUNS = re.compile(r"\.{2,}")
# JavaScript `\d` is ASCII only; Python's `\d` would also match other scripts' digits.
_WORKER = re.compile(r"swebench-w([0-9]+)")
# JavaScript `/memory-.*-session-\d+/.test`: without the `s` flag `.` matches anything but the
# four line terminators, and `\d` is ASCII only.
_INTERNAL_SESSION = re.compile("memory-[^\n\r\u2028\u2029]*-session-[0-9]+")

_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_HASHED_TAIL = re.compile(r"-[0-9a-f]{16}\Z")


class SessionKey(NamedTuple):
    """A parsed ``agent:<agent-name>:<session-id>`` key, both parts sanitized as the seed does."""

    agent_name: str
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    """Where a session lives: ``<root>/<agent_name>/offload-<session_id>.jsonl``.

    ``agent_name`` and ``session_id`` each satisfy ``is_safe_component``.
    """

    session_key: str
    """The key exactly as given."""
    agent_name: str
    """A single safe path component: the agent's directory under the data root."""
    session_id: str
    """A single safe path component: the journal is ``offload-<session_id>.jsonl``."""
    fallback: bool
    """True when the key did not parse and the seed's fallback naming was used."""


def sanitize_name(name: str) -> str:
    """Apply the seed's two sanitizing rules to ``name``.

    First each of ``< > : " / \\ | ? *`` and U+0000-U+001F becomes ``_``; then every run of two
    or more dots becomes ``_``. The result is never shorter than one character per input run,
    so a non-empty name stays non-empty. It may still be ``.`` or start with a dot, be very
    long or hold lone surrogates; ``resolve_identity`` handles those.
    """
    return _DOT_RUNS.sub("_", _UNSAFE_CHARS.sub("_", name))


def parse_session_key(session_key: str) -> SessionKey | None:
    """Parse ``agent:<agent-name>:<session-id>`` exactly as the seed does, or return ``None``.

    The key is split on ``:``; the first part must be ``agent`` and the second non-empty; the
    session id is everything after the second colon (colons included) and must be non-empty.
    "Non-empty" is checked on the raw parts, before sanitizing, as the seed does (sanitizing
    never empties a non-empty part anyway).

    Worker isolation: when the session id contains ``swebench-w<N>`` (ASCII digits, first
    occurrence), the agent name becomes ``<agent>-w<N>``. The order against sanitizing does not
    matter: the pattern holds no character that sanitizing changes or produces, and the ``-w<N>``
    suffix starts with ``-`` so it cannot join a run of dots; it is matched on the raw id and
    appended to the sanitized agent name.

    The parts are sanitized with ``sanitize_name`` but are not otherwise made safe: use
    ``resolve_identity`` for path components.
    """
    parts = session_key.split(":")
    if len(parts) < 3 or parts[0] != "agent" or not parts[1]:
        return None
    raw_session_id = ":".join(parts[2:])
    if not raw_session_id:
        return None
    agent_name = sanitize_name(parts[1])
    worker = _WORKER.search(raw_session_id)
    if worker is not None:
        agent_name = f"{agent_name}-w{worker.group(1)}"
    return SessionKey(agent_name, sanitize_name(raw_session_id))


def is_internal_memory_session(session_key: str) -> bool:
    """True when ``memory-.*-session-\\d+`` occurs anywhere in the key (JavaScript semantics).

    As in JavaScript, ``.`` does not match ``\\n``, ``\\r``, U+2028 or U+2029, and ``\\d`` is
    ``[0-9]`` only.
    """
    return _INTERNAL_SESSION.search(session_key) is not None


def is_safe_component(name: str) -> bool:
    """True when ``name`` can be used on its own as one path component inside the data root.

    It must be non-empty, must not start with ``.`` (so it is neither ``.`` nor ``..`` and not
    hidden), must hold none of the seed's unsafe characters (``/``, ``\\``, NUL, the other
    controls and ``< > : " | ? *``), and must encode to at most ``MAX_COMPONENT_BYTES`` bytes
    of UTF-8 (so no lone surrogates).
    """
    if not name or name.startswith(".") or _UNSAFE_CHARS.search(name) is not None:
        return False
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) <= MAX_COMPONENT_BYTES


def resolve_identity(session_key: str, real_session_id: str | None = None) -> SessionIdentity:
    """The agent directory and journal name for ``session_key``; deterministic and pure.

    A key that parses keeps the seed's names; ``real_session_id``, when given and non-empty,
    replaces the parsed session id (sanitized with ``sanitize_name``).

    A key that does not parse gets the seed's fallback name with its defects fixed: the agent is
    the key with the seed's first sanitizing rule only, cut to 64 UTF-16 code units as
    JavaScript does, or ``unknown`` when empty; the session id is the sanitized
    ``real_session_id`` or ``fallback-<16 hex digits of SHA-256 of the key>``, the same in every
    process and on every run.

    Both components then pass the safety rules of this module's docstring, so each satisfies
    ``is_safe_component``. Raises ``InvalidSessionKeyError`` only if a component would be empty,
    which no ``str`` input produces.
    """
    parsed = parse_session_key(session_key)
    if parsed is not None:
        agent_name, session_id = parsed
        fallback = False
    else:
        agent_name = _js_slice(_UNSAFE_CHARS.sub("_", session_key), _FALLBACK_NAME_UTF16_UNITS)
        agent_name = agent_name or "unknown"
        session_id = f"fallback-{_short_hash(session_key)}"
        fallback = True
    if real_session_id:
        session_id = sanitize_name(real_session_id)
    return SessionIdentity(
        session_key=session_key,
        agent_name=_safe_component(agent_name, session_key, "agent name"),
        session_id=_safe_component(session_id, session_key, "session id"),
        fallback=fallback,
    )


def _short_hash(text: str) -> str:
    """First 16 hex digits of SHA-256 over ``text`` as UTF-8, lone surrogates passed through."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:_HASH_HEX_CHARS]


def _js_slice(text: str, units: int) -> str:
    """``text.slice(0, units)`` as JavaScript counts: in UTF-16 code units.

    Cutting inside a pair leaves a lone high surrogate, as in JavaScript; the safety rules then
    turn it into U+FFFD.
    """
    encoded = text.encode("utf-16-le", "surrogatepass")[: 2 * units]
    return encoded.decode("utf-16-le", "surrogatepass")


def _join_surrogate_pair(match: re.Match[str]) -> str:
    high, low = (ord(c) for c in match.group())
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def _safe_component(name: str, session_key: str, what: str) -> str:
    """Apply the safety rules 2-6 of the module docstring to a sanitized component."""
    name = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogate_pair, name))
    if not name:
        raise InvalidSessionKeyError(session_key, f"the {what} is empty")
    if name.strip(".") == "":
        name = "_" * len(name)
    elif name.startswith("."):
        name = "_" + name[1:]
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_COMPONENT_BYTES or (
        len(encoded) > _PREFIX_BYTES and _HASHED_TAIL.search(name) is not None
    ):
        digest = hashlib.sha256(encoded).hexdigest()[:_HASH_HEX_CHARS]
        # Bytes of a valid encoding cut anywhere: "ignore" drops only the partial last character.
        name = encoded[:_PREFIX_BYTES].decode("utf-8", "ignore") + "-" + digest
    if not is_safe_component(name):  # pragma: no cover - the rules above make this unreachable
        raise InvalidSessionKeyError(session_key, f"the {what} {name!r} is not a safe file name")
    return name
