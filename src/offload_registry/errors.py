"""Every exception the library raises, in one tree.

::

    OffloadRegistryError (Exception)      base of everything raised on purpose
    ├── InvalidSessionKeyError (ValueError)   a key or session id that cannot name a safe path
    ├── InvalidToolCallIdError (ValueError)   a tool call id with no canonical form (not a
    │                                         string, or empty once unsafe characters go)
    ├── JournalError (OSError)                a journal or agent file could not be read or written
    │   └── UnsafePathError                       a path below the data root is a link, or names
    │                                             something other than a regular file/directory
    ├── CodecError (ValueError)               a value Redis cannot hold, or bytes that are not a
    │                                         snapshot this build reads
    ├── ConfigurationError (ValueError)       bad options: unknown URL scheme, bad fsync policy, ...
    │   └── RedisPermissionError                  the Redis user lacks a command or key the
    │                                             registry needs (the message names it)
    ├── RedisUnavailableError                 Redis did not answer where it is required
    ├── RegistryClosedError (RuntimeError)    the registry was used after ``close()``
    ├── LeaseError                            a session lease could not be used
    │   ├── LeaseUnavailableError                 another holder has the lease
    │   └── LeaseLostError                        the lease expired or was superseded: a
    │                                             write under it is refused (stale token)
    ├── UsageError                            ``cli``: bad usage or input (one line, exit 2)
    ├── ServerBinaryNotFound                  ``testing``: no Redis-compatible server binary
    ├── ServerStartError (RuntimeError)       ``testing``: a server process did not come up
    └── ServerNotRunningError (RuntimeError)  ``testing``: pause/resume/... without a live server

Every class is importable from ``offload_registry`` itself.
Wrapped errors are always raised ``from`` their cause, so the original traceback survives.
"""

from __future__ import annotations


class OffloadRegistryError(Exception):
    """Base class of every error this library raises deliberately."""


class InvalidSessionKeyError(OffloadRegistryError, ValueError):
    """A session key or session id that cannot be mapped to a safe name inside the data root."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid session key {key!r}: {reason}")


class InvalidToolCallIdError(OffloadRegistryError, ValueError):
    """A tool call id that has no canonical form: not a string, or nothing left once the
    unsafe characters the journal writer strips are gone (a reader would drop its entry).

    A ``ValueError``, so callers that caught the old ``ValueError`` for a missing id still do.
    Raised before anything is written: the whole call is refused.
    """

    def __init__(self, tool_call_id: object, reason: str) -> None:
        self.tool_call_id = tool_call_id
        self.reason = reason
        super().__init__(f"invalid tool_call_id {tool_call_id!r}: {reason}")


class JournalError(OffloadRegistryError, OSError):
    """A journal, ``state.json`` or ``sessions-registry.json`` could not be read or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UnsafePathError(JournalError):
    """A path below the data root was refused: one of its components is a symbolic link, or
    it names something other than a regular file (a directory where a directory is expected):
    a FIFO, a socket, a device. Raised instead of following the link out of the data root or
    blocking on the FIFO; nothing was read or written through it. ``kind`` says what was
    found there (``"a symbolic link"``, ``"a FIFO"``, ``"a directory"``, ...)."""

    def __init__(self, path: str, reason: str, kind: str = "") -> None:
        super().__init__(path, reason)
        self.kind = kind


class CodecError(OffloadRegistryError, ValueError):
    """A value that cannot be encoded, or bytes that are not a snapshot this build can read."""


class ConfigurationError(OffloadRegistryError, ValueError):
    """An option the caller passed cannot be used (bad URL scheme, bad policy name, ...)."""


class RedisPermissionError(ConfigurationError):
    """The Redis user lacks a permission the registry needs (the message names it)."""


class RedisUnavailableError(OffloadRegistryError):
    """Redis did not answer where it is required (an operator tool, or a cluster client that
    must reach a node to learn the slot map): an outage, not a configuration error."""


class RegistryClosedError(OffloadRegistryError, RuntimeError):
    """The registry was used after it was closed."""


class LeaseError(OffloadRegistryError):
    """A session lease could not be taken or used."""


class LeaseUnavailableError(LeaseError):
    """Another holder has the session's lease (``retry_after``: seconds it may still hold it)."""

    def __init__(self, session_key: str, retry_after: float) -> None:
        self.session_key = session_key
        self.retry_after = retry_after
        super().__init__(
            f"the lease of {session_key!r} is held by another worker"
            f" (for up to {retry_after:.3f} s more)"
        )


class LeaseLostError(LeaseError):
    """The lease expired, was released or was superseded by a newer holder: writes carrying
    its fencing token are refused, so a worker that paused past its lease cannot overwrite the
    new holder's work. ``current`` is the newest token known, when one is."""

    def __init__(self, session_key: str, token: int, reason: str, current: int | None = None):
        self.session_key = session_key
        self.token = token
        self.current = current
        self.reason = reason
        newer = f"; the current token is {current}" if current is not None else ""
        super().__init__(f"lease {token} of {session_key!r} is lost: {reason}{newer}")


class UsageError(OffloadRegistryError):
    """Bad usage or bad input on the command line: reported as one line on stderr, exit status 2.

    Raised by the ``offload-registry`` command's argument parser, never by the library API.
    """


class ServerBinaryNotFound(OffloadRegistryError):  # noqa: N818 - public name fixed by the API
    """No Redis-compatible server binary could be found (or the configured one is unusable)."""


class ServerStartError(OffloadRegistryError, RuntimeError):
    """A server process did not come up; the message ends with the tail of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        text = message if not log_tail else f"{message}\n--- server log (tail) ---\n{log_tail}"
        super().__init__(text)


class ServerNotRunningError(OffloadRegistryError, RuntimeError):
    """An operation that needs a live server process (pause, resume, ...) was called without one."""
