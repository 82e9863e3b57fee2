"""Session keys: parsing, sanitizing, and the safe names the registry writes under.

Pure functions only: no I/O, no clock, no randomness.

Two layers:

``parse_session_key`` / ``sanitize_name`` / ``is_internal_memory_session``
    Exactly the seed's behaviour (``SEED-SPEC.md``, "Session keys"), so a data root the seed
    wrote is found again. Their results are *not* guaranteed to be usable path components
    (``agent:.:x`` parses to agent ``"."``, a 10,000-character key to a 10,000-character id).

``resolve_identity``
    What the registry uses to pick ``<root>/<agent>/offload-<session_id>.jsonl``. It starts from
    the very names the seed uses and changes a name **only where the seed's own path would leave
    the data root or fail**; every other key reaches the very file the seed reads and writes
    (leading dots, names up to the file system's 255-byte limit, real session ids holding
    ``:``). The seed's other naming defect is fixed too: a key that does not parse gets a
    deterministic session id (never the wall clock).

The rules, applied to every identity (each case is **mapped** to a deterministic name; the only
**refused** case, ``InvalidSessionKeyError``, is an empty component, which no ``str`` input can
produce, so it is a guard rather than a reachable outcome):

1. Surrogates: a high/low surrogate pair held as two code points is joined into the character
   it encodes (as JavaScript sees the key); each remaining lone surrogate becomes U+FFFD, which
   is what Node writes on disk for a lone surrogate in a path, so the seed's files are found.
2. A real session id is used as given, as the seed does (``r:1`` stays ``r:1``), except that
   ``/`` and NUL become ``_``: with them the seed's path would leave the agent directory (and
   with enough ``../`` the data root) or fail. Parsed names and the fallback agent name already went
   through the seed's sanitizing, which removes both.
3. An agent name of exactly ``.`` or ``..`` (the data root itself, or its parent) becomes ``_``
   or ``__``. Any other name is a directory inside the data root, hidden ones included
   (``agent:.hidden:s`` lives in ``<root>/.hidden``, as in the seed). A session id is only
   ever part of ``offload-<id>.jsonl``, so ``.`` and a leading dot are harmless there and kept.
4. Length: the file system refuses a name over ``MAX_NAME_BYTES`` (255) bytes, so an agent name
   may take ``MAX_AGENT_NAME_BYTES`` (255) UTF-8 bytes and a session id
   ``MAX_SESSION_ID_BYTES`` (241: ``offload-`` + id + ``.jsonl`` <= 255). A longer component
   (on which the seed itself fails) is cut at a character boundary and ``-`` plus the first 16
   hex digits of the SHA-256 of the whole component is appended, so the result fits. A
   component within 17 bytes of its limit that already ends in ``-`` plus 16 lowercase hex
   digits is hashed the same way, so a name can never equal the shortened form of another:
   distinct components stay distinct (up to a 64-bit hash collision).

Our own files beside a journal (``offload-<id>.claims``, ``offload-<id>.lease``, the hidden
``.<name>.lock`` and ``.<name>.tmp-<pid>``) can be longer than the journal's name; when one
would not fit, ``fsutil.fit_name`` gives it a hidden hashed name instead, so a session whose
journal name fits is always fully usable (see that function). Every name of ours either starts
with ``.`` or ends in ``.claims`` / ``.lease``, so none can equal a journal ``offload-*.jsonl``.

Hostile inputs and where they end up (agent, session id):

==========================  ======================================================  =======
key                         identity                                                outcome
==========================  ======================================================  =======
``..``                      (``__``, ``fallback-<hash>``); the seed used ``..``     mapped
``.``                       (``_``, ``fallback-<hash>``)                            mapped
empty key                   (``unknown``, ``fallback-<hash>``)                      mapped
``/etc/passwd``             (``_etc_passwd``, ``fallback-<hash>``)                  mapped
``agent:..:x``              (``_``, ``x``): the seed's dot rule                     mapped
``agent:.:x``               (``_``, ``x``): the data root itself                    mapped
``agent:.hidden:x``         (``.hidden``, ``x``): as the seed                       kept
``agent:main:.``            (``main``, ``.``): ``offload-..jsonl``, as the seed     kept
``agent:main:..``           (``main``, ``_``): the seed's dot rule                  mapped
``agent:x:\\0``             (``x``, ``_``): the seed's control-character rule       mapped
real id ``../x`` / ``r:1``  (agent, ``.._x``) / (agent, ``r:1``): rule 2            mapped
10,000-character key        cut to the limit plus a hash suffix                     mapped
multi-byte characters       cut at a character boundary                             mapped
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

from offload_registry.disk.fsutil import MAX_NAME_BYTES
from offload_registry.disk.layout import JOURNAL_PREFIX, JOURNAL_SUFFIX
from offload_registry.errors import InvalidSessionKeyError

__all__ = [
    "MAX_AGENT_NAME_BYTES",
    "MAX_SESSION_ID_BYTES",
    "SessionIdentity",
    "SessionKey",
    "is_internal_memory_session",
    "is_safe_agent_name",
    "is_safe_component",
    "is_safe_session_id",
    "parse_session_key",
    "resolve_identity",
    "sanitize_name",
]

MAX_AGENT_NAME_BYTES = MAX_NAME_BYTES
"""Largest agent name, in UTF-8 bytes: the agent's directory name."""
MAX_SESSION_ID_BYTES = MAX_NAME_BYTES - len(JOURNAL_PREFIX) - len(JOURNAL_SUFFIX)
"""Largest session id, in UTF-8 bytes: ``offload-<id>.jsonl`` fits ``MAX_NAME_BYTES``."""

_HASH_HEX_CHARS = 16
_HASH_SUFFIX_BYTES = 1 + _HASH_HEX_CHARS  # "-" + hex digits

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

# What no POSIX file name component may hold: a real session id holding one is changed.
_PATH_BREAKERS = re.compile("[/\x00]")
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

    ``agent_name`` satisfies ``is_safe_agent_name`` and ``session_id`` ``is_safe_session_id``.
    """

    session_key: str
    """The key exactly as given."""
    agent_name: str
    """One path component inside the data root: the agent's directory (the seed's name)."""
    session_id: str
    """The journal is ``offload-<session_id>.jsonl`` (the seed's name where it fits)."""
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


def _fits(name: str, max_bytes: int) -> bool:
    if not name or "/" in name or "\x00" in name:
        return False
    try:
        return len(name.encode("utf-8")) <= max_bytes
    except UnicodeEncodeError:  # a lone surrogate: no key resolves to it
        return False


def is_safe_agent_name(name: str) -> bool:
    """True when ``name`` is one directory inside the data root that a key can resolve to:
    non-empty, not ``.`` or ``..``, no ``/`` or NUL, valid UTF-8 of at most
    ``MAX_AGENT_NAME_BYTES`` bytes. A leading dot is allowed (the seed's ``.hidden`` agent)."""
    return name not in (".", "..") and _fits(name, MAX_AGENT_NAME_BYTES)


def is_safe_session_id(name: str) -> bool:
    """True when ``offload-<name>.jsonl`` is one file name a key can resolve to: non-empty, no
    ``/`` or NUL, valid UTF-8 of at most ``MAX_SESSION_ID_BYTES`` bytes."""
    return _fits(name, MAX_SESSION_ID_BYTES)


def is_safe_component(name: str) -> bool:
    """True when ``name`` is safe both as an agent name and as a session id."""
    return is_safe_agent_name(name) and is_safe_session_id(name)


def resolve_identity(session_key: str, real_session_id: str | None = None) -> SessionIdentity:
    """The agent directory and journal name for ``session_key``; deterministic and pure.

    A key that parses keeps the seed's names; ``real_session_id``, when given and non-empty,
    replaces the parsed session id as given (the seed does not sanitize it; rule 2 of the
    module docstring changes only ``/`` and NUL).

    A key that does not parse gets the seed's fallback name with its defects fixed: the agent is
    the key with the seed's first sanitizing rule only, cut to 64 UTF-16 code units as
    JavaScript does, or ``unknown`` when empty; the session id is ``real_session_id`` (as
    above) or ``fallback-<16 hex digits of SHA-256 of the key>``, the same in every process and
    on every run.

    Both components then pass the rules of this module's docstring. Raises
    ``InvalidSessionKeyError`` only if a component would be empty, which no ``str`` input
    produces.
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
        session_id = _PATH_BREAKERS.sub("_", real_session_id)
    agent_name = _safe_component(agent_name, session_key, "agent name", MAX_AGENT_NAME_BYTES)
    if agent_name in (".", ".."):
        agent_name = "_" * len(agent_name)
    return SessionIdentity(
        session_key=session_key,
        agent_name=agent_name,
        session_id=_safe_component(session_id, session_key, "session id", MAX_SESSION_ID_BYTES),
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


def _safe_component(name: str, session_key: str, what: str, max_bytes: int) -> str:
    """Apply rules 1 and 4 of the module docstring to a component (``/`` and NUL are gone)."""
    name = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogate_pair, name))
    if not name:
        raise InvalidSessionKeyError(session_key, f"the {what} is empty")
    encoded = name.encode("utf-8")
    prefix_bytes = max_bytes - _HASH_SUFFIX_BYTES
    if len(encoded) > max_bytes or (
        len(encoded) > prefix_bytes and _HASHED_TAIL.search(name) is not None
    ):
        digest = hashlib.sha256(encoded).hexdigest()[:_HASH_HEX_CHARS]
        # Bytes of a valid encoding cut anywhere: "ignore" drops only the partial last character.
        name = encoded[:prefix_bytes].decode("utf-8", "ignore") + "-" + digest
    if not _fits(name, max_bytes):  # pragma: no cover - the rules above make this unreachable
        raise InvalidSessionKeyError(session_key, f"the {what} {name!r} is not a safe file name")
    return name
