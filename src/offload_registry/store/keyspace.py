"""Every Redis key name the registry uses, built in one place (pure: no I/O).

Layout
======

All keys of one deployment share one base, ``<prefix>:v<schema>:<deployment>``::

    offload-registry:v1:3f2a9c0d1e4b:marker                    string: the epoch (see below)
    offload-registry:v1:3f2a9c0d1e4b:deployment                string: which data root this is
    offload-registry:v1:3f2a9c0d1e4b:invalidate                pub/sub channel (not a key)
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:invalidate  Redis Cluster only: the
                                                                session's shard channel
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:state   hash: the session's anchor
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:claims  hash: claim filter (id -> state)
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:deltas  list: packed changes since the
                                                                snapshot in ``state``
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:lock    string: single-flight rebuild
                                                                lock (token, with an expiry)
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:lease   string: lease token and holder
    offload-registry:v1:3f2a9c0d1e4b:{9b1c...32 hex...}:fence   string: highest lease token

``prefix``
    ``--key-prefix``, default ``offload-registry``. It must be non-empty and free of ``{``,
    ``}`` (they would move the Cluster hash tag), whitespace, control characters and the glob
    metacharacters ``* ? [ ] \\`` (so :meth:`Keyspace.pattern` matches exactly our keys, in
    ``SCAN MATCH`` and in ACL ``~pattern`` rules alike); :class:`ConfigurationError` otherwise.
``v<schema>``
    The *key layout* version. Bump it when the layout changes: old keys are then ignored and
    expire by their idle TTL. (Values carry their own schema version, see ``codec``.)
``deployment``
    Twelve hex digits of the SHA-256 of the data root's own id (the random id in its
    ``.offload-registry-id`` file, :meth:`Keyspace.for_data_root`), so two deployments with
    different data roots on one Redis never share a key, and one data root mounted at two
    paths (two hosts, two containers) is one deployment. A data root without an id file yet
    (only a read-only ``inspect`` meets one: any writable registry creates the file first)
    falls back to the hash of its resolved path; nothing was written to Redis for it.
``{<tag>}``
    The Cluster hash tag of one session: 32 hex digits (128 bits) of the SHA-256 of its agent
    name and session id, length-prefixed so the pair is encoded unambiguously. Every key of a
    session carries the same tag, so all of them hash to one slot and one Lua script may touch
    them all. Agent names and session ids never appear raw in a key: any string is allowed in
    them (``{``, ``}``, ``*``, ``:``, newlines, lone surrogates, 10,000 characters) and
    cannot break the tag, a glob pattern or the key length; every key is short, ASCII apart
    from the prefix, and of a fixed shape. The tier stores the agent name and session id as
    fields of the ``state`` hash, for people reading Redis and as a check against a (2^-128)
    tag collision: an anchor whose names differ from the caller's is a miss.

Pass the identity's *on-disk* names (``SessionIdentity.agent_name`` / ``.session_id``): Redis
caches a journal, and the journal is named by them, so two session keys that name one journal
(a real session id, a sanitized name) share one set of Redis keys.

Losing data: the epoch and the anchor
=====================================

Redis may lose everything (restart without persistence, ``FLUSHALL``), lose some keys
(eviction under ``maxmemory``, expiry) or go back in time (failover to a replica that missed
writes, restart from an older RDB/AOF). An empty or missing answer is therefore never taken to
mean "empty session"; the journal is the truth and Redis only saves work. Three layers:

1. **The anchor.** A session's ``state`` hash is its anchor: snapshot, watermarks, version,
   epoch, and the recorded length of the ``deltas`` list. The list is trusted only when its
   ``LLEN`` equals that count (checked by the reader and by ``lua/delta.lua``), so a list
   evicted or expired on its own is a miss and the session is reseeded. Only a full snapshot
   creates an anchor; a delta is refused when the anchor is missing, from another epoch, or
   not at the position the delta starts from, so a delta never lands on an empty or partial
   session. (The ``claims`` hash is the claim filter's, see ``lua/claim.lua``.)
2. **The epoch.** :meth:`Keyspace.marker` holds the deployment's epoch, a random token with
   no TTL (so ``volatile-*`` eviction policies never pick it). Each anchor stores the epoch
   it was seeded in. A script cannot read the marker itself (on Cluster it lives in another
   slot, and a script may only touch the keys of one slot), so the client passes the epoch
   it believes current as an ``ARGV`` and the script treats an anchor of any other epoch as
   absent. The client reads the marker at start, after every outage (a new connection may be
   a restarted server or a promoted replica), and at most every five seconds before a read.
   A missing marker means the server lost our data (or never had it): the client creates one
   with ``SET NX``, adopts whichever value won (``GET``), logs the loss once, and sessions
   are reseeded from their journals as they are resolved. Rotating the marker is also the
   O(1) "forget everything" an operator runs after restoring an old backup. A marker copy
   per session tag was rejected: it would live and die with the session's own keys, so it
   would detect nothing the anchor does not, and it could not be rotated in one step.
3. **The watermark.** A server that went back in time keeps its marker, so the epoch cannot
   see that. The anchor carries the journal watermark its snapshot reflects, and a cold
   resolve compares it with the journal (one ``fstat`` and a 64-byte ``pread``): a journal
   that grew is caught up from its tail, a replaced one is read again. Claims are recorded
   durably in the claims file (or must be acknowledged with ``WAIT``), because a replica that
   missed a won claim would otherwise let it be won twice.

Two deployments, one Redis
==========================

Different data roots get different deployment ids, hence disjoint keys: the id is derived
from the random data-root id kept in a file inside the data root (``.offload-registry-id``,
created once by a writable registry), not from the path, so the same files mounted at
``/srv/a`` on one host and ``/mnt/offload`` on another share one keyspace, and different
disks mounted at the same path do not. :meth:`Keyspace.deployment_key` also holds that
data-root id, written with ``SET NX`` at start-up and compared on every start: a mismatch
(a 48-bit deployment-id collision) is a :class:`ConfigurationError` naming both ids, rather
than mixed data.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from offload_registry.disk.layout import read_data_root_id
from offload_registry.errors import ConfigurationError
from offload_registry.keys import SessionIdentity

__all__ = [
    "CLAIMS_POSITION_FIELD",
    "CLAIMS_WATERMARK_FIELD",
    "DEFAULT_PREFIX",
    "DELTA_COUNT_FIELD",
    "EPOCH_FIELD",
    "JOURNAL_POSITION_FIELD",
    "KEY_SCHEMA",
    "SNAPSHOT_FIELD",
    "STATE_FIELDS",
    "VERSION_FIELD",
    "Keyspace",
    "RedisSessionKeys",
    "deployment_id",
    "session_tag",
    "validate_prefix",
]

DEFAULT_PREFIX: Final = "offload-registry"
"""The key prefix when ``--key-prefix`` is not given."""
KEY_SCHEMA: Final = 1
"""The current key layout version (the ``v1`` in every key)."""
DEPLOYMENT_HEX_CHARS: Final = 12
"""Hex digits of SHA-256 of the data root path used as the deployment id (48 bits)."""
TAG_HEX_CHARS: Final = 32
"""Hex digits of SHA-256 of (agent, session) inside a session's hash tag (128 bits)."""
MAX_PREFIX_CHARS: Final = 128

# The fields of a session's ``state`` hash (its anchor). The scripts that write it
# (``lua/publish.lua``, ``lua/delta.lua``) take these names from here: their
# ``-- #state-fields`` line becomes one Lua local per name (``EPOCH_FIELD`` and so on,
# ``store.startup.script_text``), so Python and Lua cannot name a field differently.
EPOCH_FIELD: Final = "epoch"
"""The epoch the anchor was written in (an anchor of another epoch is absent)."""
SNAPSHOT_FIELD: Final = "snap"
"""The msgpack snapshot (``codec.encode_snapshot``)."""
JOURNAL_POSITION_FIELD: Final = "jwm"
"""``codec.watermark_id`` of the journal position reflected, deltas included (a delta
chains on it; ``publish.lua`` refuses a snapshot behind it, ``lua/_order.lua``)."""
CLAIMS_POSITION_FIELD: Final = "cwm"
"""``codec.watermark_id`` of the claims record's position reflected, deltas included (as
:data:`JOURNAL_POSITION_FIELD`)."""
CLAIMS_WATERMARK_FIELD: Final = "cwmb"
"""The snapshot's claims watermark, packed (``codec.encode_watermark``)."""
DELTA_COUNT_FIELD: Final = "deltas"
"""The recorded length of the ``deltas`` list (a list of another length is not trusted)."""
VERSION_FIELD: Final = "ver"
"""Bumped by every write; a compare-and-set publish names the version it read."""
STATE_FIELDS: Final = {
    "EPOCH_FIELD": EPOCH_FIELD,
    "SNAPSHOT_FIELD": SNAPSHOT_FIELD,
    "JOURNAL_POSITION_FIELD": JOURNAL_POSITION_FIELD,
    "CLAIMS_POSITION_FIELD": CLAIMS_POSITION_FIELD,
    "CLAIMS_WATERMARK_FIELD": CLAIMS_WATERMARK_FIELD,
    "DELTA_COUNT_FIELD": DELTA_COUNT_FIELD,
    "VERSION_FIELD": VERSION_FIELD,
}
"""Each field by its constant's name, as the scripts' Lua locals are named."""

# Whitespace and control characters (C0, DEL, C1, and Unicode separators), braces (they move
# the Cluster hash tag) and the glob metacharacters of SCAN MATCH and ACL key patterns.
_BAD_PREFIX_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f{}*?\[\]\\]")
_DEPLOYMENT = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TAG = re.compile(r"\{[0-9a-f]{32}\}")  # "{" + TAG_HEX_CHARS hex digits + "}"


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start every key name, else raise :class:`ConfigurationError`.

    Refused: empty, longer than :data:`MAX_PREFIX_CHARS`, or containing whitespace, a control
    character, ``{``, ``}``, ``*``, ``?``, ``[``, ``]`` or ``\\``.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError("the Redis key prefix must be a non-empty string")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise ConfigurationError(
            f"the Redis key prefix is {len(prefix)} characters long; at most "
            f"{MAX_PREFIX_CHARS} are allowed"
        )
    bad = _BAD_PREFIX_CHARS.search(prefix)
    if bad is not None:
        raise ConfigurationError(
            f"the Redis key prefix {prefix!r} contains {bad.group()!r}: whitespace, control "
            "characters, braces and the glob characters * ? [ ] \\ are not allowed"
        )
    return prefix


def deployment_id(data_root: str | os.PathLike[str], root_id: str | None = None) -> str:
    """The deployment id of a data root: 12 hex digits of SHA-256 of its id.

    The id is ``root_id`` when given, else the one in the data root's id file
    (:func:`~offload_registry.disk.layout.read_data_root_id`), so every mount of one data
    root, at any path, gives one deployment. Without either (a data root no writable registry
    has opened), the resolved path is hashed instead: made absolute, symbolic links resolved
    (it need not exist), as the file system's bytes, so any spelling of one directory gives
    one id.
    """
    root_id = root_id or read_data_root_id(data_root)
    if root_id is not None:
        material = b"data-root-id:" + root_id.encode("ascii", "backslashreplace")
    else:
        material = os.fsencode(Path(data_root).expanduser().resolve())
    return hashlib.sha256(material).hexdigest()[:DEPLOYMENT_HEX_CHARS]


@functools.lru_cache(maxsize=4096)
def session_tag(agent_name: str, session_id: str) -> str:
    """The hash tag shared by every key of one session: ``{`` + 32 hex digits + ``}``.

    The digest covers ``len(agent) ":" agent session`` as UTF-8 (lone surrogates passed
    through), which encodes the pair unambiguously: distinct pairs get distinct tags up to a
    128-bit hash collision. Memoized (a pure function, asked four times per cold resolve:
    load, watch, hears, unwatch), so a hot session costs no SHA-256.
    """
    agent = agent_name.encode("utf-8", "surrogatepass")
    session = session_id.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(b"%d:%b%b" % (len(agent), agent, session)).hexdigest()
    return "{" + digest[:TAG_HEX_CHARS] + "}"


@dataclass(frozen=True, slots=True)
class RedisSessionKeys:
    """The Redis key names of one session; all carry :attr:`tag`, so they share one Cluster
    slot. (Not :class:`~offload_registry.keys.SessionKey`, which is a parsed session key.)"""

    tag: str
    """The hash tag, braces included: ``{<32 hex digits>}``."""
    state: str
    """Hash, the session's anchor: packed snapshot, watermark, version, epoch, names, and the
    expected sizes of the side keys (see the module docstring)."""
    claims: str
    """Hash of tool call ids (every form) to their claim state, the fast filter in front of
    the on-disk claims record (``lua/claim.lua``)."""
    deltas: str
    """List of packed changes applied after the snapshot in :attr:`state`, folded into it
    from time to time."""
    lock: str
    """String holding the single-flight rebuild lock's token, set with ``NX`` and an expiry."""
    lease: str
    """String ``<token> <holder>`` of the session's lease, with the lease's expiry."""
    fence: str
    """String: the highest lease token granted (raised to the journal's record on every
    grant, since it alone goes backwards when Redis loses data)."""

    @property
    def data(self) -> tuple[str, str, str]:
        """The keys that must live and die together (one TTL, deleted together)."""
        return (self.state, self.claims, self.deltas)

    @property
    def all(self) -> tuple[str, ...]:
        """Every key of the session, the locks and lease included."""
        return (self.state, self.claims, self.deltas, self.lock, self.lease, self.fence)


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The key names of one deployment: ``<prefix>:v<schema>:<deployment>:...``.

    ``deployment`` is normally :func:`deployment_id` of the data root; build it with
    :meth:`for_data_root`. A bad prefix, schema or deployment raises
    :class:`ConfigurationError`.
    """

    prefix: str = DEFAULT_PREFIX
    schema: int = KEY_SCHEMA
    deployment: str = field(kw_only=True)

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        if type(self.schema) is not int or self.schema < 1:
            raise ConfigurationError(f"the key schema must be a positive int, not {self.schema!r}")
        if not isinstance(self.deployment, str) or not _DEPLOYMENT.fullmatch(self.deployment):
            raise ConfigurationError(
                f"the deployment id must be 1 to 64 characters of [0-9A-Za-z_-], "
                f"not {self.deployment!r}"
            )

    @classmethod
    def for_data_root(
        cls,
        prefix: str,
        data_root: str | os.PathLike[str],
        *,
        schema: int = KEY_SCHEMA,
        root_id: str | None = None,
    ) -> Keyspace:
        """The keyspace of the deployment whose journals live under ``data_root`` (its
        deployment id is :func:`deployment_id`: of ``root_id`` or the data root's id file)."""
        return cls(prefix, schema, deployment=deployment_id(data_root, root_id))

    @property
    def base(self) -> str:
        """``<prefix>:v<schema>:<deployment>``: the start of every key of this deployment."""
        return f"{self.prefix}:v{self.schema}:{self.deployment}"

    def session(self, identity_agent: str, session_id: str) -> RedisSessionKeys:
        """The keys of one session, named by its journal's on-disk names: the journal is
        ``<data root>/<identity_agent>/offload-<session_id>.jsonl``."""
        return self.session_by_tag(session_tag(identity_agent, session_id))

    def session_by_tag(self, tag: str) -> RedisSessionKeys:
        """The keys of the session whose hash tag (braces included) is ``tag``, as
        :meth:`tag_of` finds it in a key name (operator tools scanning Redis)."""
        if not _TAG.fullmatch(tag):
            raise ConfigurationError(f"not a session hash tag: {tag!r}")
        stem = f"{self.base}:{tag}:"
        return RedisSessionKeys(
            tag=tag,
            state=stem + "state",
            claims=stem + "claims",
            deltas=stem + "deltas",
            lock=stem + "lock",
            lease=stem + "lease",
            fence=stem + "fence",
        )

    def tag_of(self, key: str) -> str | None:
        """The session hash tag in one of this deployment's key names, or ``None``."""
        prefix = self.base + ":"
        if not key.startswith(prefix):
            return None
        tag = key[len(prefix) :].split(":", 1)[0]
        return tag if _TAG.fullmatch(tag) else None

    def session_for(self, identity: SessionIdentity) -> RedisSessionKeys:
        """:meth:`session` of a resolved identity's on-disk names."""
        return self.session(identity.agent_name, identity.session_id)

    def marker(self) -> str:
        """The string key holding this deployment's epoch token (no TTL, never per session)."""
        return f"{self.base}:marker"

    def deployment_key(self) -> str:
        """The string key identifying the data root this deployment's keys belong to."""
        return f"{self.base}:deployment"

    def pattern(self) -> str:
        """The glob covering every key of this deployment (``SCAN MATCH``, ACL ``~pattern``)."""
        return f"{self.base}:*"

    def state_pattern(self) -> str:
        """The glob covering the ``state`` (anchor) key of every session of this deployment."""
        return f"{self.base}:{{*}}:state"

    def channel(self) -> str:
        """The pub/sub channel for invalidation messages (ACL ``&<channel>``)."""
        return f"{self.base}:invalidate"

    def session_channel(self, tag: str) -> str:
        """The shard channel (``SPUBLISH``/``SSUBSCRIBE``) of the session whose hash tag is
        ``tag``, used on Redis Cluster. It carries the tag, so it lives in the session's slot:
        the only slot a script that touches the session's keys may ``SPUBLISH`` to."""
        return f"{self.base}:{tag}:invalidate"
